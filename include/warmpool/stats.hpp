// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace warmpool {

/// A latency distribution in fixed log-scale buckets (1, 2.5, 5 per decade, 10 µs to 10 s),
/// the same for every pool so that pools and processes can be summed. Recording is a short
/// scan of 19 bounds under the pool's lock, which the pool holds at that moment anyway.
struct latency_histogram {
    static constexpr std::size_t bucket_count = 19; ///< finite upper bounds
    static constexpr std::array<std::chrono::microseconds, bucket_count> upper_bounds{
        std::chrono::microseconds{10},      std::chrono::microseconds{25},
        std::chrono::microseconds{50},      std::chrono::microseconds{100},
        std::chrono::microseconds{250},     std::chrono::microseconds{500},
        std::chrono::microseconds{1000},    std::chrono::microseconds{2500},
        std::chrono::microseconds{5000},    std::chrono::microseconds{10000},
        std::chrono::microseconds{25000},   std::chrono::microseconds{50000},
        std::chrono::microseconds{100000},  std::chrono::microseconds{250000},
        std::chrono::microseconds{500000},  std::chrono::microseconds{1000000},
        std::chrono::microseconds{2500000}, std::chrono::microseconds{5000000},
        std::chrono::microseconds{10000000}};

    /// counts[i]: observations in (upper_bounds[i-1], upper_bounds[i]]; counts[bucket_count]:
    /// those above the last bound. Not cumulative (an exposition format makes them so).
    std::array<std::uint64_t, bucket_count + 1> counts{};
    std::uint64_t count = 0;          ///< observations
    std::chrono::microseconds sum{0}; ///< their total

    void record(std::chrono::microseconds d) noexcept {
        if (d.count() < 0) {
            d = std::chrono::microseconds{0}; // a clock read out of order: no negative latency
        }
        std::size_t i = 0; // the warm checkout records 0: found at once
        while (i < bucket_count && d > upper_bounds[i]) {
            ++i;
        }
        ++counts[i];
        ++count;
        sum += d;
    }
};

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
    std::uint64_t created = 0;               ///< connections opened
    std::uint64_t closed = 0;                ///< connections closed, all reasons (sum of closed_*)
    std::uint64_t acquired = 0;              ///< leases handed out
    std::uint64_t timeouts = 0;              ///< acquire() calls that threw acquire_timeout
    std::uint64_t validation_failures = 0;   ///< idle connections found dead at checkout
    std::uint64_t connect_failures = 0;      ///< failed connect attempts (each retry counts)
    std::uint64_t pings = 0;                 ///< validation round trips
    std::uint64_t rollbacks = 0;             ///< open transactions rolled back on give-back
    std::uint64_t resets = 0;                ///< sessions reset on give-back (reset_on_release)
    std::uint64_t leaks_suspected = 0;       ///< leases held past options::leak_threshold
    std::uint64_t forks = 0;                 ///< fork()s noticed (in the child)
    std::uint64_t fleet_samples = 0;         ///< give-backs that asked the server (options::fleet)
    std::uint64_t fleet_sample_failures = 0; ///< of those, queries that failed or timed out
    std::uint64_t fleet_reaped = 0;          ///< zombie connections those samples ended

    // Closes by reason (see close_reason).
    std::uint64_t closed_idle_timeout = 0;
    std::uint64_t closed_max_lifetime = 0;
    std::uint64_t closed_validation_failed = 0;
    std::uint64_t closed_broken = 0;
    std::uint64_t closed_invalidated = 0;
    std::uint64_t closed_pool_closed = 0;
    std::uint64_t closed_rejected_on_release = 0;
    std::uint64_t closed_abandoned = 0;
    std::uint64_t closed_drained = 0;
    std::uint64_t closed_fleet_pressure = 0;

    // The last successful fleet sample (options::fleet): 0 until one ran. Utilization is the
    // higher of in use / capacity for the server and for the user, before this pool's decision.
    std::size_t fleet_capacity = 0; ///< the binding limit: the server's or the user's
    std::size_t fleet_in_use = 0;   ///< connections counted against it, zombies ended excluded

    // Waiting: only acquire() calls that had to queue for another user count here.
    std::uint64_t waits = 0;                      ///< acquires that queued
    std::chrono::microseconds wait_time_total{0}; ///< summed over those
    std::chrono::microseconds wait_time_max{0};   ///< the longest one

    // Distributions.
    /// acquire() to lease, for every lease handed out: waiting, validation and connecting
    /// included. Recorded when the lease is given back, under the lock give-back takes anyway.
    /// A checkout that took an idle connection without waiting, pinging or connecting reads no
    /// clock (that is what keeps the warm path cheap) and is recorded as 0 s, in the first
    /// bucket: its cost is well under 10 µs (docs/benchmarks.md).
    latency_histogram acquire_time;
    /// Checkout to give-back, per lease. Read from the coarse clock the pool reads anyway, so
    /// its resolution is the kernel tick (1 to 4 ms on Linux): shorter leases count as 0 s.
    latency_histogram use_time;
    /// One successful connect, on_connect-style setup in the traits included; retries and
    /// backoff are not (acquire_time has them).
    latency_histogram create_time;
};

} // namespace warmpool
