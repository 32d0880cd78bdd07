// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <stdexcept>
#include <string>

namespace warmpool {

/// Base of every error the pool throws (std::invalid_argument from options aside).
class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// acquire() found no connection within its deadline. The message says how long it waited, the
/// pool's counts and the last connect error, if any.
class acquire_timeout : public error {
public:
    using error::error;
};

/// The pool was closed before or while the caller waited.
class pool_closed : public error {
public:
    using error::error;
};

/// A connection could not be opened. transient() tells whether the failure was of the kind that
/// goes away by itself (too many connections, a server restarting); permanent ones (bad
/// credentials, unknown database, malformed connect string) are never retried.
///
/// Traits::connect throws it to classify a failure; the pool throws it to its caller with the
/// attempts and time spent added to the message.
class connect_error : public error {
public:
    explicit connect_error(const std::string& what, bool transient = false)
        : error(what), transient_(transient) {}

    bool transient() const noexcept { return transient_; }

private:
    bool transient_;
};

} // namespace warmpool
