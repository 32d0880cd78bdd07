// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Noticing fork(). A child process must neither use nor close its parent's connections: both
// processes would talk over the same socket. Asking getpid() on every acquire costs a system call
// (~1 µs on virtual machines); instead a pthread_atfork handler bumps a counter in the child, and
// the pool compares one relaxed atomic load against the value it last saw.
//
// fork() copies a mutex in whatever state it is in, and only the forking thread survives: a pool
// whose lock another thread held at that instant would stay locked forever in the child. So the
// atfork handlers take every live pool's lock before the fork and release them on both sides
// after it. A pool holds its lock only for bookkeeping (never across a connect, a ping or a
// callback), so fork() waits microseconds at most.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace warmpool {
namespace detail {

/// Incremented in every child process right after fork().
inline std::atomic<std::uint64_t> fork_epoch{0};

/// What the child handler does for the pools; tests call it to simulate a fork.
inline void mark_forked() noexcept {
    fork_epoch.fetch_add(1, std::memory_order_relaxed);
}

/// The locks of every live pool, taken around fork().
struct fork_locks {
    std::mutex guard; // held from the prepare handler until after the fork
    std::vector<std::mutex*> pools;

    static fork_locks& get() noexcept {
        // Never destroyed: a fork (or a pool destructor) during static destruction still finds it.
        static fork_locks* const instance = new fork_locks;
        return *instance;
    }
};

inline void on_fork_prepare() noexcept {
    fork_locks& locks = fork_locks::get();
    locks.guard.lock();
    for (std::mutex* m : locks.pools) {
        m->lock();
    }
}

inline void on_fork_parent() noexcept {
    fork_locks& locks = fork_locks::get();
    for (auto it = locks.pools.rbegin(); it != locks.pools.rend(); ++it) {
        (*it)->unlock();
    }
    locks.guard.unlock();
}

inline void on_fork_child() noexcept {
    mark_forked();
    on_fork_parent(); // the same unlocks: this thread took every lock before the fork
}

/// Installs the atfork handlers once per process; cheap after the first call.
inline void watch_forks() noexcept {
#if defined(__unix__) || defined(__APPLE__)
    static const bool installed =
        (::pthread_atfork(&on_fork_prepare, &on_fork_parent, &on_fork_child) == 0);
    (void)installed;
#endif
}

/// Registers a pool's lock to be taken around fork(); from the pool's constructor.
inline void lock_around_forks(std::mutex* m) {
    watch_forks();
    fork_locks& locks = fork_locks::get();
    std::lock_guard<std::mutex> guard(locks.guard);
    locks.pools.push_back(m);
}

/// Undoes lock_around_forks; from the pool's destructor.
inline void stop_locking_around_forks(std::mutex* m) noexcept {
    fork_locks& locks = fork_locks::get();
    std::lock_guard<std::mutex> guard(locks.guard);
    locks.pools.erase(std::remove(locks.pools.begin(), locks.pools.end(), m), locks.pools.end());
}

} // namespace detail
} // namespace warmpool
