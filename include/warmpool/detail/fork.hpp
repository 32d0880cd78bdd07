// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Noticing fork(). A child process must neither use nor close its parent's connections: both
// processes would talk over the same socket. Asking getpid() on every acquire costs a system call
// (~1 µs on virtual machines); instead a pthread_atfork handler bumps a counter in the child, and
// the pool compares one relaxed atomic load against the value it last saw.

#include <atomic>
#include <cstdint>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace warmpool {
namespace detail {

/// Incremented in every child process right after fork(). Tests bump it to simulate a fork.
inline std::atomic<std::uint64_t> fork_epoch{0};

inline void on_fork_child() noexcept {
    fork_epoch.fetch_add(1, std::memory_order_relaxed);
}

/// Installs the atfork handler once per process; cheap after the first call.
inline void watch_forks() noexcept {
#if defined(__unix__) || defined(__APPLE__)
    static const bool installed = (::pthread_atfork(nullptr, nullptr, &on_fork_child) == 0);
    (void)installed;
#endif
}

} // namespace detail
} // namespace warmpool
