// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// poll() helpers for the SOCI adapter's PostgreSQL and MySQL checks (warmpool/soci/*.hpp): wait
// for a socket until a deadline, or look at it once without waiting. Every round trip the
// adapter makes is awaited here, which is what keeps it bounded when a server hangs. POSIX:
// without <poll.h> this header is empty.

#if __has_include(<poll.h>)

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

namespace warmpool {
namespace detail {
namespace socket_wait {

using steady = std::chrono::steady_clock;

/// Waits until `fd` shows one of `events` (or an error) or `deadline` passes. Returns the
/// revents seen; 0 on timeout or failure.
inline short until(int fd, short events, steady::time_point deadline) noexcept {
    if (fd < 0) {
        return 0;
    }
    for (;;) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - steady::now());
        if (left.count() <= 0) {
            return 0;
        }
        pollfd p{fd, events, 0};
        const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), INT_MAX)));
        if (r > 0) {
            return p.revents;
        }
        if (r == 0 || errno != EINTR) {
            return 0;
        }
    }
}

/// One zero-timeout poll for readability; the revents (0 when nothing is pending).
inline short now(int fd) noexcept {
    short events = POLLIN;
#if defined(POLLRDHUP)
    events |= POLLRDHUP; // the peer shut its side: a server never does that to a live session
#endif
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, 0) > 0 ? p.revents : 0;
}

/// The revents that mean the connection is over.
inline constexpr short hangup_events = POLLHUP | POLLERR | POLLNVAL
#if defined(POLLRDHUP)
                                       | POLLRDHUP
#endif
    ;

/// Points `fd` at /dev/null, so that whatever a client library later sends on it (a goodbye
/// message, a TLS close_notify) goes nowhere and cannot block, and whatever it reads is the end
/// of the stream. The socket itself is closed by this (the kernel may still tell the peer with a
/// FIN); the descriptor number stays valid for the library to close as usual. Used when a
/// connection is abandoned after a snapshot restore: its peer is gone, or is being talked to
/// by every other copy restored from the same snapshot.
inline void silence(int fd) noexcept {
    if (fd < 0) {
        return;
    }
    const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) {
        return; // no /dev/null: the library's goodbye goes out as it would anyway
    }
    while (::dup2(null, fd) < 0 && errno == EINTR) {
    }
    ::close(null);
}

} // namespace socket_wait
} // namespace detail
} // namespace warmpool

#endif // __has_include(<poll.h>)
