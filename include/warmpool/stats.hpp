// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace warmpool {

/// A consistent snapshot of a pool, taken under its lock by basic_pool::stats().
/// Gauges describe the moment; counters only grow over the pool's life.
struct pool_stats {
    // Gauges.
    std::size_t open = 0;       ///< connections open: idle + in_use
    std::size_t idle = 0;       ///< open and waiting in the pool
    std::size_t in_use = 0;     ///< held by leases
    std::size_t waiting = 0;    ///< callers queued in acquire()
    std::size_t connecting = 0; ///< connects in progress
    std::size_t max_size = 0;   ///< options::max_size, for ratios

    // Counters.
    std::uint64_t created = 0;             ///< connections opened
    std::uint64_t closed = 0;              ///< connections closed, all reasons (sum of closed_*)
    std::uint64_t acquired = 0;            ///< leases handed out
    std::uint64_t timeouts = 0;            ///< acquire() calls that threw acquire_timeout
    std::uint64_t validation_failures = 0; ///< idle connections found dead at checkout
    std::uint64_t connect_failures = 0;    ///< failed connect attempts (each retry counts)
    std::uint64_t pings = 0;               ///< validation round trips
    std::uint64_t rollbacks = 0;           ///< open transactions rolled back on give-back
    std::uint64_t resets = 0;              ///< sessions reset on give-back (reset_on_release)
    std::uint64_t leaks_suspected = 0;     ///< leases held past options::leak_threshold
    std::uint64_t forks = 0;               ///< fork()s noticed (in the child)

    // Closes by reason (see close_reason).
    std::uint64_t closed_idle_timeout = 0;
    std::uint64_t closed_max_lifetime = 0;
    std::uint64_t closed_validation_failed = 0;
    std::uint64_t closed_broken = 0;
    std::uint64_t closed_invalidated = 0;
    std::uint64_t closed_pool_closed = 0;
    std::uint64_t closed_rejected_on_release = 0;

    // Waiting: only acquire() calls that had to queue for another user count here.
    std::uint64_t waits = 0;                      ///< acquires that queued
    std::chrono::microseconds wait_time_total{0}; ///< summed over those
    std::chrono::microseconds wait_time_max{0};   ///< the longest one
};

} // namespace warmpool
