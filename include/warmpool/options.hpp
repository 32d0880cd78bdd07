// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <warmpool/events.hpp>
#include <warmpool/fleet.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <stdexcept>
#include <string>

namespace warmpool {

/// How a pool behaves. A plain aggregate: set the fields you care about, leave the rest.
/// Every duration is in milliseconds; the pool's constructor rejects invalid values with
/// std::invalid_argument naming the field (see validate()). A duration longer than
/// options::forever (about 100 years; e.g. milliseconds::max()) means "no limit" and is taken as
/// forever, so no setting can overflow a clock.
struct options {
    using duration = std::chrono::milliseconds;

    /// About 100 years: longer durations are clamped to it. Far from any clock's overflow.
    static constexpr duration forever{3'155'760'000'000};

    /// Upper bound on open connections, in use and idle together. 1 to options::max_max_size.
    std::size_t max_size = 10;

    /// The largest max_size accepted: far above any server's connection limit, so a larger value
    /// is a mistake (an unsigned underflow, a unit mix-up), and the pool reserves its bookkeeping
    /// for max_size connections up front.
    static constexpr std::size_t max_max_size = 100'000;

    /// Connections housekeeping keeps open even when idle; warm_up() opens them at once.
    /// Must be <= max_size.
    std::size_t min_idle = 0;

    /// How long acquire() may take in total: waiting for a free connection, validating it and
    /// connecting (with retries) together. acquire() starts no ping and no connect attempt after
    /// its deadline, so it returns within acquire_timeout plus the one call under way at the
    /// deadline: a ping (at most validation_timeout) or a connect attempt (at most the connect
    /// timeout handed to the backend). 0 = do not wait for another user at all.
    duration acquire_timeout{30'000};

    /// Waiting callers are served first come, first served. A connection given back goes
    /// straight to the longest waiter once that caller has waited this long; before that it goes
    /// back to the pool and the longest waiter is woken to take it, unless a running thread
    /// takes it first. That head start spares a thread wakeup per checkout when callers
    /// outnumber connections, and bounds the longest waiter's extra wait to about this long.
    /// 0 = always hand over directly (strict first come, first served).
    duration handoff_after{1};

    /// A connection given back less than this long ago is handed out without a ping; one idle
    /// longer is pinged first. Idle time is the larger of monotonic and wall-clock time, so a
    /// process or VM frozen while the monotonic clock stood still is still noticed.
    duration validation_window{500};

    /// Upper bound on one ping, and on the rollback (and reset) at give-back. A ping that takes
    /// longer counts as failed: the connection is closed and replaced. A rollback or reset that
    /// takes longer closes the connection, so giving a lease back never blocks for longer.
    /// Must be > 0.
    duration validation_timeout{5'000};

    /// An idle connection is checked for a closed socket (a local poll, no round trip) only
    /// once it has been idle at least this long. 0 = on every checkout of an idle connection.
    duration socket_check_after{0};

    /// An idle connection unused for this long is closed (down to min_idle). 0 = never.
    /// Measured on the monotonic clock only: a wall-clock step (NTP, a thaw) forces a ping
    /// (validation_window), never a mass close and the reconnect storm that would follow.
    duration idle_timeout{600'000};

    /// A connection older than this is closed when next idle. Each connection's limit is
    /// shortened by a random 0–2.5% so a fleet started together does not reconnect together.
    /// 0 = never.
    duration max_lifetime{1'800'000};

    /// Connect retry: full-jitter exponential backoff. Before retry n (n = 1, 2, …) the pool
    /// waits a random time in [0, min(connect_backoff_cap, connect_backoff_base * 2^(n-1))],
    /// never past the acquire deadline. Only transient failures are retried.
    duration connect_backoff_base{10};
    duration connect_backoff_cap{1'000};

    /// Connect attempts per acquire, the first included. 0 = as many as the acquire deadline
    /// allows; 1 = no retry. try_acquire() makes one attempt at most.
    unsigned connect_attempts = 0;

    /// Return every connection given back to the state of a new one before the next user gets
    /// it: PostgreSQL DISCARD ALL, MariaDB/MySQL mysql_reset_connection(), then the config's
    /// per-connection setup again (soci_config::on_connect). Session variables, SET ROLE,
    /// search_path, temporary tables, prepared statements and advisory locks then never reach
    /// the next user. Costs one round trip per give-back (bounded by validation_timeout; a reset
    /// that fails or times out closes the connection). Needs traits with reset(); off by default.
    bool reset_on_release = false;

    /// A lease held longer than this raises one leak_suspected event (and a leak_returned
    /// event when it comes back). 0 = off.
    duration leak_threshold{0};

    /// Run housekeep() on a background thread every housekeeping_interval. Off by default: with
    /// it off the pool starts no thread and does its housekeeping during acquire and release.
    bool background_housekeeping = false;
    duration housekeeping_interval{30'000};

    /// The fleet policy (warmpool/fleet.hpp, docs/fleet.md): at a sampled give-back, ask the
    /// server how full it is, close this connection when it is too full, and optionally end
    /// the zombies of reclaimed instances. Off by default.
    fleet_options fleet;

    /// Called for every pool event (connected, acquired, released, closed, …), outside the pool's
    /// lock, on the thread that caused it. Keep it cheap: acquired/released fire on every
    /// checkout. It must not throw; an exception it throws is swallowed.
    std::function<void(const event&)> on_event;

    /// The serverless preset: one connection, no background thread, a lazy connect, a ping after
    /// every thaw (anything idle past validation_window), transparent replacement of a dead
    /// connection and a jittered connect retry. Meant for a function-local static or a global in
    /// an AWS Lambda (or similar) handler.
    static options single_slot() {
        options o;
        o.max_size = 1;
        o.min_idle = 0;
        o.acquire_timeout = duration{10'000};
        o.validation_window = duration{500};
        o.validation_timeout = duration{2'000};
        o.socket_check_after = duration{0};
        // A frozen function is validated on thaw; closing by idle time would only force a
        // reconnect that the ping shows is not needed.
        o.idle_timeout = duration{0};
        o.connect_backoff_base = duration{5};
        o.connect_backoff_cap = duration{500};
        o.background_housekeeping = false;
        return o;
    }

    /// Throws std::invalid_argument naming the first invalid field. The pool calls it from its
    /// constructor; call it yourself to check configuration early.
    void validate() const {
        const auto fail = [](const char* field, const std::string& why) {
            throw std::invalid_argument("warmpool::options::" + std::string(field) + " " + why);
        };
        const auto non_negative = [&](const char* field, duration d) {
            if (d.count() < 0) {
                fail(field, "is " + std::to_string(d.count()) + " ms; it must be >= 0");
            }
        };
        if (max_size == 0) {
            fail("max_size", "is 0; a pool needs at least one connection");
        }
        if (max_size > max_max_size) {
            fail("max_size", "is " + std::to_string(max_size) + "; more than " +
                                 std::to_string(max_max_size) +
                                 " connections from one pool is beyond any server's limit");
        }
        if (min_idle > max_size) {
            fail("min_idle", "is " + std::to_string(min_idle) + ", more than max_size (" +
                                 std::to_string(max_size) + ")");
        }
        non_negative("acquire_timeout", acquire_timeout);
        non_negative("handoff_after", handoff_after);
        non_negative("validation_window", validation_window);
        non_negative("socket_check_after", socket_check_after);
        non_negative("idle_timeout", idle_timeout);
        non_negative("max_lifetime", max_lifetime);
        non_negative("connect_backoff_base", connect_backoff_base);
        non_negative("connect_backoff_cap", connect_backoff_cap);
        non_negative("leak_threshold", leak_threshold);
        if (validation_timeout.count() <= 0) {
            fail("validation_timeout",
                 "is " + std::to_string(validation_timeout.count()) + " ms; it must be > 0");
        }
        if (connect_backoff_cap < connect_backoff_base) {
            fail("connect_backoff_cap", "(" + std::to_string(connect_backoff_cap.count()) +
                                            " ms) is less than connect_backoff_base (" +
                                            std::to_string(connect_backoff_base.count()) + " ms)");
        }
        if (fleet.enabled) {
            validate_fleet(fail, non_negative);
        }
        if (background_housekeeping && housekeeping_interval.count() <= 0) {
            fail("housekeeping_interval",
                 "is " + std::to_string(housekeeping_interval.count()) +
                     " ms; it must be > 0 when background_housekeeping is on");
        }
    }

private:
    template <class Fail, class NonNegative>
    void validate_fleet(const Fail& fail, const NonNegative& non_negative) const {
        // NaN fails every comparison, so each check is written to reject it.
        if (!(fleet.sample_fraction > 0.0 && fleet.sample_fraction <= 1.0)) {
            fail("fleet.sample_fraction", "is " + std::to_string(fleet.sample_fraction) +
                                              "; it must be in (0, 1] (0.25: one give-back in "
                                              "four asks the server)");
        }
        if (!(fleet.close_above > 0.0 && fleet.close_above <= 1.0)) {
            fail("fleet.close_above", "is " + std::to_string(fleet.close_above) +
                                          "; it must be in (0, 1] (0.8: close at 80% of the "
                                          "server's connections)");
        }
        non_negative("fleet.sample_interval", fleet.sample_interval);
        non_negative("fleet.capacity_ttl", fleet.capacity_ttl);
        if (fleet.reap) {
            if (fleet.reap_idle_after < duration{1'000}) {
                fail("fleet.reap_idle_after",
                     "is " + std::to_string(fleet.reap_idle_after.count()) +
                         " ms; it must be >= 1000 ms (MySQL counts idle time in whole seconds; "
                         "choose it longer than an instance sits frozen between invocations)");
            }
            if (fleet.reap_max == 0 || fleet.reap_max > 1000) {
                fail("fleet.reap_max", "is " + std::to_string(fleet.reap_max) +
                                           "; it must be 1 to 1000 zombies per sample");
            }
        }
    }
};

} // namespace warmpool
