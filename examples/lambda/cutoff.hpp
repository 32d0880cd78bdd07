// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Ends a wait on a server that does not answer, at the invocation's deadline.
//
// The server bounds the handler's statements itself (statement timeouts), and the pool bounds
// its own waits, pings and connects. What neither bounds is a server that does not run at all
// (hung, stopped, cut off by the network): it answers nothing, not even a timeout, and the
// client library waits on its socket without end, until Lambda kills the invocation silently.
//
// So while the handler works on a connection, a cutoff holds its socket and the deadline. If
// the deadline passes first, one watchdog thread shuts the socket down (shutdown(2), not close:
// the descriptor stays the session's), and the blocked call returns at once with a connection
// error. Nothing more can reach the server on it: a server that resumes later finds the
// connection closed and rolls back what it had not committed.

#include <warmpool/soci.hpp>

#include <chrono>

namespace ledger_example {

class cutoff {
public:
    /// Arms: at `deadline`, the socket of `s` is shut down unless disarmed by then. Does
    /// nothing for a session without a socket of its own (SQLite).
    cutoff(soci::session& s, std::chrono::system_clock::time_point deadline);

    /// Disarms (see disarm()).
    ~cutoff();

    cutoff(const cutoff&) = delete;
    cutoff& operator=(const cutoff&) = delete;

    /// After it returns the watchdog no longer touches the socket. Call it before the
    /// connection may close (lease::invalidate(), give-back): a closed descriptor's number is
    /// soon reused by another socket.
    void disarm() noexcept;

    /// The deadline passed and the socket was shut down.
    bool fired() const noexcept;

    /// The session's socket, or -1 when it has none this program can reach.
    static int socket_of(soci::session& s) noexcept;

private:
    friend class watchdog;

    int fd_;
    std::chrono::steady_clock::time_point deadline_;
    bool fired_ = false; // written by the watchdog under its lock
};

} // namespace ledger_example
