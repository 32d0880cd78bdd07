// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
//
// Single-header edition: generated from include/ by tools/amalgamate.py — do not edit.
// Change the headers under include/warmpool/ and run `python3 tools/amalgamate.py`.
//
// The core (warmpool/warmpool.hpp) is always compiled. The SOCI adapter (warmpool/soci.hpp:
// warmpool::soci_pool, warmpool::soci_traits) follows it under this rule:
//   - WARMPOOL_WITH_SOCI defined to 1: compiled; SOCI's headers must be on the include path.
//   - WARMPOOL_WITH_SOCI defined to 0: left out, even where SOCI is installed.
//   - WARMPOOL_WITH_SOCI not defined: compiled when <soci/soci.h> is found (and Boost's headers
//     too, when that SOCI was built with Boost), and WARMPOOL_WITH_SOCI is then defined to 1.
// Compiling the adapter needs no SOCI library at link time until soci_pool is used; then SOCI's
// core is enough. As with the multi-header layout, each backend's native connection checks are
// compiled in when its headers are on the include path (libpq-fe.h, mysql.h, sqlite3.h) and find
// the client library at run time; WARMPOOL_SOCI_POSTGRESQL / _MYSQL / _SQLITE3 =1 call it
// directly instead (link it and the SOCI backend), =0 leaves the checks out (see soci.hpp).

#pragma once

// ---- begin warmpool/warmpool.hpp ----

// The generic core: basic_pool over any backend traits (see traits.hpp). No database library is
// needed; warmpool/soci.hpp adds SOCI sessions.

// ---- begin warmpool/version.hpp ----

#define WARMPOOL_VERSION_MAJOR 0
#define WARMPOOL_VERSION_MINOR 1
#define WARMPOOL_VERSION_PATCH 0

// Single number for preprocessor comparisons: MAJOR * 10000 + MINOR * 100 + PATCH.
#define WARMPOOL_VERSION                                                                           \
    (WARMPOOL_VERSION_MAJOR * 10000 + WARMPOOL_VERSION_MINOR * 100 + WARMPOOL_VERSION_PATCH)
// ---- end warmpool/version.hpp ----

// ---- begin warmpool/errors.hpp ----

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
// ---- end warmpool/errors.hpp ----
// ---- begin warmpool/events.hpp ----

#include <chrono>
#include <cstdint>
#include <string_view>

namespace warmpool {

/// Why a connection was closed. Counted per reason in pool_stats and reported in
/// event_type::closed events.
enum class close_reason : std::uint8_t {
    none = 0,
    idle_timeout,      ///< idle longer than options::idle_timeout
    max_lifetime,      ///< older than its (jittered) options::max_lifetime
    validation_failed, ///< the socket showed the server closed it, or a ping failed or timed out
    broken,      ///< the backend reported it unusable, or a rollback or reset on give-back failed
    invalidated, ///< the lease holder called lease::invalidate()
    pool_closed, ///< the pool was closed
    rejected_on_release, ///< the traits' reusable() (e.g. soci_config::on_release) said no
    abandoned, ///< forgotten by abandon_connections() (a snapshot restore): nothing was sent on it
    drained,   ///< closed while idle by close_idle() (e.g. before a snapshot)
    fleet_pressure, ///< closed at give-back: the server was at or above options::fleet.close_above
};

/// A stable lower-case name for logs and metrics labels.
constexpr std::string_view to_string(close_reason r) noexcept {
    switch (r) {
    case close_reason::none:
        return "none";
    case close_reason::idle_timeout:
        return "idle_timeout";
    case close_reason::max_lifetime:
        return "max_lifetime";
    case close_reason::validation_failed:
        return "validation_failed";
    case close_reason::broken:
        return "broken";
    case close_reason::invalidated:
        return "invalidated";
    case close_reason::pool_closed:
        return "pool_closed";
    case close_reason::rejected_on_release:
        return "rejected_on_release";
    case close_reason::abandoned:
        return "abandoned";
    case close_reason::drained:
        return "drained";
    case close_reason::fleet_pressure:
        return "fleet_pressure";
    }
    return "unknown";
}

enum class event_type : std::uint8_t {
    connected,           ///< a new connection opened; elapsed = connect time (retries included)
    connect_failed,      ///< one connect attempt failed; message = the backend's error
    acquired,            ///< a lease was handed out; elapsed = time the caller waited
    released,            ///< a lease came back; elapsed = how long it was held
    rolled_back,         ///< a transaction left open was rolled back on give-back
    reset,               ///< a connection given back was reset (options::reset_on_release)
    validation_failed,   ///< an idle connection failed its socket check or ping
    closed,              ///< a connection closed; reason says why
    leak_suspected,      ///< a lease has been held longer than options::leak_threshold
    leak_returned,       ///< a lease reported as leak_suspected came back; elapsed = time held
    forked,              ///< a fork() was noticed; the child abandoned the parent's connections
    fleet_sampled,       ///< options::fleet asked the server at give-back; elapsed = the round
                         ///< trip, message = the counts, zombies ended, and the decision
    fleet_sample_failed, ///< that query failed or timed out; message = why
};

constexpr std::string_view to_string(event_type t) noexcept {
    switch (t) {
    case event_type::connected:
        return "connected";
    case event_type::connect_failed:
        return "connect_failed";
    case event_type::acquired:
        return "acquired";
    case event_type::released:
        return "released";
    case event_type::rolled_back:
        return "rolled_back";
    case event_type::reset:
        return "reset";
    case event_type::validation_failed:
        return "validation_failed";
    case event_type::closed:
        return "closed";
    case event_type::leak_suspected:
        return "leak_suspected";
    case event_type::leak_returned:
        return "leak_returned";
    case event_type::forked:
        return "forked";
    case event_type::fleet_sampled:
        return "fleet_sampled";
    case event_type::fleet_sample_failed:
        return "fleet_sample_failed";
    }
    return "unknown";
}

/// What options::on_event receives. Views are valid only during the call. Messages come from
/// the backend's error text and the pool's own words; connect strings in them are redacted by
/// the traits (passwords never appear).
struct event {
    event_type type;
    std::uint64_t connection_id = 0; ///< 1, 2, … per pool; 0 when no connection is involved
    close_reason reason = close_reason::none;
    std::chrono::microseconds elapsed{0};
    std::string_view message{};
};

} // namespace warmpool
// ---- end warmpool/events.hpp ----
// ---- begin warmpool/options.hpp ----

// ---- begin warmpool/fleet.hpp ----

// The fleet policy: server-aware connection management for many small pools sharing one
// database server, as a fleet of serverless function instances does (docs/fleet.md).
//
// Each instance holds one connection. Instances reclaimed by the platform leave theirs behind
// ("zombies") until the server's idle timeout; together the fleet fills max_connections and then
// every cold start is refused. With options::fleet on, a sampled give-back asks the server, in
// one round trip, how full it is and (optionally) ends zombies of the same application (in the
// same round trip on PostgreSQL; MariaDB needs a KILL per zombie and one round trip more):
//
//   capacity   the connections the pool's user may hold: the server's limit minus the slots it
//              reserves for superusers, or the user's own limit if lower. Cached capacity_ttl.
//   in use     connections open now against each of those limits, this one included.
//   close own  at or above close_above of a limit, the connection given back is closed instead
//              of kept (close_reason::fleet_pressure), unless a caller is waiting for it: the
//              slot goes back to the fleet, where a cold start needs it more than this warm
//              instance, which reconnects at its next use.
//   reap       optional: end up to reap_max connections of the same application (PostgreSQL:
//              same user, database and application_name; MariaDB/MySQL: same user) that have
//              been idle, outside any transaction, for at least reap_idle_after. Never one in a
//              transaction, never one of another application, never a busy one.
//
// Give-back is the moment: it is the last one before a serverless process freezes (no timer
// fires while it is frozen), and the connection is at hand. Unsampled give-backs cost nothing.
//
// This header holds the options and the two plain structs a traits' fleet_sample() exchanges
// with the pool (see traits.hpp); the decisions are in basic_pool, the SQL in the traits.

#include <chrono>
#include <cstddef>
#include <string>

namespace warmpool {

/// options::fleet. Off by default; see the top of this file and docs/fleet.md.
struct fleet_options {
    using duration = std::chrono::milliseconds;

    /// Turn the policy on. The traits must implement fleet_sample() (the SOCI adapter does for
    /// PostgreSQL and MariaDB/MySQL); the pool's constructor refuses it otherwise.
    bool enabled = false;

    /// Probability that a give-back samples the server, in (0, 1], while the server is below
    /// close_above. Sampling spreads the cost (and the concurrent reapers) over the fleet: with
    /// N instances each invoked r times a second the server sees about N * r * sample_fraction
    /// management queries a second. Two give-backs sample whatever the coin says: a pool's
    /// first (it knows nothing yet), and every one after a sample that found the server at or
    /// above close_above, until a sample finds it below: under pressure each connection given
    /// back is a slot another instance may be waiting for.
    double sample_fraction = 0.25;

    /// And at most one sample per sample_interval per pool (0 = no floor): bounds the load a
    /// busy multi-threaded pool adds, whatever its give-back rate.
    duration sample_interval{0};

    /// How long the server's limits are trusted before they are read again (they change only
    /// when an operator changes them). The counts are read at every sample.
    duration capacity_ttl{60'000};

    /// Utilization (in use / capacity, the higher of the server's and the user's) at or above
    /// which the connection given back is closed. In (0, 1]; 1 closes only at the very limit.
    double close_above = 0.8;

    /// Also end zombies: idle connections of the same application, idle for reap_idle_after or
    /// longer. Needs a scope that identifies the application (PostgreSQL: application_name,
    /// which the SOCI adapter sets by default; MariaDB/MySQL: a user of its own).
    bool reap = false;

    /// The idle time that makes a connection a zombie. Longer than the time a live instance can
    /// sit frozen between invocations makes reaping end only the connections of reclaimed
    /// instances; shorter also ends frozen live instances' connections, which warmpool replaces
    /// at their next use (a reconnect, no error) but other clients may not. Must be >= 1 s:
    /// MySQL counts idle time in whole seconds, and a shorter floor would end connections
    /// between two statements of one user.
    duration reap_idle_after{300'000};

    /// At most this many terminated per sample (1 to 1000): concurrent samplers pick from the
    /// same oldest zombies, so a small number keeps the fleet from killing in a stampede.
    unsigned reap_max = 2;
};

/// What basic_pool asks of a traits' fleet_sample().
struct fleet_request {
    /// Read the server's and the user's connection limits (the pool's cached capacity expired).
    /// When false, the *_capacity fields of the reading may be left 0.
    bool with_capacity = true;
    /// Terminate zombies (see fleet_options::reap); reap_max is then >= 1.
    bool reap = false;
    std::chrono::milliseconds reap_idle_after{0};
    unsigned reap_max = 0;
};

/// What a traits' fleet_sample() reports. Counts include the connection that sampled and leave
/// out the zombies this sample ended (their slots are free, or about to be).
struct fleet_reading {
    /// The counts below are valid. False when the query failed or timed out.
    bool ok = false;
    /// Whether the connection may be kept after a failure: false after a timeout or an I/O error
    /// (the pool then closes it), true after an error the server reported cleanly.
    bool usable = true;

    /// Connections non-superusers may open on the server: max_connections minus reserved slots.
    /// 0 = unknown (not asked, or not readable).
    std::size_t server_capacity = 0;
    /// The user's own limit. PostgreSQL refuses a connection when either the role's CONNECTION
    /// LIMIT (counting the role's connections to every database) or the database's (counting
    /// every role's connections to it) is reached: this is whichever of the two is fuller, with
    /// user_in_use its own count; superusers have neither. MariaDB/MySQL: max_user_connections
    /// of the account (or the server's). 0 = no such limit. May come with every reading, asked
    /// or not: the pool then takes it.
    std::size_t user_capacity = 0;
    /// Client connections open on the server now.
    std::size_t server_in_use = 0;
    /// Connections counted against user_capacity (see there) open now.
    std::size_t user_in_use = 0;

    /// Zombies terminated by this sample (already ended, or racing with another reaper, do not
    /// count and are no error).
    unsigned reaped = 0;
    /// Non-empty when reaping was asked for and could not run (missing privilege, ...): why.
    /// The counts are still valid.
    std::string reap_error;
    /// Non-empty when !ok: what failed, without secrets, ending with whether the connection can
    /// be kept (the pool closes it when !usable).
    std::string error;
};

} // namespace warmpool
// ---- end warmpool/fleet.hpp ----

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
// ---- end warmpool/options.hpp ----
// ---- begin warmpool/stats.hpp ----

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
// ---- end warmpool/stats.hpp ----
// ---- begin warmpool/traits.hpp ----

// The contract between basic_pool and a backend. basic_pool<Traits> calls only the static members
// below; it never knows what a connection is. warmpool/soci.hpp is one implementation; a test's
// mock traits is another.
//
//   struct my_traits {
//       using connection = ...; // what a lease gives access to; need not be movable or copyable
//       using config = ...;     // copyable; everything connect() needs
//
//       // Opens one connection. Round trips: as many as the handshake takes. `timeout` is a hint:
//       // how long this attempt may take before the caller's deadline passes.
//       // Throws warmpool::connect_error(message, transient) to say whether a retry can help
//       // (too many connections, server starting: transient; bad password, unknown database,
//       // malformed parameters: permanent). Any other exception counts as permanent.
//       static std::unique_ptr<connection> connect(const config&, std::chrono::milliseconds
//       timeout);
//
//       // Local bookkeeping only, no system call: true when the backend already knows the
//       // connection is unusable (for libpq, PQstatus() == CONNECTION_BAD). Called on every
//       // checkout and every give-back, so it must cost nanoseconds.
//       static bool is_broken(connection&) noexcept;
//
//       // At most one system call, no round trip: true when the connection's socket shows, while
//       // it sat idle, that the server closed it or sent something unprompted (a zero-timeout
//       // poll() for readability). Backends without a socket return false.
//       // It may return warmpool::peer_state instead of bool, to say `unsure` when the socket
//       // shows something it cannot read without a round trip (bytes under TLS): the pool then
//       // pings at once, whatever the connection's idle time.
//       static bool peer_closed(connection&) noexcept;
//
//       // One round trip bounded by `timeout`: true when the server answered in time. Must return
//       // (false) by the deadline even if the server or the network hangs.
//       static bool ping(connection&, std::chrono::milliseconds timeout) noexcept;
//
//       // Local, no round trip: true when a transaction is open. A backend that cannot tell
//       // locally returns true, and the pool then rolls back on every give-back: one statement
//       // more, but never another user's transaction.
//       static bool in_transaction(connection&) noexcept;
//
//       // One round trip bounded by `timeout` (the pool passes options::validation_timeout): roll
//       // the open transaction back. False when it failed, timed out, or left a transaction open
//       // (where the backend can tell); the pool then closes the connection instead of pooling
//       // it. Like ping, it must return by the deadline even if the server hangs.
//       static bool rollback(connection&, std::chrono::milliseconds timeout) noexcept;
//
//       // The target for messages and events, without secrets (no password).
//       static std::string describe(const config&);
//
//       // Optional. Needed only for options::reset_on_release: return the session to the state a
//       // new connection has (session variables, role, temporary tables, prepared statements,
//       // locks), then re-apply the config's per-connection setup. Bounded by `timeout` like
//       // rollback; false when it failed or timed out, and the pool closes the connection. Called
//       // after any rollback, never with a transaction open.
//       static bool reset(connection&, const config&, std::chrono::milliseconds timeout) noexcept;
//
//       // Optional. Asked last, at give-back, about a connection the pool is about to keep:
//       // false closes it instead (close_reason::rejected_on_release). A user's veto, as pgx's
//       // AfterRelease; e.g. soci_config::on_release.
//       static bool reusable(connection&, const config&) noexcept;
//
//       // Optional. Called just before the pool destroys a connection it abandons
//       // (basic_pool::abandon_connections(), after a snapshot restore): after it, destroying
//       // the connection must send nothing on its socket and must not block, because the peer
//       // is gone or belongs to another copy of the process. Without it the connection is
//       // destroyed as usual, and its goodbye message goes out on the dead socket.
//       static void abandon(connection&) noexcept;
//
//       // Optional. Needed only for options::fleet (warmpool/fleet.hpp): one round trip bounded
//       // by `timeout` that reads the server's connection limits (when asked) and counts, and
//       // terminates zombies when asked (PostgreSQL does it in the same round trip; MariaDB
//       // needs one KILL per zombie and one round trip more to release its claims on them).
//       // Called at give-back, after rollback, reset and reusable(). Never throws: a failure
//       // is reported in the reading (ok, usable, error).
//       static fleet_reading fleet_sample(connection&, const config&, const fleet_request&,
//                                         std::chrono::milliseconds timeout) noexcept;
//
//       // Optional, with fleet_sample: "" when the config's backend can take part in the fleet
//       // policy, otherwise why not (SQLite has no server to share). The pool's constructor
//       // throws std::invalid_argument with it when options::fleet is on.
//       static std::string fleet_unsupported(const config&);
//   };
//
// Closing a connection is destroying it: the pool resets its unique_ptr outside its lock, so the
// connection's destructor must not throw. After fork() the child never destroys (nor uses) a
// connection inherited from its parent: it releases the pointer, so nothing is sent on the
// parent's socket.
//
// Every member may be called from any thread, concurrently for different connections; the pool
// never calls two members on the same connection at once, and never while holding its lock.

#include <chrono>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

namespace warmpool {

/// What a traits' peer_closed() may answer instead of a bool.
enum class peer_state : unsigned char {
    open,   ///< nothing on the socket: trust the connection as far as the idle time allows
    closed, ///< the server closed it (or said it would): close it, no round trip
    unsure, ///< something arrived that cannot be read locally (e.g. under TLS): ping it now
};

namespace detail {

constexpr peer_state to_peer_state(bool closed) noexcept {
    return closed ? peer_state::closed : peer_state::open;
}
constexpr peer_state to_peer_state(peer_state s) noexcept {
    return s;
}

template <class T, class = void>
struct has_connect : std::false_type {};
template <class T>
struct has_connect<T, std::void_t<decltype(T::connect(std::declval<const typename T::config&>(),
                                                      std::chrono::milliseconds{}))>>
    : std::is_same<decltype(T::connect(std::declval<const typename T::config&>(),
                                       std::chrono::milliseconds{})),
                   std::unique_ptr<typename T::connection>> {};

// has_NAME<T>: T::NAME(args...) exists and returns something convertible to bool.
// nothrow_NAME<T>: and it is declared noexcept (the pool calls it from noexcept code, where an
// exception would end the program).
#define WARMPOOL_DETAIL_BOOL_MEMBER(name, ...)                                                     \
    template <class T, class = void>                                                               \
    struct has_##name : std::false_type {};                                                        \
    template <class T>                                                                             \
    struct has_##name<T, std::void_t<decltype(T::name(__VA_ARGS__))>>                              \
        : std::is_convertible<decltype(T::name(__VA_ARGS__)), bool> {};                            \
    template <class T, class = void>                                                               \
    struct nothrow_##name : std::false_type {};                                                    \
    template <class T>                                                                             \
    struct nothrow_##name<T, std::void_t<decltype(T::name(__VA_ARGS__))>>                          \
        : std::bool_constant<noexcept(T::name(__VA_ARGS__))> {};

#define WARMPOOL_DETAIL_CONNECTION std::declval<typename T::connection&>()
#define WARMPOOL_DETAIL_CONFIG std::declval<const typename T::config&>()
WARMPOOL_DETAIL_BOOL_MEMBER(is_broken, WARMPOOL_DETAIL_CONNECTION)
WARMPOOL_DETAIL_BOOL_MEMBER(reusable, WARMPOOL_DETAIL_CONNECTION, WARMPOOL_DETAIL_CONFIG)

// peer_closed may answer bool or peer_state.
template <class T, class = void>
struct has_peer_closed : std::false_type {};
template <class T>
struct has_peer_closed<T, std::void_t<decltype(T::peer_closed(WARMPOOL_DETAIL_CONNECTION))>>
    : std::bool_constant<
          std::is_convertible<decltype(T::peer_closed(WARMPOOL_DETAIL_CONNECTION)), bool>::value ||
          std::is_same<decltype(T::peer_closed(WARMPOOL_DETAIL_CONNECTION)), peer_state>::value> {};
template <class T, class = void>
struct nothrow_peer_closed : std::false_type {};
template <class T>
struct nothrow_peer_closed<T, std::void_t<decltype(T::peer_closed(WARMPOOL_DETAIL_CONNECTION))>>
    : std::bool_constant<noexcept(T::peer_closed(WARMPOOL_DETAIL_CONNECTION))> {};

template <class T, class = void>
struct has_abandon : std::false_type {};
template <class T>
struct has_abandon<T, std::void_t<decltype(T::abandon(WARMPOOL_DETAIL_CONNECTION))>>
    : std::true_type {};
template <class T, class = void>
struct nothrow_abandon : std::false_type {};
template <class T>
struct nothrow_abandon<T, std::void_t<decltype(T::abandon(WARMPOOL_DETAIL_CONNECTION))>>
    : std::bool_constant<noexcept(T::abandon(WARMPOOL_DETAIL_CONNECTION))> {};
// fleet_sample: returns a fleet_reading; fleet_unsupported: returns something like a string.
template <class T, class = void>
struct has_fleet_sample : std::false_type {};
template <class T>
struct has_fleet_sample<T, std::void_t<decltype(T::fleet_sample(
                               WARMPOOL_DETAIL_CONNECTION, WARMPOOL_DETAIL_CONFIG,
                               std::declval<const fleet_request&>(), std::chrono::milliseconds{}))>>
    : std::is_same<decltype(T::fleet_sample(WARMPOOL_DETAIL_CONNECTION, WARMPOOL_DETAIL_CONFIG,
                                            std::declval<const fleet_request&>(),
                                            std::chrono::milliseconds{})),
                   fleet_reading> {};
template <class T, class = void>
struct nothrow_fleet_sample : std::false_type {};
template <class T>
struct nothrow_fleet_sample<
    T, std::void_t<decltype(T::fleet_sample(WARMPOOL_DETAIL_CONNECTION, WARMPOOL_DETAIL_CONFIG,
                                            std::declval<const fleet_request&>(),
                                            std::chrono::milliseconds{}))>>
    : std::bool_constant<noexcept(
          T::fleet_sample(WARMPOOL_DETAIL_CONNECTION, WARMPOOL_DETAIL_CONFIG,
                          std::declval<const fleet_request&>(), std::chrono::milliseconds{}))> {};
template <class T, class = void>
struct has_fleet_unsupported : std::false_type {};
template <class T>
struct has_fleet_unsupported<T, std::void_t<decltype(T::fleet_unsupported(WARMPOOL_DETAIL_CONFIG))>>
    : std::is_convertible<decltype(T::fleet_unsupported(WARMPOOL_DETAIL_CONFIG)), std::string> {};
WARMPOOL_DETAIL_BOOL_MEMBER(ping, WARMPOOL_DETAIL_CONNECTION, std::chrono::milliseconds{})
WARMPOOL_DETAIL_BOOL_MEMBER(in_transaction, WARMPOOL_DETAIL_CONNECTION)
WARMPOOL_DETAIL_BOOL_MEMBER(rollback, WARMPOOL_DETAIL_CONNECTION, std::chrono::milliseconds{})
WARMPOOL_DETAIL_BOOL_MEMBER(reset, WARMPOOL_DETAIL_CONNECTION, WARMPOOL_DETAIL_CONFIG,
                            std::chrono::milliseconds{})
#undef WARMPOOL_DETAIL_CONFIG
#undef WARMPOOL_DETAIL_CONNECTION
#undef WARMPOOL_DETAIL_BOOL_MEMBER

template <class T, class = void>
struct has_describe : std::false_type {};
template <class T>
struct has_describe<T,
                    std::void_t<decltype(T::describe(std::declval<const typename T::config&>()))>>
    : std::is_convertible<decltype(T::describe(std::declval<const typename T::config&>())),
                          std::string> {};

/// Turns a traits type that misses part of the contract into one readable compile error each.
template <class T>
constexpr bool check_traits() {
    static_assert(has_connect<T>::value,
                  "warmpool traits: needs `static std::unique_ptr<connection> connect(const "
                  "config&, std::chrono::milliseconds)` (see warmpool/traits.hpp)");
    static_assert(has_is_broken<T>::value,
                  "warmpool traits: needs `static bool is_broken(connection&) noexcept`");
    static_assert(nothrow_is_broken<T>::value || !has_is_broken<T>::value,
                  "warmpool traits: is_broken(connection&) must be noexcept");
    static_assert(has_peer_closed<T>::value,
                  "warmpool traits: needs `static bool peer_closed(connection&) noexcept` (or "
                  "returning warmpool::peer_state)");
    static_assert(nothrow_peer_closed<T>::value || !has_peer_closed<T>::value,
                  "warmpool traits: peer_closed(connection&) must be noexcept");
    static_assert(has_ping<T>::value, "warmpool traits: needs `static bool ping(connection&, "
                                      "std::chrono::milliseconds) noexcept`");
    static_assert(nothrow_ping<T>::value || !has_ping<T>::value,
                  "warmpool traits: ping(connection&, milliseconds) must be noexcept");
    static_assert(has_in_transaction<T>::value,
                  "warmpool traits: needs `static bool in_transaction(connection&) noexcept`");
    static_assert(nothrow_in_transaction<T>::value || !has_in_transaction<T>::value,
                  "warmpool traits: in_transaction(connection&) must be noexcept");
    static_assert(has_rollback<T>::value, "warmpool traits: needs `static bool "
                                          "rollback(connection&, std::chrono::milliseconds) "
                                          "noexcept`, bounded by its timeout");
    static_assert(nothrow_rollback<T>::value || !has_rollback<T>::value,
                  "warmpool traits: rollback(connection&, milliseconds) must be noexcept");
    static_assert(nothrow_reset<T>::value || !has_reset<T>::value,
                  "warmpool traits: reset(connection&, const config&, milliseconds) must be "
                  "noexcept");
    static_assert(nothrow_reusable<T>::value || !has_reusable<T>::value,
                  "warmpool traits: reusable(connection&, const config&) must be noexcept");
    static_assert(nothrow_abandon<T>::value || !has_abandon<T>::value,
                  "warmpool traits: abandon(connection&) must be noexcept");
    static_assert(nothrow_fleet_sample<T>::value || !has_fleet_sample<T>::value,
                  "warmpool traits: fleet_sample(connection&, const config&, const "
                  "fleet_request&, milliseconds) must be noexcept");
    static_assert(has_describe<T>::value,
                  "warmpool traits: needs `static std::string describe(const config&)`");
    return true;
}

} // namespace detail
} // namespace warmpool
// ---- end warmpool/traits.hpp ----

// ---- begin warmpool/lease.hpp ----

// ---- begin warmpool/pool.hpp ----

// ---- begin warmpool/detail/clock.hpp ----

// How the pool reads time and waits, for any Clock. The pool never names a real clock itself:
// tests plug in a manual clock, production uses std::chrono::steady_clock.
//
// A Clock may optionally provide
//   using wall_clock = ...;  // a second clock that keeps running while the process is frozen
//   static void wait_until(std::condition_variable&, std::unique_lock<std::mutex>&, time_point);
// For std::chrono::steady_clock the wall clock is std::chrono::system_clock.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <type_traits>
#include <utility>

#if defined(__linux__)
#include <time.h>
#endif

namespace warmpool {
namespace detail {

template <class C, class = void>
struct wall_clock_of {
    // A clock with no wall clock of its own measures idle time with itself alone.
    using type = std::conditional_t<std::is_same<C, std::chrono::steady_clock>::value,
                                    std::chrono::system_clock, C>;
};
template <class C>
struct wall_clock_of<C, std::void_t<typename C::wall_clock>> {
    using type = typename C::wall_clock;
};

template <class C, class = void>
struct has_wait_until : std::false_type {};
template <class C>
struct has_wait_until<
    C, std::void_t<decltype(C::wait_until(std::declval<std::condition_variable&>(),
                                          std::declval<std::unique_lock<std::mutex>&>(),
                                          std::declval<typename C::time_point>()))>>
    : std::true_type {};

#if defined(__linux__)
// The coarse clocks cost a few nanoseconds where clock_gettime(CLOCK_MONOTONIC) costs tens on
// virtual machines; their ~4 ms resolution is ample for windows and timeouts counted in
// milliseconds. They run on the same timelines as steady_clock and system_clock (libstdc++ and
// libc++ both read CLOCK_MONOTONIC and CLOCK_REALTIME), so their readings mix with those clocks'.
template <class TimePoint>
inline TimePoint read_coarse(clockid_t id) noexcept {
    timespec ts{};
    ::clock_gettime(id, &ts);
    const auto since_epoch = std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
    return TimePoint(std::chrono::duration_cast<typename TimePoint::duration>(since_epoch));
}
#endif

/// Cheap reading of any clock: the coarse kernel clock where the clock is one of the standard
/// ones on Linux, Clock::now() otherwise. For timestamps compared against millisecond limits.
template <class C>
inline typename C::time_point cheap_now() noexcept {
#if defined(__linux__)
    if constexpr (std::is_same<C, std::chrono::steady_clock>::value) {
        return read_coarse<typename C::time_point>(CLOCK_MONOTONIC_COARSE);
    } else if constexpr (std::is_same<C, std::chrono::system_clock>::value) {
        return read_coarse<typename C::time_point>(CLOCK_REALTIME_COARSE);
    } else {
        return C::now();
    }
#else
    return C::now();
#endif
}

/// Blocks on `cv` until notified, or until `deadline` by Clock, or spuriously. Callers loop.
template <class C>
inline void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                       typename C::time_point deadline) {
    if constexpr (has_wait_until<C>::value) {
        C::wait_until(cv, lock, deadline);
    } else {
        // One wait lasts an hour at most: the standard library adds the time left to its own
        // clock's now(), which overflows for a deadline near time_point::max(), and an overflowed
        // wait returns at once: a busy spin holding the lock. Callers loop until their deadline.
        const auto left =
            std::min<typename C::duration>(deadline - C::now(), std::chrono::hours(1));
        if (left > C::duration::zero()) {
            cv.wait_for(lock, left);
        }
    }
}

} // namespace detail
} // namespace warmpool
// ---- end warmpool/detail/clock.hpp ----
// ---- begin warmpool/detail/fork.hpp ----

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
// ---- end warmpool/detail/fork.hpp ----

#include <algorithm>
#include <atomic>
#include <cassert>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace warmpool {

/// A bounded pool of connections of one backend, described by Traits (see warmpool/traits.hpp).
///
/// Every member is safe to call from any thread. The pool never connects, pings, rolls back or
/// closes a connection while holding its lock, and starts no thread unless
/// options::background_housekeeping is on. Leases must not outlive the pool.
template <class Traits, class Clock = std::chrono::steady_clock>
class basic_pool {
    static_assert(detail::check_traits<Traits>(), "see warmpool/traits.hpp");

public:
    using traits_type = Traits;
    using clock_type = Clock;
    using connection_type = typename Traits::connection;
    using config_type = typename Traits::config;
    using time_point = typename Clock::time_point;
    /// The clock that keeps running while the process is frozen: std::chrono::system_clock for
    /// std::chrono::steady_clock, or Clock::wall_clock (see warmpool/detail/clock.hpp).
    using wall_clock = typename detail::wall_clock_of<Clock>::type;
    using wall_time_point = typename wall_clock::time_point;

    class lease;

    /// Validates `opts` (std::invalid_argument naming the field) and connects nothing: the first
    /// connection opens on the first acquire() or warm_up().
    explicit basic_pool(config_type config, options opts = {})
        : config_(std::move(config)), opts_(validated(std::move(opts))),
          target_(Traits::describe(config_)), rng_(seed()) {
        check_fleet_support();
        // Reserved up front so bookkeeping under the lock never allocates.
        all_.reserve(opts_.max_size);
        idle_.reserve(opts_.max_size);
        detail::lock_around_forks(&mutex_);
        fork_epoch_ = detail::fork_epoch.load(std::memory_order_relaxed);
        if (opts_.background_housekeeping) {
            try {
                housekeeper_ = std::make_unique<std::thread>([this] { housekeeping_loop(); });
            } catch (...) {
                detail::stop_locking_around_forks(&mutex_);
                throw;
            }
        }
    }

    /// Closes the pool, waits until every caller it woke has left acquire(), and waits for the
    /// housekeeping thread. Every lease must have been given back before. Must not run on the
    /// pool's own housekeeping thread (from on_event).
    ~basic_pool() {
        close();
        std::unique_ptr<std::thread> housekeeper;
        {
            // close() noticed any fork, and woke every waiter with pool_closed: each takes itself
            // off waiters_ under the lock on its way out, and the last one wakes us.
            std::unique_lock<std::mutex> lock(mutex_);
            while (!waiters_.empty()) {
                wakeup_.wait(lock);
            }
            housekeeper = std::move(housekeeper_);
        }
        if (housekeeper && housekeeper->joinable()) {
            assert(housekeeper->get_id() != std::this_thread::get_id() &&
                   "warmpool: a pool destroyed on its own housekeeping thread");
            housekeeper->join();
        }
        assert(in_use_count() == 0 && "warmpool: a lease outlived its pool");
        // Slots leased out when this process forked: their holders lived in the parent. The
        // connections are the parent's, so they are released unclosed (see notice_fork_locked).
        for (auto& s : inherited_) {
            (void)s->conn.release();
        }
        detail::stop_locking_around_forks(&mutex_);
    }

    basic_pool(const basic_pool&) = delete;
    basic_pool& operator=(const basic_pool&) = delete;

    /// A working connection, waiting up to options::acquire_timeout.
    /// Throws acquire_timeout, connect_error (permanent failure, or retries exhausted) or
    /// pool_closed.
    [[nodiscard]] lease acquire() {
        return *checkout(deadline{opts_.acquire_timeout}, /*may_wait=*/true);
    }

    /// As acquire(), with `timeout` instead of options::acquire_timeout (milliseconds::max()
    /// waits as long as it takes). No ping and no connect attempt starts after the deadline, so
    /// the call returns within `timeout` plus the one call under way then: a ping (at most
    /// validation_timeout) or a connect attempt (at most the connect timeout given the traits).
    [[nodiscard]] lease acquire(std::chrono::milliseconds timeout) {
        if (timeout.count() < 0) {
            throw std::invalid_argument("warmpool: acquire timeout is " +
                                        std::to_string(timeout.count()) + " ms; it must be >= 0");
        }
        // milliseconds::max() and the like mean "as long as it takes".
        return *checkout(deadline{std::min(timeout, options::forever)}, /*may_wait=*/true);
    }

    /// As acquire(), by an absolute deadline of the pool's clock: the wait, every ping (at most
    /// min(validation_timeout, time left)), every connect attempt (given the time left as its
    /// timeout) and every backoff pause end by it, and nothing starts after it. A deadline
    /// already past still gets an idle connection that needs no round trip to be trusted.
    [[nodiscard]] lease acquire_until(time_point deadline_at) {
        return *checkout(absolute(deadline_at), /*may_wait=*/true);
    }

    /// As acquire_until(time_point), by the pool's wall clock (std::chrono::system_clock for
    /// the default pool): e.g. AWS Lambda's Lambda-Runtime-Deadline-Ms. The deadline is turned
    /// into the pool's clock once, at the call; a wall-clock step after that does not move it.
    /// Any duration: e.g. time_point<system_clock, milliseconds> straight from a header.
    template <class Duration, class W = wall_clock,
              class = std::enable_if_t<!std::is_same<W, Clock>::value>>
    [[nodiscard]] lease acquire_until(std::chrono::time_point<W, Duration> deadline_at) {
        // In floating-point milliseconds: no deadline, however far in the past or future, can
        // overflow the subtraction; beyond options::forever it means no limit.
        using fms = std::chrono::duration<long double, std::milli>;
        const auto now = Clock::now();
        const long double left = fms(deadline_at.time_since_epoch()).count() -
                                 fms(wall_clock::now().time_since_epoch()).count();
        time_point at = now;
        if (left >= static_cast<long double>(options::forever.count())) {
            at = saturating_add(now, options::forever);
        } else if (left > 0) {
            at = saturating_add(now, ms{static_cast<ms::rep>(std::ceil(left))});
        }
        return *checkout(absolute(at), /*may_wait=*/true);
    }

    /// A working connection if one is idle or may be opened now; std::nullopt when every
    /// connection is in use. Never waits for another user and never retries: it may ping an
    /// idle connection, or make one connect attempt (throwing connect_error if it fails).
    [[nodiscard]] std::optional<lease> try_acquire() {
        return checkout(deadline{opts_.acquire_timeout}, /*may_wait=*/false);
    }

    /// Opens connections until options::min_idle are open, now. Throws connect_error if one
    /// cannot be opened within options::acquire_timeout.
    void warm_up() { top_up(/*rethrow=*/true); }

    /// Applies idle_timeout, max_lifetime, leak detection and min_idle now. Connect failures
    /// while topping up are counted and reported as events, not thrown.
    void housekeep() noexcept {
        std::vector<std::unique_ptr<slot>> doomed;
        std::vector<event> leaks;
        std::uint64_t forks = 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            notice_fork_locked();
            forks = take_forks_locked();
            if (closed_) {
                announce(forks);
                return;
            }
            const auto now = detail::cheap_now<Clock>();
            scan_leaks_locked(now, leaks);
            // Oldest idle first; keep min_idle open.
            for (std::size_t i = 0; i < idle_.size();) {
                slot* s = idle_[i];
                close_reason why = close_reason::none;
                if (now >= s->expires) {
                    why = close_reason::max_lifetime;
                } else if (opts_.idle_timeout.count() > 0 && all_.size() > opts_.min_idle &&
                           idle_since(*s, now) >= opts_.idle_timeout) {
                    why = close_reason::idle_timeout;
                }
                if (why == close_reason::none) {
                    ++i;
                    continue;
                }
                idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(i));
                s->close_why = why;
                doomed.push_back(remove_locked(s));
            }
        }
        announce(forks);
        flush(leaks);
        destroy(std::move(doomed));
        top_up(/*rethrow=*/false);
    }

    /// Closes the pool: every waiter wakes with pool_closed, idle connections close now, leases
    /// given back later close then, and any later acquire throws pool_closed. Idempotent.
    void close() noexcept {
        std::vector<std::unique_ptr<slot>> doomed;
        std::unique_ptr<std::thread> housekeeper;
        std::uint64_t forks = 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            const bool was_open = !closed_;
            closed_ = true; // first: a child closing its inherited pool starts no housekeeper
            notice_fork_locked();
            forks = take_forks_locked();
            if (was_open) {
                for (slot* s : idle_) {
                    s->close_why = close_reason::pool_closed;
                    doomed.push_back(remove_locked(s));
                }
                idle_.clear();
                for (waiter* w : waiters_) {
                    w->cv.notify_one();
                }
                wakeup_.notify_all();
            }
            // Called on the housekeeping thread itself (from on_event), the thread is left for
            // the destructor to join: it returns once it sees closed_.
            if (housekeeper_ && housekeeper_->get_id() != std::this_thread::get_id()) {
                housekeeper = std::move(housekeeper_);
            }
        }
        if (housekeeper) {
            housekeeper->join();
        }
        announce(forks);
        destroy(std::move(doomed));
    }

    // --- snapshot and restore ----------------------------------------------------------------
    // A process restored from a memory snapshot (AWS Lambda SnapStart, a VM or container
    // checkpoint) finds its connections' sockets dead or, worse, shared with every other copy
    // restored from the same snapshot; its clocks may have jumped; and every copy holds the same
    // random number generator state. Before the snapshot: close_idle(). After the restore:
    // after_restore(). A forked child needs none of this: the pool notices fork() by itself.

    /// Closes every idle connection now, politely (each backend's goodbye, bounded like any
    /// close). Call it before a snapshot, so the server frees the slots at once instead of
    /// keeping them until its idle timeout. Leases are untouched. close_reason::drained.
    void close_idle() noexcept { close_all_idle(close_reason::drained); }

    /// Forgets every connection without sending anything on its socket (the peer is gone, or
    /// shared with other restored copies; nothing may block on it): idle connections at once,
    /// leased ones when given back, and connects under way when they finish. Each is counted
    /// and reported closed with close_reason::abandoned; the traits' abandon() (if any) makes
    /// its destruction silent. Later acquires open new connections.
    void abandon_connections() noexcept { close_all_idle(close_reason::abandoned); }

    /// The world changed under the pool (a snapshot restore, a VM migration): reseeds the
    /// jitter generator, so that copies restored from one snapshot do not back off or expire in
    /// lockstep, and stops trusting the timestamps it kept. Every kept connection is pinged at
    /// its next checkout whatever its idle time, its idle clock restarts now (a monotonic clock
    /// that jumped could make it look fresh or ancient), and its lifetime ends no later than a
    /// new jittered max_lifetime from now.
    void world_changed() noexcept {
        const auto fresh_seed = seed();
        std::lock_guard<std::mutex> lock(mutex_);
        rng_.seed(fresh_seed);
        ++world_epoch_;
        fleet_capacity_known_ = false; // the server's limits are read again at the next sample
        const auto now = detail::cheap_now<Clock>();
        const auto wall = detail::cheap_now<wall_clock>();
        for (const auto& p : all_) {
            slot* s = p.get();
            if (s->idle) {
                s->last_used = now;
                s->last_used_wall = wall;
                s->expires = std::min(s->expires, expiry_locked(now));
            } else {
                // A lease's use time and leak clock restart too; its lifetime is cut at
                // give-back (settle_locked), since its holder may be reading it now.
                s->leased_at = now;
            }
        }
    }

    /// After a snapshot restore: abandon_connections(), then world_changed().
    void after_restore() noexcept {
        abandon_connections();
        world_changed();
    }

    /// A consistent snapshot of gauges and counters.
    [[nodiscard]] pool_stats stats() const {
        pool_stats s;
        std::uint64_t forks = 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            // In a child after fork(), every call shows the child's pool, this one included:
            // forgetting the parent's connections is bookkeeping, not an observable change.
            auto* self = const_cast<basic_pool*>(this);
            self->notice_fork_locked();
            forks = self->take_forks_locked();
            s = stats_;
            s.open = all_.size();
            s.idle = idle_.size();
            s.in_use = all_.size() - idle_.size();
            s.waiting = waiters_.size();
            s.connecting = connecting_;
            s.max_size = opts_.max_size;
        }
        announce(forks);
        return s;
    }

    [[nodiscard]] const options& get_options() const noexcept { return opts_; }

    /// The target as Traits::describe() gave it: for logs, without secrets.
    [[nodiscard]] const std::string& target() const noexcept { return target_; }

private:
    using ms = std::chrono::milliseconds;

    struct slot {
        std::unique_ptr<connection_type> conn;
        std::uint64_t id = 0;
        std::uint64_t fork_epoch = 0;
        std::size_t index = 0; // position in all_, for O(1) removal
        time_point expires = time_point::max();
        time_point last_used{};
        wall_time_point last_used_wall{};
        time_point leased_at{};
        wall_time_point leased_at_wall{}; // the wall clock read at checkout, for give_back()
        std::chrono::microseconds acquire_wait{0}; // how long the lease's acquire took
        std::uint64_t abandon_epoch = 0;           // abandon_connections() calls when it was opened
        std::uint64_t world_epoch = 0;             // world_changed() calls when it was last checked
        bool idle = false;                         // in idle_
        bool leak_reported = false;
        close_reason close_why = close_reason::none;
    };

    // A caller queued in acquire(). It lives on that caller's stack; whoever serves it does so
    // under the lock and notifies its own condition variable, so wakeups go first come, first
    // served and to exactly one thread.
    struct waiter {
        std::condition_variable cv;
        slot* handed = nullptr;   // a connection given to it directly
        bool may_connect = false; // a unit of capacity reserved for it to connect with
        time_point since{};       // when it started waiting, by Clock
    };

    // When acquire() started needing the clock; read lazily so the warm path reads none. An
    // absolute deadline (acquire_until) is started from the outset.
    struct deadline {
        ms timeout;
        bool hard = false; // acquire_until(): no ping, connect or pause may end after `at`
        bool started = false;
        time_point start{};
        time_point at{};

        explicit deadline(ms t) noexcept : timeout(t) {}

        // Time left at `now`, in whole milliseconds (zero or less: none).
        ms left(time_point now) const noexcept {
            return now >= at ? ms{0} : std::chrono::duration_cast<ms>(at - now);
        }

        time_point get() {
            if (!started) {
                started = true;
                start = Clock::now();
                at = saturating_add(start, timeout);
            }
            return at;
        }
    };

    static deadline absolute(time_point at) {
        deadline dl{ms{0}};
        dl.hard = true;
        dl.started = true;
        dl.start = Clock::now();
        dl.at = at;
        dl.timeout = dl.left(dl.start);
        return dl;
    }

    static options validated(options o) {
        o.validate();
        if (o.reset_on_release && !detail::has_reset<Traits>::value) {
            throw std::invalid_argument(
                "warmpool::options::reset_on_release is on, but these traits have no reset(): "
                "turn it off, or give the traits a reset() (see warmpool/traits.hpp)");
        }
        // Past about 100 years a duration means "no limit"; clamped once here, every later
        // conversion to the clocks' nanoseconds and every deadline stays far from overflow.
        for (options::duration* d :
             {&o.acquire_timeout, &o.handoff_after, &o.validation_window, &o.validation_timeout,
              &o.socket_check_after, &o.idle_timeout, &o.max_lifetime, &o.connect_backoff_base,
              &o.connect_backoff_cap, &o.leak_threshold, &o.housekeeping_interval,
              &o.fleet.sample_interval, &o.fleet.capacity_ttl, &o.fleet.reap_idle_after}) {
            *d = std::min(*d, options::forever);
        }
        return o;
    }

    // options::fleet needs the traits' fleet_sample(), and a backend that has a server to share.
    void check_fleet_support() const {
        if (!opts_.fleet.enabled) {
            return;
        }
        if constexpr (!detail::has_fleet_sample<Traits>::value) {
            throw std::invalid_argument(
                "warmpool::options::fleet.enabled is on, but these traits have no "
                "fleet_sample(): turn it off, or give the traits one (see warmpool/traits.hpp)");
        } else if constexpr (detail::has_fleet_unsupported<Traits>::value) {
            const std::string why = Traits::fleet_unsupported(config_);
            if (!why.empty()) {
                throw std::invalid_argument("warmpool::options::fleet.enabled is on, but " + why);
            }
        }
    }

    static std::uint_fast32_t seed() noexcept {
        try {
            return std::random_device{}();
        } catch (...) {
            return static_cast<std::uint_fast32_t>(
                std::chrono::system_clock::now().time_since_epoch().count());
        }
    }

    // t + d, or time_point::max() where that would overflow; d is compared in milliseconds,
    // so converting it to the clock's finer unit happens only once it is known to fit.
    static time_point saturating_add(time_point t, ms d) noexcept {
        if (d.count() <= 0) {
            return t;
        }
        // A clock whose readings are negative (a test's, or one with a late epoch) leaves
        // max() - t out of range, while t + d, with d at most options::forever, fits.
        if (t.time_since_epoch().count() >= 0 &&
            d >= std::chrono::duration_cast<ms>(time_point::max() - t)) {
            return time_point::max();
        }
        return t + std::chrono::duration_cast<typename Clock::duration>(d);
    }

    template <class D>
    static std::chrono::microseconds micros(D d) noexcept {
        return std::chrono::duration_cast<std::chrono::microseconds>(d);
    }

    template <class D>
    static long long millis(D d) noexcept {
        return static_cast<long long>(std::chrono::duration_cast<ms>(d).count());
    }

    // Idle time on the monotonic clock: what closes a connection for idle_timeout.
    static ms idle_since(const slot& s, time_point now) noexcept {
        return std::chrono::duration_cast<ms>(now - s.last_used);
    }

    // The larger of monotonic and wall-clock idle time, for deciding whether to ping: a process
    // frozen while the monotonic clock stood still (a paused VM, a suspended laptop) still shows
    // its real idle time on the wall clock, and a wall clock stepped backwards still leaves the
    // monotonic one. A wall-clock step can only cause a ping, never a close.
    // A wall clock more than validation_window behind the last use was stepped back (during the
    // idle time or the lease): it can no longer show a freeze, so the connection counts as idle
    // long enough for a ping. Less than that is the two coarse clocks ticking apart (give-back
    // derives the last use's wall time from the monotonic clock), not a step.
    ms suspect_idle(const slot& s, time_point now, wall_time_point wall) const noexcept {
        const auto walled = std::chrono::duration_cast<ms>(wall - s.last_used_wall);
        if (walled < -opts_.validation_window) {
            return options::forever;
        }
        return std::max(idle_since(s, now), walled);
    }

    // --- checkout ----------------------------------------------------------------------------

    std::optional<lease> checkout(deadline dl, bool may_wait) {
        std::unique_lock<std::mutex> lock(mutex_);
        if (fork_epoch_seen() != fork_epoch_) { // rare: announced at once, whatever comes next
            forget_parent_locked();
            const auto forks = take_forks_locked();
            lock.unlock();
            announce(forks);
            lock.lock();
        }
        if (opts_.leak_threshold.count() > 0) {
            std::vector<event> leaks;
            scan_leaks_locked(detail::cheap_now<Clock>(), leaks);
            if (!leaks.empty()) {
                lock.unlock();
                flush(leaks);
                lock.lock();
            }
        }
        bool waited = false;
        if (closed_) {
            throw pool_closed("warmpool: acquire on a closed pool (" + target_ + ")");
        }
        slot* s = nullptr; // stays null when this caller is to connect a new one
        // An idle connection with callers queued exists only while the oldest of them has
        // waited less than handoff_after (see hand_over_locked): a newcomer may take it.
        if (!idle_.empty()) {
            s = idle_.back(); // most recently used: the warmest connection
            idle_.pop_back();
        } else if (waiters_.empty() && capacity_used_locked() < opts_.max_size) {
            ++connecting_;
        } else if (!may_wait) {
            return std::nullopt;
        } else {
            waited = true;
            s = wait_locked(lock, dl);
        }
        time_point now{};
        bool distrust = false; // world_changed() since it was last checked
        if (s != nullptr) {
            now = detail::cheap_now<Clock>();
            s->leased_at = now;
            s->idle = false;
            distrust = s->world_epoch != world_epoch_;
            s->world_epoch = world_epoch_;
            ++stats_.acquired;
        }
        lock.unlock();

        if (s != nullptr) {
            const close_reason bad = check(*s, now, dl, distrust);
            if (bad == close_reason::none) {
                acquired(*s, dl, waited);
                return lease(this, s);
            }
            if (bad == no_time_to_check) {
                unlease_unchecked(s, distrust);
                throw_late(dl, " The deadline left no time to validate the idle connection "
                               "(a ping takes up to validation_timeout, " +
                                   std::to_string(opts_.validation_timeout.count()) + " ms).");
            }
            // The caller never sees a dead connection: close it and connect a replacement
            // with the same unit of capacity, so no one queued behind can take it.
            discard_and_reconnect(s, bad);
            if (may_wait) {
                give_up_if_late(dl, " The idle connection failed its check after the deadline "
                                    "had passed, so no replacement was opened; keep "
                                    "validation_timeout (" +
                                        std::to_string(opts_.validation_timeout.count()) +
                                        " ms) well below the acquire timeout.");
            }
        } else if (waited) {
            give_up_if_late(dl, " Room to connect came free only after the deadline.");
        }
        // try_acquire() never waits, so it never backs off to retry either: one attempt.
        slot* fresh = connect_with_retry(dl, may_wait ? opts_.connect_attempts : 1);
        acquired(*fresh, dl, waited);
        return lease(this, fresh);
    }

    // No ping or connect starts after the deadline: so acquire() overruns its timeout by the one
    // call under way at the deadline, never by two. Called holding a unit of capacity for a
    // connect, which it gives back before throwing.
    void give_up_if_late(deadline& dl, const std::string& why) {
        if (!dl.started || Clock::now() <= dl.at) {
            return;
        }
        release_capacity();
        throw_late(dl, why);
    }

    [[noreturn]] void throw_late(const deadline& dl, const std::string& why) {
        std::string message;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            ++stats_.timeouts;
            message = timeout_message_locked(dl.timeout);
        }
        throw acquire_timeout(message + why);
    }

    // An idle connection taken for a checkout that ran out of time before it could be checked:
    // it goes back untouched, as if never taken.
    void unlease_unchecked(slot* s, bool distrust) noexcept {
        std::unique_ptr<slot> doomed;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            --stats_.acquired;
            if (distrust) {
                s->world_epoch = world_epoch_ - 1; // still to be pinged at its next checkout
            }
            if (closed_ || abandoned_locked(*s)) {
                s->close_why =
                    abandoned_locked(*s) ? close_reason::abandoned : close_reason::pool_closed;
                doomed = remove_locked(s);
            } else {
                hand_over_locked(s, detail::cheap_now<Clock>());
            }
        }
        destroy_one(std::move(doomed));
    }

    // close_idle() and abandon_connections(): every idle connection closed for `why` (closed
    // silently by destroy_one() when abandoned). Abandoning also marks every connection open or
    // connecting now, so that leases and connects under way are forgotten when they come back.
    void close_all_idle(close_reason why) noexcept {
        std::vector<std::unique_ptr<slot>> doomed;
        std::uint64_t forks = 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            notice_fork_locked();
            forks = take_forks_locked();
            if (why == close_reason::abandoned) {
                abandon_epoch_.store(abandon_epoch_.load(std::memory_order_relaxed) + 1,
                                     std::memory_order_relaxed);
            }
            for (slot* s : idle_) {
                s->close_why = why;
                doomed.push_back(remove_locked(s));
            }
            idle_.clear();
        }
        announce(forks);
        destroy(std::move(doomed));
    }

    // The connection was open when abandon_connections() last ran: it must be forgotten, not
    // kept, used or closed with a goodbye. Checked wherever a connection is kept or closed.
    bool abandoned_locked(const slot& s) const noexcept {
        return s.abandon_epoch != abandon_epoch_.load(std::memory_order_relaxed);
    }

    // Blocks until this caller is handed a connection (returned), is granted capacity to connect
    // (nullptr), the pool closes (throws pool_closed) or the deadline passes (throws
    // acquire_timeout).
    slot* wait_locked(std::unique_lock<std::mutex>& lock, deadline& dl) {
        waiter w;
        waiters_.push_back(&w);
        const auto until = dl.get();
        w.since = dl.start;
        while (w.handed == nullptr && !w.may_connect && !closed_) {
            if (!idle_.empty() && waiters_.front() == &w) {
                // Woken by hand_over_locked for a connection it left in the pool; a newcomer
                // may have been quicker, in which case this caller waits on, still first.
                waiters_.pop_front();
                w.handed = idle_.back();
                idle_.pop_back();
                wake_front_for_idle_locked(); // two came back at once: the next takes the other
                break;
            }
            if (Clock::now() >= until) {
                std::string message = timeout_message_locked(dl.timeout); // counts this waiter
                remove_waiter_locked(&w);
                wake_front_for_idle_locked(); // the next in line may take it now
                ++stats_.timeouts;
                note_wait_locked(dl);
                throw acquire_timeout(message);
            }
            detail::wait_until<Clock>(w.cv, lock, until);
        }
        if (w.handed == nullptr && !w.may_connect) {
            remove_waiter_locked(&w);
            throw pool_closed("warmpool: the pool was closed while waiting for a connection to " +
                              target_);
        }
        // Served waiters were already dequeued by whoever served them.
        note_wait_locked(dl);
        return w.handed;
    }

    void note_wait_locked(deadline& dl) {
        const auto waited = micros(Clock::now() - dl.start);
        ++stats_.waits;
        stats_.wait_time_total += waited;
        stats_.wait_time_max = std::max(stats_.wait_time_max, waited);
    }

    void remove_waiter_locked(waiter* w) {
        const auto it = std::find(waiters_.begin(), waiters_.end(), w);
        if (it != waiters_.end()) {
            waiters_.erase(it);
        }
        if (closed_ && waiters_.empty()) {
            wakeup_.notify_all(); // the destructor waits for the last woken waiter to leave
        }
    }

    // What check() answers when a ping was due but the deadline left no time for one: the
    // connection is neither trusted nor condemned (never counted or reported as a close).
    static constexpr close_reason no_time_to_check = static_cast<close_reason>(0xff);

    // Runs outside the lock on a connection taken from the idle list. Cheap checks first: the
    // expiry and the backend's local state cost nothing, the socket poll one system call, the
    // ping a round trip, bounded by validation_timeout and by what is left of the deadline.
    // `distrust`: world_changed() was called since the connection was last checked, so its
    // idle time means nothing and it is pinged.
    close_reason check(slot& s, time_point now, deadline& dl, bool distrust) noexcept {
        const auto wall = detail::cheap_now<wall_clock>();
        s.leased_at_wall = wall;
        if (now >= s.expires) {
            return close_reason::max_lifetime;
        }
        if (opts_.idle_timeout.count() > 0 && idle_since(s, now) >= opts_.idle_timeout) {
            return close_reason::idle_timeout;
        }
        const ms idle = suspect_idle(s, now, wall);
        connection_type& c = *s.conn;
        bool dead = Traits::is_broken(c);
        bool must_ping = distrust || idle >= opts_.validation_window;
        const char* what = "the backend reported the connection broken";
        if (!dead && idle >= opts_.socket_check_after) {
            switch (detail::to_peer_state(Traits::peer_closed(c))) {
            case peer_state::closed:
                dead = true;
                what = "the server closed the connection while it was idle";
                break;
            case peer_state::unsure:
                must_ping = true; // the socket shows something only a round trip can tell
                break;
            case peer_state::open:
                break;
            }
        }
        if (!dead && must_ping) {
            // The acquire deadline runs from here at the latest: a replacement connect after a
            // failed ping gets only what is left of it.
            (void)dl.get();
            ms budget = opts_.validation_timeout;
            if (dl.hard) {
                budget = std::min(budget, dl.left(Clock::now()));
                if (budget.count() <= 0) {
                    return no_time_to_check;
                }
            }
            count([](pool_stats& st) { ++st.pings; });
            if (!Traits::ping(c, budget)) {
                dead = true;
                what = "the ping failed or timed out";
            }
        }
        if (!dead) {
            return close_reason::none;
        }
        count([](pool_stats& st) { ++st.validation_failures; });
        emit({event_type::validation_failed, s.id, close_reason::validation_failed, micros(idle),
              what});
        return close_reason::validation_failed;
    }

    // The acquire's duration goes into pool_stats::acquire_time when the lease comes back,
    // under the lock give-back takes anyway: recording it now would cost the warm path a lock.
    // A checkout that neither waited, pinged nor connected read no clock and counts as 0.
    void acquired(slot& s, deadline& dl, bool waited) noexcept {
        s.acquire_wait =
            (waited || dl.started) ? micros(Clock::now() - dl.start) : std::chrono::microseconds{0};
        if (opts_.on_event) {
            emit({event_type::acquired, s.id, close_reason::none, s.acquire_wait, {}});
        }
    }

    // A connection that failed its checkout check is closed; its capacity turns into a connect
    // for the same caller.
    void discard_and_reconnect(slot* s, close_reason why) {
        std::unique_ptr<slot> doomed;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            --stats_.acquired; // it was never handed out
            s->close_why = abandoned_locked(*s) ? close_reason::abandoned : why;
            doomed = remove_locked(s);
            --closing_; // the unit passes straight to this caller's connect
            ++connecting_;
        }
        destroy_one(std::move(doomed), /*free_capacity=*/false);
    }

    // Called holding one unit of capacity (counted in connecting_). Opens a connection with
    // full-jitter backoff on transient failures, making at most `max_attempts` attempts (0 = as
    // many as the deadline allows); on giving up, frees the capacity for the next waiter and
    // throws.
    slot* connect_with_retry(deadline& dl, unsigned max_attempts) {
        std::unique_ptr<slot> fresh;
        try {
            fresh = std::make_unique<slot>();
        } catch (...) {
            release_capacity();
            throw;
        }
        std::unique_ptr<connection_type> conn;
        std::string last_error;
        unsigned attempts = 0;
        const auto until = dl.get();
        std::uint64_t abandon_epoch = 0; // abandon_connections() calls when the attempt began
        std::chrono::microseconds created_in{0};
        for (;;) { // until a connection is registered
            // close() ran while this caller pinged, since it was granted room, or while the
            // connection it opened was abandoned.
            if (closed_) {
                release_capacity();
                throw pool_closed("warmpool: the pool was closed before connecting to " + target_);
            }
            for (;;) {
                if (dl.hard && dl.left(Clock::now()).count() <= 0) {
                    if (attempts == 0) {
                        release_capacity();
                        throw_late(dl, " The deadline left no time to open a connection.");
                    }
                    give_up_connect(
                        connect_failure_message(last_error, true, attempts, max_attempts, dl) +
                            " The deadline passed before another attempt could start.",
                        true);
                }
                ++attempts;
                bool transient = false;
                abandon_epoch = abandon_epoch_.load(std::memory_order_relaxed);
                const auto attempt_start = Clock::now();
                try {
                    const auto left = std::chrono::duration_cast<ms>(until - attempt_start);
                    conn = Traits::connect(config_, std::max(left, ms{1}));
                    if (!conn) {
                        throw connect_error("the backend returned no connection", false);
                    }
                    created_in = micros(Clock::now() - attempt_start);
                    break;
                } catch (const connect_error& e) {
                    transient = e.transient();
                    last_error = e.what();
                } catch (const std::exception& e) {
                    last_error = e.what();
                } catch (...) {
                    last_error = "unknown exception from the backend's connect";
                }
                {
                    std::lock_guard<std::mutex> lock(mutex_);
                    ++stats_.connect_failures;
                    last_connect_error_ = last_error;
                }
                emit({event_type::connect_failed, 0, close_reason::none,
                      micros(Clock::now() - attempt_start), last_error});

                const bool out_of_attempts = max_attempts != 0 && attempts >= max_attempts;
                if (!transient || out_of_attempts) {
                    give_up_connect(
                        connect_failure_message(last_error, transient, attempts, max_attempts, dl),
                        transient);
                }
                const auto pause = backoff(attempts);
                if (saturating_add(Clock::now(), pause) >= until) {
                    give_up_connect(
                        connect_failure_message(last_error, transient, attempts, max_attempts, dl) +
                            " The acquire deadline (" + std::to_string(dl.timeout.count()) +
                            " ms) left no time for another attempt.",
                        transient);
                }
                std::unique_lock<std::mutex> lock(mutex_);
                const auto resume = saturating_add(Clock::now(), pause);
                while (!closed_ && Clock::now() < resume) {
                    detail::wait_until<Clock>(wakeup_, lock, resume);
                }
                if (closed_) {
                    lock.unlock();
                    release_capacity();
                    throw pool_closed("warmpool: the pool was closed while connecting to " +
                                      target_);
                }
            }

            const auto now = detail::cheap_now<Clock>();
            slot* s = fresh.get();
            std::unique_ptr<slot> doomed; // opened while close() ran: counted, then closed
            std::uint64_t stale_id = 0;   // opened across abandon_connections(): forgotten
            fresh->conn = std::move(conn);
            {
                std::lock_guard<std::mutex> lock(mutex_);
                ++stats_.created;
                stats_.create_time.record(created_in);
                if (abandon_epoch != abandon_epoch_.load(std::memory_order_relaxed)) {
                    // A restore from a snapshot taken mid-connect: the socket may be dead or shared
                    // with other copies. Counted as opened and abandoned; this caller connects
                    // again at once, with the same unit of capacity: no failure of the server's.
                    stale_id = ++last_id_;
                    ++stats_.closed;
                    ++stats_.closed_abandoned;
                } else {
                    --connecting_;
                    s->id = ++last_id_;
                    s->fork_epoch = fork_epoch_;
                    s->abandon_epoch = abandon_epoch;
                    s->world_epoch = world_epoch_;
                    s->expires = expiry_locked(now);
                    s->last_used = now;
                    s->last_used_wall = detail::cheap_now<wall_clock>();
                    s->leased_at = now;
                    s->leased_at_wall = s->last_used_wall;
                    s->index = all_.size();
                    all_.push_back(std::move(fresh));
                    if (closed_) {
                        s->close_why = close_reason::pool_closed;
                        doomed = remove_locked(s);
                    } else {
                        ++stats_.acquired;
                    }
                }
            }
            if (stale_id != 0) {
                emit({event_type::connected, stale_id, close_reason::none, created_in, {}});
                forget(std::move(fresh->conn));
                emit({event_type::closed, stale_id, close_reason::abandoned, {}, {}});
                continue;
            }
            emit({event_type::connected,
                  s->id,
                  close_reason::none,
                  micros(Clock::now() - dl.start),
                  {}});
            if (doomed) {
                destroy_one(std::move(doomed)); // outside the lock, like every close
                throw pool_closed("warmpool: the pool was closed while connecting to " + target_);
            }
            return s;
        }
    }

    // Destroys a connection the pool abandons, silently where the traits know how.
    static void forget(std::unique_ptr<connection_type> conn) noexcept {
        if (!conn) {
            return;
        }
        if constexpr (detail::has_abandon<Traits>::value) {
            Traits::abandon(*conn);
        }
        conn.reset();
    }

    [[noreturn]] void give_up_connect(const std::string& message, bool transient) {
        release_capacity();
        throw connect_error(message, transient);
    }

    void release_capacity() noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        --connecting_;
        wake_next_for_capacity_locked();
    }

    std::string connect_failure_message(const std::string& last, bool transient, unsigned attempts,
                                        unsigned max_attempts, deadline& dl) const {
        std::string m = "warmpool: could not connect to " + target_ + ": " + last + " (";
        m += std::to_string(attempts) + (attempts == 1 ? " attempt" : " attempts");
        m += " in " + std::to_string(millis(Clock::now() - dl.start)) + " ms).";
        if (!transient) {
            m += " The failure is permanent, so it was not retried: check the connect string, "
                 "credentials and database name.";
        } else if (max_attempts == 1 && opts_.connect_attempts != 1) {
            m += " try_acquire() makes one attempt and never retries.";
        } else if (max_attempts != 0 && attempts >= max_attempts) {
            m += " options::connect_attempts (" + std::to_string(max_attempts) + ") reached.";
        }
        return m;
    }

    ms backoff(unsigned attempt) {
        // Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))].
        const auto base = opts_.connect_backoff_base.count();
        const auto cap = opts_.connect_backoff_cap.count();
        long long ceiling = base;
        for (unsigned i = 1; i < attempt && ceiling < cap; ++i) {
            ceiling *= 2;
        }
        ceiling = std::min<long long>(ceiling, cap);
        std::lock_guard<std::mutex> lock(mutex_);
        std::uniform_int_distribution<long long> pick(0, ceiling);
        return ms{pick(rng_)};
    }

    time_point expiry_locked(time_point now) {
        if (opts_.max_lifetime.count() <= 0) {
            return time_point::max();
        }
        // Up to 2.5% earlier, so connections opened together do not expire together.
        // In milliseconds: even options::forever times 250 fits, where nanoseconds would not.
        std::uniform_int_distribution<long long> pick(0, 250);
        const ms shave = opts_.max_lifetime * pick(rng_) / 10'000;
        return saturating_add(now, opts_.max_lifetime - shave);
    }

    // --- give back ---------------------------------------------------------------------------

    void give_back(slot* s, bool invalidate) noexcept {
        const std::uint64_t id = s->id; // s may be freed or handed on once the lock is released
        // A lease held across fork() and given back in the child: the connection is the
        // parent's. Nothing is sent on it, counted or reported; the slot is freed.
        if (s->fork_epoch != fork_epoch_seen()) {
            std::uint64_t forks = 0;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                notice_fork_locked();
                forget_inherited_locked(s);
                forks = take_forks_locked();
            }
            announce(forks);
            return;
        }
        // Otherwise the slot was made in this process after the pool's last look at the fork
        // count, which has not moved since: there is no fork to notice here.
        close_reason why = invalidate ? close_reason::invalidated : close_reason::none;
        if (s->abandon_epoch != abandon_epoch_.load(std::memory_order_relaxed)) {
            // Leased when abandon_connections() ran: not a byte more on it, rollback included.
            why = close_reason::abandoned;
        }
        release_work work = why == close_reason::none ? tidy(*s, why) : release_work{};
        std::unique_ptr<slot> doomed;
        std::chrono::microseconds held{0};
        bool leak_returned = false;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            settle_locked(s, why, work, held, leak_returned, doomed);
        }
        if (opts_.on_event) {
            if (work.rolled_back) {
                emit({event_type::rolled_back, id, why, held, {}});
            }
            if (work.reset) {
                emit({event_type::reset, id, why, held, {}});
            }
            if (leak_returned) {
                emit({event_type::leak_returned, id, close_reason::none, held, {}});
            }
            if (work.fleet) {
                emit_fleet(id, *work.fleet);
            }
            emit({event_type::released, id, close_reason::none, held, {}});
        }
        destroy_one(std::move(doomed));
    }

    // A fleet sample taken at give-back (options::fleet), and what settle_locked made of it.
    struct fleet_result {
        fleet_reading reading;
        std::chrono::microseconds took{0};
        std::size_t capacity = 0; // the binding limit (0: unknown, no decision)
        std::size_t in_use = 0;   // against it, zombies just ended excluded
        bool user_limit = false;  // the binding limit is the user's, not the server's
        bool over = false;        // at or above close_above
        bool closing = false;     // so this connection is closed (fleet_pressure)
    };

    struct release_work {
        bool rolled_back = false;
        bool reset = false;
        std::optional<fleet_result> fleet;
    };

    // Under the lock, the bookkeeping of a give-back: counts, then pools the connection (or
    // hands it to a waiter) or takes it out to be closed.
    void settle_locked(slot* s, close_reason& why, release_work& work,
                       std::chrono::microseconds& held, bool& leak_returned,
                       std::unique_ptr<slot>& doomed) {
        const auto now = detail::cheap_now<Clock>();
        held = micros(now - s->leased_at);
        stats_.acquire_time.record(s->acquire_wait);
        stats_.use_time.record(held);
        leak_returned = s->leak_reported;
        s->leak_reported = false;
        if (work.rolled_back) {
            ++stats_.rollbacks;
        }
        if (work.reset) {
            ++stats_.resets;
        }
        if (abandoned_locked(*s)) {
            why = close_reason::abandoned; // abandon_connections() ran during the give-back
        } else if (why == close_reason::none && closed_) {
            why = close_reason::pool_closed;
        } else if (why == close_reason::none && s->world_epoch != world_epoch_) {
            // world_changed() ran during the lease: its lifetime, read from a clock that may
            // have jumped, ends no later than a new one from now (it is pinged at its next
            // checkout, since its world_epoch stays behind).
            s->expires = std::min(s->expires, expiry_locked(now));
        }
        if (why == close_reason::none && now >= s->expires) {
            why = close_reason::max_lifetime;
        }
        if (work.fleet) {
            settle_fleet_locked(*work.fleet, why, now);
        }
        if (why != close_reason::none) {
            s->close_why = why;
            doomed = remove_locked(s);
            return;
        }
        s->last_used = now;
        // The wall clock read at checkout plus the monotonic time held saves a clock read. A
        // freeze during the lease can only make the next idle time look longer than it is (one
        // ping more); a wall clock stepped back during it shows at the next checkout as a wall
        // clock behind this value, which forces a ping too (suspect_idle).
        s->last_used_wall =
            s->leased_at_wall +
            std::chrono::duration_cast<typename wall_clock::duration>(now - s->leased_at);
        hand_over_locked(s, now);
    }

    // Outside the lock, on a connection given back: what must happen before anyone else may use
    // it. Sets `why` when it must be closed instead. Each step is bounded by validation_timeout,
    // so giving a lease back never blocks longer than that per round trip, even on a hung server.
    // abandon_connections() may run during any step (a restore landing mid-rollback): each step
    // after the first is skipped once it has, so nothing more is sent on the socket.
    release_work tidy(slot& s, close_reason& why) noexcept {
        connection_type& c = *s.conn;
        const auto abandoned = [&] {
            if (s.abandon_epoch == abandon_epoch_.load(std::memory_order_relaxed)) {
                return false;
            }
            why = close_reason::abandoned;
            return true;
        };
        release_work done;
        if (Traits::is_broken(c)) {
            why = close_reason::broken;
            return done;
        }
        if (Traits::in_transaction(c)) {
            // One user's unfinished transaction must never reach the next user.
            done.rolled_back = true;
            if (!Traits::rollback(c, opts_.validation_timeout)) {
                why = close_reason::broken;
                return done;
            }
        }
        if constexpr (detail::has_reset<Traits>::value) {
            if (opts_.reset_on_release && !abandoned()) {
                done.reset = true;
                if (!Traits::reset(c, config_, opts_.validation_timeout)) {
                    why = close_reason::broken;
                    return done;
                }
            }
        }
        if constexpr (detail::has_reusable<Traits>::value) {
            if (!abandoned() && !Traits::reusable(c, config_)) {
                why = close_reason::rejected_on_release;
            }
        }
        if (opts_.fleet.enabled && why == close_reason::none && !abandoned()) {
            sample_fleet(c, why, done);
        }
        return done;
    }

    // --- the fleet policy (warmpool/fleet.hpp) ------------------------------------------------

    // Outside the lock, last at give-back: on a sampled give-back, one round trip asks the
    // server how full it is (and ends zombies, when asked). Unsampled give-backs only take the
    // lock for the coin. A query that failed in a way that leaves the connection unreadable
    // (timeout, I/O error) closes it, as a failed rollback does.
    void sample_fleet(connection_type& c, close_reason& why, release_work& done) noexcept {
        if constexpr (detail::has_fleet_sample<Traits>::value) {
            fleet_request req;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                const time_point now = Clock::now();
                if (!fleet_due_locked(now)) {
                    return;
                }
                fleet_last_sample_ = now;
                fleet_sampled_ = true;
                req.with_capacity = !fleet_capacity_known_ ||
                                    now - fleet_capacity_read_ >= opts_.fleet.capacity_ttl;
                req.reap = opts_.fleet.reap;
                if (req.reap) {
                    req.reap_idle_after = opts_.fleet.reap_idle_after;
                    req.reap_max = opts_.fleet.reap_max;
                }
            }
            fleet_result r;
            const time_point start = Clock::now();
            r.reading = Traits::fleet_sample(c, config_, req, opts_.validation_timeout);
            r.took = micros(Clock::now() - start);
            if (!r.reading.ok && !r.reading.usable) {
                why = close_reason::broken;
            }
            done.fleet.emplace(std::move(r));
        } else {
            (void)c;
            (void)why;
            (void)done;
        }
    }

    // Whether this give-back samples: never within sample_interval of the last sample; always
    // the pool's first (it knows nothing yet: a cold start) and while the last sample found the
    // server at or above close_above (under pressure each give-back's slot matters, and the
    // next sample tells when it is over); otherwise a coin weighted by sample_fraction (none at
    // 1, so a fraction of 1 is deterministic).
    bool fleet_due_locked(time_point now) {
        const fleet_options& f = opts_.fleet;
        if (fleet_sampled_ && f.sample_interval.count() > 0 &&
            now - fleet_last_sample_ < f.sample_interval) {
            return false;
        }
        if (!fleet_sampled_ || fleet_pressure_ || f.sample_fraction >= 1.0) {
            return true;
        }
        std::uniform_real_distribution<double> coin(0.0, 1.0);
        return coin(rng_) < f.sample_fraction;
    }

    // Under the lock at give-back: counts the sample, refreshes the cached capacity, and closes
    // the connection when the fleet is at or above close_above of the binding limit (the
    // server's or the user's, whichever is fuller). Not when a caller waits for it: handing it
    // over takes no slot from the server, while closing it would make that caller open one.
    void settle_fleet_locked(fleet_result& r, close_reason& why, time_point now) {
        ++stats_.fleet_samples;
        if (!r.reading.ok) {
            ++stats_.fleet_sample_failures;
            return;
        }
        stats_.fleet_reaped += r.reading.reaped;
        // Limits come when asked (capacity_ttl), and whenever the traits send them anyway:
        // which of the user's limits binds can change with the counts (PostgreSQL's role and
        // database limits), so a reading's user limit goes with its own counts.
        if (r.reading.server_capacity > 0) {
            fleet_server_capacity_ = r.reading.server_capacity;
            fleet_user_capacity_ = r.reading.user_capacity;
            fleet_capacity_read_ = now;
            fleet_capacity_known_ = true;
        }
        if (!fleet_capacity_known_) {
            return; // the server's limit could not be read: no basis for a decision
        }
        // The traits' counts leave out the zombies this sample ended (fleet_reading).
        r.capacity = fleet_server_capacity_;
        r.in_use = r.reading.server_in_use;
        if (fleet_user_capacity_ > 0) {
            const std::size_t user_in_use = r.reading.user_in_use;
            // user_in_use / user_cap > in_use / capacity, without division.
            if (static_cast<double>(user_in_use) * static_cast<double>(r.capacity) >
                static_cast<double>(r.in_use) * static_cast<double>(fleet_user_capacity_)) {
                r.capacity = fleet_user_capacity_;
                r.in_use = user_in_use;
                r.user_limit = true;
            }
        }
        stats_.fleet_capacity = r.capacity;
        stats_.fleet_in_use = r.in_use;
        r.over = static_cast<double>(r.in_use) >=
                 opts_.fleet.close_above * static_cast<double>(r.capacity);
        fleet_pressure_ = r.over;
        if (r.over && why == close_reason::none && waiters_.empty()) {
            why = close_reason::fleet_pressure;
            r.closing = true;
        }
    }

    void emit_fleet(std::uint64_t id, const fleet_result& r) const noexcept {
        try {
            if (!r.reading.ok) {
                // The traits' text says whether the connection can be kept (fleet_reading).
                const std::string text = "the fleet sample failed: " + r.reading.error;
                emit({event_type::fleet_sample_failed, id, close_reason::none, r.took, text});
                return;
            }
            std::string text;
            if (r.capacity == 0) {
                text = "server connections: " + std::to_string(r.reading.server_in_use) +
                       " in use, limit unknown: no decision";
            } else {
                const auto percent = r.in_use * 100 / r.capacity;
                text = "connections: " + std::to_string(r.in_use) + " in use of " +
                       std::to_string(r.capacity) + " (" + std::to_string(percent) + "%, " +
                       (r.user_limit ? "the user's limit" : "the server's limit") + ")";
            }
            if (r.reading.reaped > 0) {
                text += "; ended " + std::to_string(r.reading.reaped) + " zombie connection" +
                        (r.reading.reaped == 1 ? "" : "s");
            }
            if (!r.reading.reap_error.empty()) {
                text += "; zombies not ended: " + r.reading.reap_error;
            }
            if (r.capacity != 0) {
                const auto threshold = static_cast<long>(opts_.fleet.close_above * 100.0 + 0.5);
                text += r.closing ? "; at or above fleet.close_above (" +
                                        std::to_string(threshold) + "%): this connection is closed"
                        : r.over ? "; at or above fleet.close_above (" + std::to_string(threshold) +
                                       "%), but a caller is waiting for this connection: kept"
                                 : "; kept";
            }
            emit({event_type::fleet_sampled, id, close_reason::none, r.took, text});
        } catch (...) {
            // Out of memory for the message: the event is dropped, the pool carries on.
        }
    }

    // A connection becomes free. A caller that has waited handoff_after or longer gets it
    // directly, first come, first served. Below that it goes back on top of the idle stack (most
    // recently used last, so checkout takes the warmest) and the longest waiter is woken to take
    // it, unless a running thread takes it first: handing every connection to a sleeping thread
    // would cost a wakeup per checkout whenever callers outnumber connections, while a bounded
    // head start keeps the wait of the longest waiter within about handoff_after.
    void hand_over_locked(slot* s, time_point now) {
        if (!waiters_.empty()) {
            waiter* w = waiters_.front();
            if (opts_.handoff_after.count() == 0 ||
                Clock::now() - w->since >= opts_.handoff_after) {
                waiters_.pop_front();
                s->leased_at = now;
                s->idle = false;
                w->handed = s;
                w->cv.notify_one();
                wake_front_for_idle_locked(); // another may be idle, left for this one
                return;
            }
            w->cv.notify_one(); // the connection goes to idle_ below: the front waiter takes it
        }
        s->idle = true;
        idle_.push_back(s);
    }

    // Keeps one promise: while a connection is idle and callers are queued, the longest waiter
    // has been woken to take it. Called wherever either list changes; a waiter that takes one
    // calls it again, so two connections given back at once wake two waiters, not one.
    void wake_front_for_idle_locked() {
        if (!idle_.empty() && !waiters_.empty()) {
            waiters_.front()->cv.notify_one();
        }
    }

    // Open connections, connects in progress and closes in progress: what the server may see.
    std::size_t capacity_used_locked() const noexcept {
        return all_.size() + connecting_ + closing_;
    }

    // Capacity became free (a connection closed or a connect gave up): the longest waiter may
    // connect with it.
    void wake_next_for_capacity_locked() {
        if (closed_ || waiters_.empty() || capacity_used_locked() >= opts_.max_size) {
            return;
        }
        waiter* w = waiters_.front();
        waiters_.pop_front();
        ++connecting_;
        w->may_connect = true;
        w->cv.notify_one();
    }

    // --- bookkeeping -------------------------------------------------------------------------

    // Takes a slot out of all_ and counts the close. The caller closes the connection
    // outside the lock with destroy_one(), which frees its unit of capacity only once the
    // connection is gone, so the server never sees more than max_size of the pool's connections.
    std::unique_ptr<slot> remove_locked(slot* s) {
        std::unique_ptr<slot> out = take_locked(s);
        ++stats_.closed;
        switch (out->close_why) {
        case close_reason::idle_timeout:
            ++stats_.closed_idle_timeout;
            break;
        case close_reason::max_lifetime:
            ++stats_.closed_max_lifetime;
            break;
        case close_reason::validation_failed:
            ++stats_.closed_validation_failed;
            break;
        case close_reason::broken:
            ++stats_.closed_broken;
            break;
        case close_reason::invalidated:
            ++stats_.closed_invalidated;
            break;
        case close_reason::rejected_on_release:
            ++stats_.closed_rejected_on_release;
            break;
        case close_reason::abandoned:
            ++stats_.closed_abandoned;
            break;
        case close_reason::drained:
            ++stats_.closed_drained;
            break;
        case close_reason::fleet_pressure:
            ++stats_.closed_fleet_pressure;
            break;
        case close_reason::pool_closed:
        case close_reason::none:
            ++stats_.closed_pool_closed;
            break;
        }
        ++closing_;
        return out;
    }

    // A lease held across fork() came back in the child: free the slot, and leak the parent's
    // connection object on purpose, since destroying it would send a goodbye on the parent's
    // socket.
    void forget_inherited_locked(slot* s) noexcept {
        const auto it = std::find_if(inherited_.begin(), inherited_.end(),
                                     [s](const std::unique_ptr<slot>& p) { return p.get() == s; });
        if (it != inherited_.end()) {
            (void)(*it)->conn.release();
            inherited_.erase(it);
        }
    }

    // Takes a slot out of all_ in O(1), moving the last one into its place.
    std::unique_ptr<slot> take_locked(slot* s) {
        const std::size_t i = s->index;
        std::unique_ptr<slot> out = std::move(all_[i]);
        if (i + 1 != all_.size()) {
            all_[i] = std::move(all_.back());
            all_[i]->index = i;
        }
        all_.pop_back();
        return out;
    }

    std::uint64_t fork_epoch_seen() const noexcept {
        return detail::fork_epoch.load(std::memory_order_relaxed);
    }

    // In a child process after fork(): nothing the parent had is the child's. Every connection
    // is the parent's and every waiter, connect and housekeeping thread lived in the parent. The
    // child forgets them all without destroying, counting or handing out any: idle connections
    // are leaked on the spot; slots leased out are kept aside in inherited_ (a lease the forking
    // thread holds may still be given back) and freed, their connections leaked, by give-back or
    // the destructor. The condition variable a parent thread may have been waiting on is never
    // destroyed: that would wait forever for a waiter that does not exist in this process.
    void notice_fork_locked() {
        if (fork_epoch_seen() != fork_epoch_) { // one relaxed load on every call: keep it inline
            forget_parent_locked();
        }
    }

    void forget_parent_locked() {
        fork_epoch_ = fork_epoch_seen();
        for (auto& p : all_) {
            if (p->idle) {
                (void)p->conn.release();
            } else {
                inherited_.push_back(std::move(p));
            }
        }
        all_.clear();
        idle_.clear();
        waiters_.clear();
        connecting_ = 0;
        closing_ = 0;
        ++stats_.forks;
        (void)housekeeper_.release();
        // A parent thread may have been waiting on wakeup_: destroying it would wait for that
        // thread forever. A new one is built in its storage instead, the old never destroyed.
        new (&wakeup_) std::condition_variable();
        if (opts_.background_housekeeping && !closed_) {
            housekeeper_ = std::make_unique<std::thread>([this] { housekeeping_loop(); });
        }
        ++unannounced_forks_;
    }

    void scan_leaks_locked(time_point now, std::vector<event>& out) {
        if (opts_.leak_threshold.count() <= 0) {
            return;
        }
        const auto threshold =
            std::chrono::duration_cast<typename Clock::duration>(opts_.leak_threshold);
        for (const auto& p : all_) {
            slot& s = *p;
            if (s.idle || s.leak_reported || now - s.leased_at < threshold) {
                continue;
            }
            s.leak_reported = true;
            ++stats_.leaks_suspected;
            out.push_back({event_type::leak_suspected, s.id, close_reason::none,
                           micros(now - s.leased_at), "a lease has been held past leak_threshold"});
        }
    }

    void flush(std::vector<event>& events) noexcept {
        for (const event& e : events) {
            emit(e);
        }
        events.clear();
    }

    void top_up(bool rethrow) {
        for (;;) {
            bool more = false;
            std::uint64_t forks = 0;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                notice_fork_locked();
                forks = take_forks_locked();
                more = !closed_ && all_.size() + connecting_ < opts_.min_idle &&
                       capacity_used_locked() < opts_.max_size;
                connecting_ += more ? 1 : 0;
            }
            announce(forks);
            if (closed_ && rethrow) {
                throw pool_closed("warmpool: warm_up on a closed pool (" + target_ + ")");
            }
            if (!more) {
                return;
            }
            deadline dl{opts_.acquire_timeout};
            slot* s = nullptr;
            try {
                s = connect_with_retry(dl, opts_.connect_attempts);
            } catch (...) {
                if (rethrow) {
                    throw;
                }
                return;
            }
            // The new connection counted as acquired; undo that and pool it, unless close()
            // ran meanwhile: then it closes like every other idle connection did.
            std::unique_ptr<slot> doomed;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                notice_fork_locked();
                forks = take_forks_locked();
                --stats_.acquired;
                if (s->fork_epoch != fork_epoch_) {
                    forget_inherited_locked(s); // forked while connecting: the parent's
                } else if (closed_ || abandoned_locked(*s)) {
                    s->close_why = closed_ ? close_reason::pool_closed : close_reason::abandoned;
                    doomed = remove_locked(s);
                } else {
                    hand_over_locked(s, detail::cheap_now<Clock>());
                }
            }
            announce(forks);
            destroy_one(std::move(doomed)); // the next round sees closed_ and stops
        }
    }

    template <class F>
    void count(F&& f) noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        f(stats_);
    }

    // Forks noticed under the lock are announced (event_type::forked) once it is released, by
    // whichever call noticed them: one event per fork, as pool_stats::forks counts them.
    // Reads before it writes: on the warm path there is nothing to take, and no store to make.
    std::uint64_t take_forks_locked() noexcept {
        return unannounced_forks_ == 0 ? 0 : std::exchange(unannounced_forks_, 0);
    }

    void announce(std::uint64_t forks) const noexcept {
        if (forks != 0) { // rare: kept out of line, off the warm path
            announce_slow(forks);
        }
    }

    void announce_slow(std::uint64_t forks) const noexcept {
        for (; forks > 0; --forks) {
            emit({event_type::forked, 0, close_reason::none, {}, {}});
        }
    }

    void emit(const event& e) const noexcept {
        if (!opts_.on_event) {
            return;
        }
        try {
            opts_.on_event(e);
        } catch (...) {
            // An observer must not be able to break the pool.
        }
    }

    void destroy_one(std::unique_ptr<slot> s, bool free_capacity = true) noexcept {
        if (!s) {
            return;
        }
        const auto id = s->id;
        const auto why = s->close_why;
        if (why == close_reason::abandoned) {
            forget(std::move(s->conn));
        } else {
            s->conn.reset();
        }
        if (free_capacity) {
            std::lock_guard<std::mutex> lock(mutex_);
            --closing_;
            wake_next_for_capacity_locked();
        }
        emit({event_type::closed, id, why, {}, {}});
    }

    void destroy(std::vector<std::unique_ptr<slot>> doomed) noexcept {
        for (auto& s : doomed) {
            destroy_one(std::move(s));
        }
    }

    std::string timeout_message_locked(ms timeout) const {
        std::string m = "warmpool: acquire timed out after " + std::to_string(timeout.count()) +
                        " ms waiting for a connection to " + target_ + " (open " +
                        std::to_string(all_.size()) + ", idle " + std::to_string(idle_.size()) +
                        ", in use " + std::to_string(all_.size() - idle_.size()) + ", waiting " +
                        std::to_string(waiters_.size()) + ", connecting " +
                        std::to_string(connecting_) + ", max_size " +
                        std::to_string(opts_.max_size) + ").";
        if (!last_connect_error_.empty()) {
            m += " Last connect error: " + last_connect_error_;
        }
        m += " Raise max_size or acquire_timeout, or look for leases held too long "
             "(options::leak_threshold reports them).";
        return m;
    }

    // After close(): what is left in all_ is held by leases.
    std::size_t in_use_count() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return static_cast<std::size_t>(
            std::count_if(all_.begin(), all_.end(), [](const auto& p) { return !p->idle; }));
    }

    void housekeeping_loop() noexcept {
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                const auto next = saturating_add(Clock::now(), opts_.housekeeping_interval);
                while (!closed_ && Clock::now() < next) {
                    detail::wait_until<Clock>(wakeup_, lock, next);
                }
                if (closed_) {
                    return;
                }
            }
            housekeep();
        }
    }

    const config_type config_;
    const options opts_;
    const std::string target_;

    mutable std::mutex mutex_;
    std::condition_variable wakeup_;         // close(), backoff and housekeeping waits
    std::vector<std::unique_ptr<slot>> all_; // every open connection, idle or leased
    std::vector<slot*> idle_;                // least recently used first
    std::deque<waiter*> waiters_;            // first come, first served
    std::size_t connecting_ = 0;             // capacity held by connects in progress
    std::size_t closing_ = 0;                // capacity held by closes in progress
    // Written under the lock; read without it where a stale answer only delays the outcome by
    // one step (before a connect attempt, after warm_up's connect).
    std::atomic<bool> closed_{false};
    std::uint64_t unannounced_forks_ = 0; // noticed, forked event not yet sent
    std::uint64_t last_id_ = 0;
    std::uint64_t fork_epoch_ = 0;
    std::uint64_t world_epoch_ = 0; // world_changed() calls
    // abandon_connections() calls; written under the lock, read without it at give-back and
    // after a connect.
    std::atomic<std::uint64_t> abandon_epoch_{0};
    std::string last_connect_error_;
    std::minstd_rand rng_;
    // The fleet policy's memory (options::fleet), under mutex_.
    time_point fleet_last_sample_{};
    bool fleet_sampled_ = false;
    bool fleet_pressure_ = false; // the last sample found the server at or above close_above
    time_point fleet_capacity_read_{};
    bool fleet_capacity_known_ = false;
    std::size_t fleet_server_capacity_ = 0;
    std::size_t fleet_user_capacity_ = 0;
    pool_stats stats_;
    std::unique_ptr<std::thread> housekeeper_;
    std::vector<std::unique_ptr<slot>> inherited_; // leased out when this process forked
};

} // namespace warmpool

// ---- end warmpool/pool.hpp ----

#include <cstdint>
#include <utility>

namespace warmpool {

/// Exclusive use of one pooled connection, given back when the lease is destroyed.
///
/// Move-only. Giving back never throws: an open transaction is rolled back, and a connection
/// that is broken, or whose rollback failed, is closed instead of pooled. A lease must not
/// outlive its pool.
template <class Traits, class Clock>
class basic_pool<Traits, Clock>::lease {
public:
    /// An empty lease, holding nothing.
    lease() noexcept = default;

    lease(lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)), slot_(std::exchange(other.slot_, nullptr)) {}

    lease& operator=(lease&& other) noexcept {
        if (this != &other) {
            release();
            pool_ = std::exchange(other.pool_, nullptr);
            slot_ = std::exchange(other.slot_, nullptr);
        }
        return *this;
    }

    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;

    ~lease() { release(); }

    /// The connection. The lease must not be empty.
    connection_type& operator*() const noexcept { return *slot_->conn; }
    connection_type* operator->() const noexcept { return slot_->conn.get(); }

    /// The connection, or nullptr for an empty lease.
    connection_type* get() const noexcept { return slot_ ? slot_->conn.get() : nullptr; }

    explicit operator bool() const noexcept { return slot_ != nullptr; }

    /// The pool's id for this connection (1, 2, …; as in events), or 0 for an empty lease.
    std::uint64_t connection_id() const noexcept { return slot_ ? slot_->id : 0; }

    /// Gives the connection back now; the lease becomes empty. No-op on an empty lease.
    void release() noexcept {
        if (slot_ != nullptr) {
            std::exchange(pool_, nullptr)->give_back(std::exchange(slot_, nullptr), false);
        }
    }

    /// Closes the connection instead of giving it back (after an error that may have left it in
    /// an unknown state); the pool opens a new one when needed. The lease becomes empty.
    void invalidate() noexcept {
        if (slot_ != nullptr) {
            std::exchange(pool_, nullptr)->give_back(std::exchange(slot_, nullptr), true);
        }
    }

private:
    friend class basic_pool;

    lease(basic_pool* pool, slot* s) noexcept : pool_(pool), slot_(s) {}

    basic_pool* pool_ = nullptr;
    slot* slot_ = nullptr;
};

} // namespace warmpool
// ---- end warmpool/lease.hpp ----

// ---- begin warmpool/metrics.hpp ----
// Also guarded by a macro: tools/amalgamate.py keeps it (not #pragma once), so this file and a
// single header that contains it can be included together, as the single-header tests do.
#ifndef WARMPOOL_METRICS_HPP
#define WARMPOOL_METRICS_HPP

// Pool statistics in the Prometheus text exposition format 0.0.4, named after OpenTelemetry's
// database client connection metrics (docs/metrics.md maps them to OpenTelemetry, HikariCP and
// Go's database/sql). No HTTP here: serve the text with any server (examples/metrics_endpoint/
// uses cpp-httplib), or write it to a file for node_exporter's textfile collector.
//
//     auto text = warmpool::render_prometheus({warmpool::metrics_of(orders_pool, "orders"),
//                                              warmpool::metrics_of(audit_pool, "audit")});

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace warmpool {

/// The Content-Type of a reply carrying render_prometheus()'s text.
inline constexpr std::string_view prometheus_content_type =
    "text/plain; version=0.0.4; charset=utf-8";

/// Extra labels put on every series of one pool, in this order: {"service", "billing"}, ...
using metrics_labels = std::vector<std::pair<std::string, std::string>>;

/// One pool's part of a scrape: its statistics and the labels that tell it apart.
struct metrics_source {
    /// The pool_name label (OpenTelemetry's pool name attribute). Must not be empty, and no two
    /// sources of one scrape may share both pool_name and labels.
    std::string pool_name;
    /// Names match [a-zA-Z_][a-zA-Z0-9_]*, do not start with "__" and are none of the labels the
    /// families use themselves (pool_name, state, reason, le, quantile). Values are any UTF-8.
    metrics_labels labels;
    pool_stats stats;
    /// options::min_idle, which pool_stats does not carry (db_client_connection_idle_min).
    std::size_t idle_min = 0;
};

/// Throws std::invalid_argument naming the pool and the label when `source` cannot be rendered:
/// an empty pool name, a label name that is malformed, reserved or given twice, or a value that
/// is not UTF-8. render_prometheus() checks every source anyway; call it to fail early.
inline void validate(const metrics_source& source);

/// A snapshot of `pool` (basic_pool::stats() and get_options()) labelled `pool_name`.
/// Throws std::invalid_argument as validate() does.
template <class Pool>
metrics_source metrics_of(const Pool& pool, std::string pool_name, metrics_labels labels = {}) {
    metrics_source source;
    source.pool_name = std::move(pool_name);
    source.labels = std::move(labels);
    source.stats = pool.stats();
    source.idle_min = pool.get_options().min_idle;
    validate(source);
    return source;
}

/// The sources in the Prometheus text format 0.0.4: each metric family once, with its # HELP
/// and # TYPE lines and then the samples of every source. Checks every source first (throws
/// std::invalid_argument as validate() does, and for two sources with the same labels), so a
/// bad source yields an exception rather than a scrape the server rejects. Durations are in
/// seconds, written in decimal from whole microseconds, so the server reads the double nearest
/// to the exact value. Independent of the global and the C locale. No sources: empty text.
inline std::string render_prometheus(const std::vector<metrics_source>& sources);

/// render_prometheus(), written to `out` (nothing is written when it throws).
inline void write_prometheus(std::ostream& out, const std::vector<metrics_source>& sources);

namespace detail::prometheus {

// Text building: std::to_chars and hand-made decimals, never iostreams or printf, so that no
// locale can put a comma in a number.
inline void append_uint(std::string& out, std::uint64_t v) {
    char buffer[24] = {};
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, v);
    out.append(buffer, result.ptr);
}

inline std::uint64_t magnitude(std::int64_t v) noexcept {
    return v < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
}

// Whole microseconds as seconds in plain decimal, trailing zeros dropped: 2500000 -> "2.5",
// 25 -> "0.000025", 0 -> "0". Exact, so a parser gets the double nearest the true value.
inline void append_seconds(std::string& out, std::chrono::microseconds d) {
    if (d.count() < 0) {
        out += '-';
    }
    const std::uint64_t us = magnitude(d.count());
    append_uint(out, us / 1'000'000);
    std::uint64_t fraction = us % 1'000'000;
    if (fraction == 0) {
        return;
    }
    char digits[6];
    for (int i = 5; i >= 0; --i) {
        digits[i] = static_cast<char>('0' + fraction % 10);
        fraction /= 10;
    }
    std::size_t n = 6;
    while (digits[n - 1] == '0') {
        --n;
    }
    out += '.';
    out.append(digits, n);
}

// A bucket bound as Go's strconv.FormatFloat(v, 'g', -1, 64) writes it, which is what
// client_golang and the Python client put in `le`: "1e-05", "2.5e-05", "0.0001", "1", "10".
// `le` is compared as a string when series are matched, so the same bound must be spelled the
// same way as other exporters spell it. Positive bounds only.
inline void append_bound(std::string& out, std::chrono::microseconds bound) {
    std::uint64_t us = magnitude(bound.count());
    if (us == 0) {
        out += '0';
        return;
    }
    int trailing_zeros = 0;
    while (us % 10 == 0) {
        us /= 10;
        ++trailing_zeros;
    }
    char digits[24] = {}; // initialised: g++ 12 -O2 sees a maybe-uninitialized read otherwise
    const auto result = std::to_chars(digits, digits + sizeof digits, us);
    const int n = static_cast<int>(result.ptr - digits);
    // The value is digits * 10^(trailing_zeros - 6); Go switches to an exponent below 1e-4 and
    // at 1e6 and above when printing the shortest representation.
    const int exponent = n - 1 + trailing_zeros - 6;
    if (exponent >= -4 && exponent < 6) {
        append_seconds(out, bound);
        return;
    }
    out += digits[0];
    if (n > 1) {
        out += '.';
        out.append(digits + 1, result.ptr);
    }
    out += exponent < 0 ? "e-" : "e+";
    const int e = exponent < 0 ? -exponent : exponent;
    if (e < 10) {
        out += '0';
    }
    append_uint(out, static_cast<std::uint64_t>(e));
}

// A label value: backslash, double quote and line feed escaped, as the format requires.
inline void append_label_value(std::string& out, std::string_view value) {
    for (const char c : value) {
        switch (c) {
        case '\\':
            out += "\\\\";
            break;
        case '"':
            out += "\\\"";
            break;
        case '\n':
            out += "\\n";
            break;
        default:
            out += c;
        }
    }
}

inline bool is_label_name(std::string_view name) noexcept {
    if (name.empty()) {
        return false;
    }
    const auto letter = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    };
    if (!letter(name[0]) && name[0] != '_') {
        return false;
    }
    return std::all_of(name.begin() + 1, name.end(),
                       [&](char c) { return letter(c) || (c >= '0' && c <= '9') || c == '_'; });
}

// The labels the families set themselves (pool_name, state, reason, le), and quantile, which a
// summary of the same name would use: a user label of that name would clash with them.
inline bool is_reserved_label(std::string_view name) noexcept {
    return name == "pool_name" || name == "state" || name == "reason" || name == "le" ||
           name == "quantile" || name.substr(0, 2) == "__";
}

// Well-formed UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF): the format is
// UTF-8, and one bad byte makes the server reject the whole scrape.
inline bool is_utf8(std::string_view s) noexcept {
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t length = 0;
        unsigned char low = 0x80, high = 0xBF; // allowed range of the second byte
        if (c >= 0xC2 && c <= 0xDF) {
            length = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            length = 3;
            low = c == 0xE0 ? 0xA0 : 0x80;
            high = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            length = 4;
            low = c == 0xF0 ? 0x90 : 0x80;
            high = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return false;
        }
        if (s.size() - i < length) {
            return false;
        }
        for (std::size_t k = 1; k < length; ++k) {
            const auto next = static_cast<unsigned char>(s[i + k]);
            if (next < (k == 1 ? low : 0x80) || next > (k == 1 ? high : 0xBF)) {
                return false;
            }
        }
        i += length;
    }
    return true;
}

[[noreturn]] inline void reject(const metrics_source& source, const std::string& why) {
    throw std::invalid_argument("warmpool metrics: pool \"" + source.pool_name + "\": " + why);
}

// Every series of one source starts with the same labels: `{pool_name="orders",shard="3"`.
inline std::string series_labels(const metrics_source& source) {
    std::string labels = "{pool_name=\"";
    append_label_value(labels, source.pool_name);
    labels += '"';
    for (const auto& [name, value] : source.labels) {
        labels += ',';
        labels += name;
        labels += "=\"";
        append_label_value(labels, value);
        labels += '"';
    }
    return labels;
}

// Writes each family once, then its samples for every source, as the format requires.
class writer {
public:
    explicit writer(const std::vector<metrics_source>& sources) : sources_(sources) {
        prefixes_.reserve(sources.size());
        for (const auto& source : sources) {
            prefixes_.push_back(series_labels(source));
        }
    }

    std::string take() { return std::move(out_); }

    void family(std::string_view name, std::string_view type, std::string_view help) {
        if (sources_.empty()) {
            return;
        }
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        out_ += help; // written by this file: no backslash or line feed to escape
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }

    // One sample per source; value(source) gives an unsigned integer.
    template <class Value>
    void samples(std::string_view name, Value value) {
        for (std::size_t i = 0; i < sources_.size(); ++i) {
            sample_start(name, i);
            out_ += "} ";
            append_uint(out_, static_cast<std::uint64_t>(value(sources_[i])));
            out_ += '\n';
        }
    }

    // One family-specific label: name{...,label="value"} number.
    void labelled(std::string_view name, std::size_t source, std::string_view label,
                  std::string_view value, std::uint64_t number) {
        sample_start(name, source);
        out_ += ',';
        out_ += label;
        out_ += "=\"";
        append_label_value(out_, value);
        out_ += "\"} ";
        append_uint(out_, number);
        out_ += '\n';
    }

    template <class Value>
    void seconds_samples(std::string_view name, Value value) {
        for (std::size_t i = 0; i < sources_.size(); ++i) {
            sample_start(name, i);
            out_ += "} ";
            append_seconds(out_, value(sources_[i]));
            out_ += '\n';
        }
    }

    // Cumulative buckets, _sum and _count, per source. The +Inf bucket and _count are the sum of
    // the buckets (not latency_histogram::count), so the buckets stay monotonic and +Inf equals
    // _count whatever a hand-made pool_stats holds.
    // A sum that sticks at the largest value instead of wrapping: buckets must never decrease.
    static std::uint64_t saturating_sum(std::uint64_t a, std::uint64_t b) noexcept {
        return b > UINT64_MAX - a ? UINT64_MAX : a + b;
    }

    void histogram(std::string_view name, latency_histogram pool_stats::*member) {
        std::array<std::string, latency_histogram::bucket_count> bounds;
        for (std::size_t b = 0; b < bounds.size(); ++b) {
            append_bound(bounds[b], latency_histogram::upper_bounds[b]);
        }
        const std::string bucket = std::string(name) + "_bucket";
        for (std::size_t i = 0; i < sources_.size(); ++i) {
            const latency_histogram& h = sources_[i].stats.*member;
            std::uint64_t cumulative = 0;
            for (std::size_t b = 0; b < latency_histogram::bucket_count; ++b) {
                cumulative = saturating_sum(cumulative, h.counts[b]);
                labelled(bucket, i, "le", bounds[b], cumulative);
            }
            cumulative = saturating_sum(cumulative, h.counts[latency_histogram::bucket_count]);
            labelled(bucket, i, "le", "+Inf", cumulative);
            sample_start(std::string(name) + "_sum", i);
            out_ += "} ";
            append_seconds(out_, h.sum);
            out_ += '\n';
            sample_start(std::string(name) + "_count", i);
            out_ += "} ";
            append_uint(out_, cumulative);
            out_ += '\n';
        }
    }

private:
    void sample_start(std::string_view name, std::size_t source) {
        out_ += name;
        out_ += prefixes_[source];
    }

    const std::vector<metrics_source>& sources_;
    std::vector<std::string> prefixes_;
    std::string out_;
};

struct closed_counter {
    close_reason reason;
    std::uint64_t pool_stats::*count;
};

// Every close_reason but none, each with its pool_stats counter. The label value is
// to_string(reason), the same word the closed event carries. tests/unit/test_metrics.cpp fails
// when a reason is missing here.
inline constexpr closed_counter closed_counters[] = {
    {close_reason::idle_timeout, &pool_stats::closed_idle_timeout},
    {close_reason::max_lifetime, &pool_stats::closed_max_lifetime},
    {close_reason::validation_failed, &pool_stats::closed_validation_failed},
    {close_reason::broken, &pool_stats::closed_broken},
    {close_reason::invalidated, &pool_stats::closed_invalidated},
    {close_reason::pool_closed, &pool_stats::closed_pool_closed},
    {close_reason::rejected_on_release, &pool_stats::closed_rejected_on_release},
    {close_reason::abandoned, &pool_stats::closed_abandoned},
    {close_reason::drained, &pool_stats::closed_drained},
    {close_reason::fleet_pressure, &pool_stats::closed_fleet_pressure},
};

// Two sources with the same pool_name and the same labels (in any order) would write the same
// series twice, which the server rejects. A label with an empty value is no label to
// Prometheus, so it is left out of the comparison: {shard=""} and no shard label collide.
inline void reject_duplicates(const std::vector<metrics_source>& sources) {
    std::vector<std::pair<metrics_labels, std::size_t>> keys;
    keys.reserve(sources.size());
    for (std::size_t i = 0; i < sources.size(); ++i) {
        metrics_labels key;
        for (const auto& label : sources[i].labels) {
            if (!label.second.empty()) {
                key.push_back(label);
            }
        }
        key.emplace_back("pool_name", sources[i].pool_name);
        std::sort(key.begin(), key.end());
        keys.emplace_back(std::move(key), i);
    }
    std::sort(keys.begin(), keys.end());
    for (std::size_t i = 1; i < keys.size(); ++i) {
        if (keys[i].first == keys[i - 1].first) {
            const auto first = std::min(keys[i - 1].second, keys[i].second);
            const auto second = std::max(keys[i - 1].second, keys[i].second);
            reject(sources[second], "sources " + std::to_string(first) + " and " +
                                        std::to_string(second) +
                                        " have the same pool_name and labels; give each pool a "
                                        "name or label of its own");
        }
    }
}

} // namespace detail::prometheus

inline void validate(const metrics_source& source) {
    namespace p = detail::prometheus;
    if (source.pool_name.empty()) {
        throw std::invalid_argument(
            "warmpool metrics: pool_name is empty; name the pool, e.g. after its database");
    }
    if (!p::is_utf8(source.pool_name)) {
        p::reject(source, "the pool name is not valid UTF-8");
    }
    for (std::size_t i = 0; i < source.labels.size(); ++i) {
        const std::string& name = source.labels[i].first;
        if (!p::is_label_name(name)) {
            p::reject(source, "label name \"" + name +
                                  "\" is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)");
        }
        if (p::is_reserved_label(name)) {
            p::reject(source, "label name \"" + name +
                                  "\" is reserved (pool_name, state, reason, le, quantile and "
                                  "names starting with __ are set by warmpool or Prometheus); "
                                  "choose another name");
        }
        for (std::size_t k = 0; k < i; ++k) {
            if (source.labels[k].first == name) {
                p::reject(source, "label name \"" + name + "\" is given twice");
            }
        }
        if (!p::is_utf8(source.labels[i].second)) {
            p::reject(source, "the value of label \"" + name + "\" is not valid UTF-8");
        }
    }
}

inline std::string render_prometheus(const std::vector<metrics_source>& sources) {
    namespace p = detail::prometheus;
    for (const auto& source : sources) {
        validate(source);
    }
    p::reject_duplicates(sources);

    p::writer w(sources);
    using source = metrics_source;

    // OpenTelemetry's db.client.connection.* instruments first. Its count would be
    // db_client_connection_count, a suffix Prometheus keeps for histograms and summaries:
    // it is db_client_connection_open here.
    w.family("db_client_connection_open", "gauge",
             "Open connections by state: idle (in the pool) or used (held by a lease).");
    for (std::size_t i = 0; i < sources.size(); ++i) {
        w.labelled("db_client_connection_open", i, "state", "idle", sources[i].stats.idle);
        w.labelled("db_client_connection_open", i, "state", "used", sources[i].stats.in_use);
    }
    w.family("db_client_connection_max", "gauge",
             "Most connections the pool opens at once (options::max_size).");
    w.samples("db_client_connection_max", [](const source& s) { return s.stats.max_size; });
    w.family("db_client_connection_idle_max", "gauge",
             "Most idle connections the pool keeps: max_size, since a connection given back "
             "stays until idle_timeout.");
    w.samples("db_client_connection_idle_max", [](const source& s) { return s.stats.max_size; });
    w.family("db_client_connection_idle_min", "gauge",
             "Idle connections housekeeping keeps open (options::min_idle).");
    w.samples("db_client_connection_idle_min", [](const source& s) { return s.idle_min; });
    w.family("db_client_connection_pending_requests", "gauge",
             "Callers waiting in acquire() for a connection.");
    w.samples("db_client_connection_pending_requests",
              [](const source& s) { return s.stats.waiting; });
    w.family("db_client_connection_timeouts_total", "counter",
             "acquire() calls that gave up and threw acquire_timeout.");
    w.samples("db_client_connection_timeouts_total",
              [](const source& s) { return s.stats.timeouts; });
    w.family("db_client_connection_create_time_seconds", "histogram",
             "Time to open one connection, setup included (successful connects only).");
    w.histogram("db_client_connection_create_time_seconds", &pool_stats::create_time);
    w.family("db_client_connection_wait_time_seconds", "histogram",
             "Time acquire() took to hand out a lease (queueing, validation and connecting), "
             "recorded when the lease is given back.");
    w.histogram("db_client_connection_wait_time_seconds", &pool_stats::acquire_time);
    w.family("db_client_connection_use_time_seconds", "histogram",
             "Time from checkout to give-back, per lease.");
    w.histogram("db_client_connection_use_time_seconds", &pool_stats::use_time);

    // warmpool's own, in the same style.
    w.family("db_client_connection_connecting", "gauge", "Connects in progress.");
    w.samples("db_client_connection_connecting",
              [](const source& s) { return s.stats.connecting; });
    w.family("db_client_connection_acquired_total", "counter", "Leases handed out.");
    w.samples("db_client_connection_acquired_total",
              [](const source& s) { return s.stats.acquired; });
    w.family("db_client_connection_created_total", "counter", "Connections opened.");
    w.samples("db_client_connection_created_total",
              [](const source& s) { return s.stats.created; });
    w.family("db_client_connection_closed_total", "counter", "Connections closed, by reason.");
    for (std::size_t i = 0; i < sources.size(); ++i) {
        for (const auto& closed : p::closed_counters) {
            w.labelled("db_client_connection_closed_total", i, "reason", to_string(closed.reason),
                       sources[i].stats.*closed.count);
        }
    }
    w.family("db_client_connection_connect_failures_total", "counter",
             "Failed connect attempts, each retry counted.");
    w.samples("db_client_connection_connect_failures_total",
              [](const source& s) { return s.stats.connect_failures; });
    w.family("db_client_connection_validation_failures_total", "counter",
             "Idle connections found dead at checkout by the socket check or a ping.");
    w.samples("db_client_connection_validation_failures_total",
              [](const source& s) { return s.stats.validation_failures; });
    w.family("db_client_connection_pings_total", "counter", "Validation round trips.");
    w.samples("db_client_connection_pings_total", [](const source& s) { return s.stats.pings; });
    w.family("db_client_connection_rollbacks_total", "counter",
             "Transactions left open by a lease and rolled back at give-back.");
    w.samples("db_client_connection_rollbacks_total",
              [](const source& s) { return s.stats.rollbacks; });
    w.family("db_client_connection_resets_total", "counter",
             "Sessions reset at give-back (options::reset_on_release).");
    w.samples("db_client_connection_resets_total", [](const source& s) { return s.stats.resets; });
    w.family("db_client_connection_leaks_suspected_total", "counter",
             "Leases held longer than options::leak_threshold.");
    w.samples("db_client_connection_leaks_suspected_total",
              [](const source& s) { return s.stats.leaks_suspected; });
    w.family("db_client_connection_queued_total", "counter",
             "acquire() calls that queued for a connection another caller held.");
    w.samples("db_client_connection_queued_total", [](const source& s) { return s.stats.waits; });
    w.family("db_client_connection_queued_seconds_total", "counter",
             "Time acquire() calls spent queued for a connection another caller held.");
    w.seconds_samples("db_client_connection_queued_seconds_total",
                      [](const source& s) { return s.stats.wait_time_total; });
    w.family("db_client_connection_queued_max_seconds", "gauge",
             "Longest time one acquire() call spent queued, over the pool's life.");
    w.seconds_samples("db_client_connection_queued_max_seconds",
                      [](const source& s) { return s.stats.wait_time_max; });
    w.family("db_client_connection_forks_total", "counter",
             "fork()s noticed; the child drops the connections it inherited.");
    w.samples("db_client_connection_forks_total", [](const source& s) { return s.stats.forks; });
    w.family("db_client_connection_fleet_samples_total", "counter",
             "Give-backs that asked the server how full it is (options::fleet).");
    w.samples("db_client_connection_fleet_samples_total",
              [](const source& s) { return s.stats.fleet_samples; });
    w.family("db_client_connection_fleet_sample_failures_total", "counter",
             "Fleet samples whose query failed or timed out.");
    w.samples("db_client_connection_fleet_sample_failures_total",
              [](const source& s) { return s.stats.fleet_sample_failures; });
    w.family("db_client_connection_fleet_reaped_total", "counter",
             "Zombie connections of the same application ended by fleet samples.");
    w.samples("db_client_connection_fleet_reaped_total",
              [](const source& s) { return s.stats.fleet_reaped; });
    w.family("db_client_connection_fleet_server_in_use", "gauge",
             "Server connections in use at the last fleet sample, against the binding limit.");
    w.samples("db_client_connection_fleet_server_in_use",
              [](const source& s) { return s.stats.fleet_in_use; });
    w.family("db_client_connection_fleet_server_capacity", "gauge",
             "The binding connection limit at the last fleet sample (server's or user's); 0 "
             "before the first.");
    w.samples("db_client_connection_fleet_server_capacity",
              [](const source& s) { return s.stats.fleet_capacity; });
    return w.take();
}

inline void write_prometheus(std::ostream& out, const std::vector<metrics_source>& sources) {
    const std::string text = render_prometheus(sources);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
}

} // namespace warmpool

#endif // WARMPOOL_METRICS_HPP
// ---- end warmpool/metrics.hpp ----
// ---- end warmpool/warmpool.hpp ----

#if !defined(WARMPOOL_WITH_SOCI) && defined(__has_include)
#if __has_include(<soci/soci.h>) && __has_include(<soci/soci-config.h>)
#include <soci/soci-config.h>
#if !defined(SOCI_HAVE_BOOST) || __has_include(<boost/version.hpp>)
#define WARMPOOL_WITH_SOCI 1
#endif
#endif
#endif

#if defined(WARMPOOL_WITH_SOCI) && WARMPOOL_WITH_SOCI

// ---- begin warmpool/soci.hpp ----

// The SOCI adapter: warmpool::soci_pool, a pool of soci::session.
//
//   warmpool::soci_pool pool("postgresql://dbname=app user=app");
//   auto sql = pool.acquire();
//   *sql << "insert into t values (1)";
//
// This file holds the configuration (soci_config) and the traits (soci_traits), which dispatch
// on the session's backend. What each backend's native checks do lives in its own header,
// warmpool/soci/postgresql.hpp, mysql.hpp and sqlite3.hpp, with the compile-time switch that
// decides how they reach the client library.
//
// Native checks, per backend
// --------------------------
// Knowing whether a transaction is open, whether the server closed the socket, and pinging or
// rolling back within a deadline needs the backend's client library (libpq, MariaDB Connector/C
// (libmariadb, which serves MySQL servers too), libsqlite3). One macro per backend decides how it
// is reached:
//
//   WARMPOOL_SOCI_POSTGRESQL, WARMPOOL_SOCI_MYSQL, WARMPOOL_SOCI_SQLITE3
//     undefined  detected: compiled in when the backend's SOCI header and the client library's
//                header are on the include path (libpq-fe.h: -I/usr/include/postgresql;
//                mysql.h: -I/usr/include/mariadb); the client library's functions are then
//                found at run time in the process, which loaded it with SOCI's backend, so the
//                program links SOCI and nothing more. Sessions open through SOCI's dynamic
//                backend loader.
//     =1         compiled in and called directly: link the backend (soci_postgresql, …) and its
//                client library (pq, mariadb, sqlite3). Sessions open through the backend's
//                static factory. The CMake target warmpool::soci defines =1 for the backends
//                it links.
//     =0         left out: the portable fallback below, chosen knowingly.
//   WARMPOOL_SOCI_<BACKEND>_NATIVE tells the outcome: 1 linked, 2 found at run time, 0 none.
//
// One program, one mode: the outcome for each backend is part of the adapter's names (inline
// namespaces), so translation units compiled with different include paths or macros link to
// different code, each keeping what it was compiled with, and a pool passed between them fails
// to link instead of silently taking either behaviour.
//
// Failing early instead of degrading silently: a soci_config naming postgresql, mysql or sqlite3
// whose checks are not compiled in (headers not found, macro not =0) throws
// std::invalid_argument from its constructor, saying which header is missing and what to do. A
// connect whose session's client library functions cannot be found at run time fails with a
// permanent connect_error saying so.
//
// Why run-time lookup works: by the time a check runs, a session of that backend exists, so SOCI
// has loaded its backend and the client library with it. SOCI's loader opens them RTLD_LOCAL,
// which hides them from dlsym(RTLD_DEFAULT); warmpool/detail/loaded_library.hpp finds the loaded
// object by name instead. Each backend's table of function pointers is filled once (a
// function-local static, thread-safe), and the same code calls through it whether the table
// holds the linked addresses (=1) or the ones found (undefined).
//
// With native checks, per give-back and checkout (details in each backend's header):
//   is_broken, in_transaction   local (PQstatus / PQtransactionStatus, the server-status flag,
//                               sqlite3_get_autocommit): no round trip.
//   peer_closed                 one poll() of the socket (SQLite: false).
//   ping, rollback, reset       one round trip each (MariaDB's reset: two or three), sent and
//                               awaited non-blocking: bounded by the timeout the pool passes
//                               (validation_timeout) even when the server hangs. SQLite runs
//                               them in process. A timed-out call leaves the connection to be
//                               closed, which does not block either.
//
// The portable fallback
// ---------------------
// For backends without native checks (odbc, oracle, firebird, …, or one set to =0) only SOCI's
// own calls are used, and none of them may hang the pool, so it never sends a ping:
//   is_broken, peer_closed  true only when the session was closed through SOCI
//                           (session::close()); nothing else is known locally.
//   ping                    no round trip: reports the session alive unless SOCI knows it is
//                           closed. So a connection the server closed or a hung server IS
//                           handed out; the first statement on it fails (or blocks as long as
//                           the backend's own timeouts allow).
//   in_transaction          true: it cannot tell, so every give-back rolls back.
//   rollback                session::rollback(): one round trip per give-back, and the one call
//                           here that NO timeout bounds (a give-back can block on a hung server
//                           for as long as the backend's socket timeouts allow: by default,
//                           without end). SQLite's "no transaction is active" counts as success.
//   reset                   false: a reset cannot be bounded, so with options::reset_on_release
//                           every give-back closes the session and the next lease connects anew.
//
// soci_config::on_release (reusable()) and on_connect work the same with or without native
// checks.
//
// fork(): a child process never uses nor closes a session inherited from its parent (the pool
// releases it unclosed, see warmpool/traits.hpp), so nothing is sent on the parent's socket and
// no SQLite handle is shared across processes. The child opens its own connections.

// ---- begin warmpool/detail/soci_connect_string.hpp ----

// Reading and redacting SOCI connect strings ("backend://parameters"), for warmpool/soci.hpp.
// Plain string work, no SOCI types, so it is testable on its own.
//
// Secrets are found in these spellings, in any letter case:
//   keyword form   password=secret  pass='a b'  pwd = "x y"  user='u'password=x
//   ODBC           DSN=d;UID=u;PWD={a;b}}c};Encrypt=yes         ("}}" stands for "}")
//   URI userinfo   postgresql://user:secret@host/db            (also bare: user:secret@host/db)
//   URI query      postgresql://host/db?user=u&password=secret  (also ?%70assword=secret)
// A keyword holds a secret when its name says so (is_secret_keyword): password, PWD, pass,
// sslpassword, PWD2, oauth_client_secret, AccessToken, …
//
// Redaction errs on the side of hiding too much. What stands before a keyword tells which
// parsers may read its value (libpq and SOCI after a blank, the start or a quoted value; ODBC
// after ';' or at the start; a URI query after '?' or '&'). Each reads it its own way, and the
// value is hidden as far as the longest reading reaches:
//   libpq, SOCI   '…' or "…" (backslash escapes) to the closing quote; unquoted to a blank (a
//                 backslash keeps one), so "PWD=secret;UID=u" hides ";UID=u" too
//   ODBC          {…} to the closing brace; unbraced to ';', blanks included
//   URI query     to the next '&'
//   URI userinfo  from the first ':' after "//" (or the start of bare parameters) to the last '@'
// A reading must end unambiguously: at the end of the string, or where the parser's separator
// is followed by a keyword some backend knows and '='. Otherwise it runs to the end of the
// string: "password=top secret host=h" (libpq rejects it, quoting "secret"), "PWD=a;b=c;UID=u",
// "password='a b'c", an unterminated quote.

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace warmpool {
namespace detail {
namespace soci_cs {

using span = std::pair<std::size_t, std::size_t>; // [first, last) of a secret value

constexpr std::size_t npos = std::string_view::npos;

inline bool is_space(char c) noexcept {
    return std::isspace(static_cast<unsigned char>(c)) != 0;
}

inline char lower(char c) noexcept {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

/// Lower-case copy, for matching error texts.
inline std::string to_lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), lower);
    return out;
}

inline bool istarts_with(std::string_view s, std::size_t at, std::string_view prefix) noexcept {
    if (at > s.size() || s.size() - at < prefix.size()) {
        return false;
    }
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        if (lower(s[at + i]) != lower(prefix[i])) {
            return false;
        }
    }
    return true;
}

/// A keyword may start at the beginning, after whitespace, or after a separator of the URI query
/// or ODBC forms.
inline bool keyword_boundary(std::string_view s, std::size_t at) noexcept {
    if (at == 0) {
        return true;
    }
    const char c = s[at - 1];
    return is_space(c) || c == ';' || c == '?' || c == '&';
}

/// If `key` starts at `at` as a keyword followed by `=` (spaces allowed around it), the position
/// of its value; npos otherwise.
inline std::size_t keyword_value_at(std::string_view s, std::size_t at,
                                    std::string_view key) noexcept {
    if (!keyword_boundary(s, at) || !istarts_with(s, at, key)) {
        return npos;
    }
    std::size_t i = at + key.size();
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    if (i >= s.size() || s[i] != '=') {
        return npos;
    }
    ++i;
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    return i;
}

/// A character of a keyword's name, as any of the parsers spells one; '%' for the
/// percent-encoded names libpq accepts in a URI query.
inline bool is_name_char(char c) noexcept {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-' || c == '.' ||
           c == '%';
}

inline int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    const char l = lower(c);
    return l >= 'a' && l <= 'f' ? l - 'a' + 10 : -1;
}

/// `s` with every %XX decoded (a '%' not followed by two hex digits is kept).
inline std::string percent_decode(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() && hex_digit(s[i + 1]) >= 0 &&
            hex_digit(s[i + 2]) >= 0) {
            out += static_cast<char>(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
            i += 2;
        } else {
            out += s[i];
        }
    }
    return out;
}

inline bool ends_with(std::string_view s, std::string_view suffix) noexcept {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

/// True when a keyword named `name` holds a secret: its name, trailing digits aside and
/// percent-encoding decoded, contains "password", "passwd", "passphrase", "secret", "token",
/// "credential" or names an API, access or private key, or it ends in "pwd", "pass" or "pw".
/// Over-broad on purpose ("bypass" counts): a false match only hides a value.
inline bool is_secret_keyword(std::string_view name) {
    std::string n = to_lower(percent_decode(name));
    while (!n.empty() && std::isdigit(static_cast<unsigned char>(n.back())) != 0) {
        n.pop_back();
    }
    static constexpr std::string_view inside[] = {
        "password", "passwd",    "passphrase", "secret",  "token",    "credential", "apikey",
        "api_key",  "accesskey", "access_key", "privkey", "priv_key", "privatekey", "private_key"};
    static constexpr std::string_view endings[] = {"pwd", "pass", "pw"};
    return std::any_of(std::begin(inside), std::end(inside),
                       [&](std::string_view w) { return n.find(w) != std::string::npos; }) ||
           std::any_of(std::begin(endings), std::end(endings),
                       [&](std::string_view w) { return ends_with(n, w); });
}

/// True for the name of a keyword some backend knows (libpq; SOCI's MySQL, SQLite, Oracle,
/// Firebird and DB2 backends; common ODBC attributes), in any letter case. A word after a
/// password that is no such keyword may be the rest of the password.
inline bool is_known_keyword(std::string_view name) {
    static constexpr std::string_view known[] = {
        // libpq
        "host", "hostaddr", "port", "dbname", "user", "passfile", "channel_binding",
        "connect_timeout", "client_encoding", "options", "application_name",
        "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "replication", "gssencmode", "sslmode",
        "sslnegotiation", "requiressl", "sslcompression", "sslcert", "sslkey", "sslcertmode",
        "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer", "require_auth",
        "ssl_min_protocol_version", "ssl_max_protocol_version", "min_protocol_version",
        "max_protocol_version", "krbsrvname", "gsslib", "gssdelegation", "service",
        "target_session_attrs", "load_balance_hosts", "oauth_issuer", "oauth_client_id",
        "oauth_scope", "ssl", "password", "sslpassword", "oauth_client_secret",
        // SOCI MySQL, SQLite, Oracle, Firebird, DB2
        "db", "database", "pass", "pwd", "unix_socket", "sslca", "local_infile", "charset",
        "reconnect", "read_timeout", "write_timeout", "timeout", "synchronous", "shared_cache",
        "vfs", "readonly", "nocreate", "foreign_keys", "mode", "decimals_as_strings", "ncharset",
        "role", "autocommit",
        // ODBC: the Driver Manager's and common drivers' attributes
        "dsn", "uid", "driver", "server", "filedsn", "savefile", "trusted_connection", "encrypt",
        "trustservercertificate", "app", "wsid", "language", "address", "network", "option",
        "servername", "protocol", "logintimeout", "authentication", "applicationintent",
        "multisubnetfailover", "sslverify", "ssl_ca", "ssl_cert", "ssl_key", "ssl_mode", "initstmt",
        "socket", "no_ssps"};
    const std::string n = to_lower(percent_decode(name));
    return std::find(std::begin(known), std::end(known), n) != std::end(known);
}

/// True when a known keyword and `=` start at `at` (blanks allowed before the `=`).
inline bool known_keyword_at(std::string_view s, std::size_t at) {
    std::size_t i = at;
    while (i < s.size() && is_name_char(s[i])) {
        ++i;
    }
    if (i == at || !is_known_keyword(s.substr(at, i - at))) {
        return false;
    }
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    return i < s.size() && s[i] == '=';
}

/// The parsers that may read a secret's value, judged by what stands before its keyword.
struct value_context {
    bool libpq = false; // libpq and SOCI's keyword=value form: the keyword follows a blank, the
                        // start, or a quoted value ("user='u'password=x" is two keywords)
    bool odbc = false;  // ODBC: the keyword follows ';' (blanks allowed) or starts the string
    bool query = false; // a URI query: the keyword follows '?' or '&'
};

inline value_context context_of(std::string_view s, std::size_t name) noexcept {
    value_context c;
    if (name > 0 && (s[name - 1] == '?' || s[name - 1] == '&')) {
        c.query = true;
        return c;
    }
    std::size_t i = name;
    while (i > 0 && is_space(s[i - 1])) {
        --i;
    }
    // At the start, only where the string has a ';': a single ODBC attribute is no connect
    // string, and reading "password=x host=h" as one would hide "host=h".
    c.odbc = i == 0 ? s.find(';') != npos : s[i - 1] == ';';
    // Right after ';' libpq would not see a keyword here at all, but a piece of another value.
    c.libpq = name == 0 || s[name - 1] != ';';
    return c;
}

/// True when a libpq value that ends at `k` ends unambiguously: at the end of `s`, or (after
/// blanks, or directly after a quoted value) at the end or before a known keyword and '='.
inline bool libpq_ends_cleanly(std::string_view s, std::size_t k) {
    while (k < s.size() && is_space(s[k])) {
        ++k;
    }
    return k >= s.size() || known_keyword_at(s, k);
}

/// True when an ODBC value that ends at `k` ends unambiguously: at the end of `s` (blanks
/// aside), or at a ';' followed by the end or another attribute, "name=". After an unbraced
/// value the name must be a known keyword: "PWD=a;b=c" may be a password "a;b=c" written
/// without the braces it needs. After a braced one, whose braces show that the writer knew
/// ';' ends the value, any name will do.
inline bool odbc_ends_cleanly(std::string_view s, std::size_t k, bool braced) {
    while (k < s.size() && is_space(s[k])) {
        ++k;
    }
    if (k >= s.size()) {
        return true;
    }
    if (s[k] != ';') {
        return false;
    }
    ++k;
    while (k < s.size() && is_space(s[k])) {
        ++k;
    }
    if (k >= s.size()) {
        return true;
    }
    if (!braced) {
        return known_keyword_at(s, k);
    }
    const std::size_t name = k;
    while (k < s.size() && is_name_char(s[k])) {
        ++k;
    }
    while (k < s.size() && is_space(s[k])) {
        ++k;
    }
    return k > name && k < s.size() && s[k] == '=';
}

/// True when a URI query value that ends at `k` ends unambiguously: at the end of `s`, or at an
/// '&' followed by a known keyword and '='.
inline bool query_ends_cleanly(std::string_view s, std::size_t k) {
    return k >= s.size() || (s[k] == '&' && known_keyword_at(s, k + 1));
}

/// Where a value quoted with `open` ('\'' or '"', backslash escapes) starting at `v` closes:
/// the position after the closing quote, or npos when it does not close.
inline std::size_t after_closing_quote(std::string_view s, std::size_t v, char open) noexcept {
    std::size_t k = v + 1;
    while (k < s.size() && s[k] != open) {
        k += s[k] == '\\' ? 2 : 1;
    }
    return k < s.size() ? k + 1 : npos;
}

/// Where the secret value starting at `v` ends, at the latest: each parser `c` allows reads it,
/// a reading that does not end cleanly runs to the end of `s`, and the longest reading wins.
inline std::size_t secret_end(std::string_view s, std::size_t v, value_context c) {
    const std::size_t n = s.size();
    std::size_t end = v;
    const auto reading = [&](std::size_t k, bool clean) {
        end = std::max(end, k != npos && k <= n && clean ? k : n);
    };
    const char open = v < n ? s[v] : '\0';
    const bool quote = open == '\'' || open == '"';
    if (c.query) {
        if (quote) {
            const std::size_t k = after_closing_quote(s, v, open);
            reading(k, k != npos && query_ends_cleanly(s, k));
        }
        const std::size_t amp = std::min(s.find('&', v), n);
        reading(amp, query_ends_cleanly(s, amp));
    }
    if (c.libpq) {
        if (quote) {
            const std::size_t k = after_closing_quote(s, v, open);
            reading(k, k != npos && libpq_ends_cleanly(s, k));
        } else {
            std::size_t k = v;
            while (k < n && !is_space(s[k])) {
                k += s[k] == '\\' ? 2 : 1;
            }
            k = std::min(k, n);
            reading(k, libpq_ends_cleanly(s, k));
        }
    }
    if (c.odbc) {
        if (open == '{') {
            std::size_t k = v + 1;
            while (k < n && !(s[k] == '}' && (k + 1 >= n || s[k + 1] != '}'))) {
                k += s[k] == '}' ? 2 : 1;
            }
            reading(k < n ? k + 1 : npos, k < n && odbc_ends_cleanly(s, k + 1, true));
        } else {
            const std::size_t semi = std::min(s.find(';', v), n);
            reading(semi, odbc_ends_cleanly(s, semi, false));
        }
    }
    return end;
}

/// True when `s` starts (after blanks) with `identifier =`: libpq's and SOCI's keyword/value
/// form, as opposed to a URI such as "user:secret@host/db".
inline bool starts_with_keyword(std::string_view s) noexcept {
    std::size_t i = 0;
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    const std::size_t name = i;
    while (i < s.size() &&
           (std::isalnum(static_cast<unsigned char>(s[i])) != 0 || s[i] == '_' || s[i] == '-')) {
        ++i;
    }
    if (i == name) {
        return false;
    }
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    return i < s.size() && s[i] == '=';
}

/// True when `s` starts with a URI scheme and "://".
inline bool starts_with_scheme(std::string_view s) noexcept {
    std::size_t i = 0;
    while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) != 0 || s[i] == '+' ||
                            s[i] == '-' || s[i] == '.')) {
        ++i;
    }
    return i > 0 && s.substr(i, 3) == "://";
}

/// True when connect parameters may be a URI without its scheme ("user:secret@host/db"): they
/// are neither keyword=value pairs nor a URI with a scheme. Whatever the backend: any of them
/// may be handed such a string.
inline bool looks_like_bare_uri(std::string_view s) noexcept {
    return !s.empty() && !starts_with_keyword(s) && !starts_with_scheme(s);
}

/// The password in a URI's userinfo, "user:secret@", for the authority starting at
/// `authority`: from the first ':' to the last '@' of `s`, so that a password holding an
/// unescaped '@', '/' or blank is still hidden whole.
inline void find_userinfo_secret(std::string_view s, std::size_t authority,
                                 std::vector<span>& out) {
    const std::size_t at = s.rfind('@');
    if (at == npos || at < authority) {
        return;
    }
    const std::size_t colon = s.find(':', authority);
    if (colon == npos || colon > at) {
        return;
    }
    out.emplace_back(colon + 1, at);
}

/// Every secret value in `s`, in order, not overlapping. `bare_uri`: `s` may itself be a URI
/// without its scheme (the parameters of "postgresql://user:secret@host/db").
inline std::vector<span> find_secrets(std::string_view s, bool bare_uri) {
    std::vector<span> out;
    if (bare_uri && !starts_with_scheme(s)) {
        find_userinfo_secret(s, 0, out);
    }
    for (std::size_t scheme = s.find("://"); scheme != npos; scheme = s.find("://", scheme + 3)) {
        find_userinfo_secret(s, scheme + 3, out);
    }
    // Every '=' whose keyword names a secret, wherever it stands (also inside other values, or
    // right after a quote): finding too many only hides more.
    for (std::size_t eq = s.find('='); eq != npos; eq = s.find('=', eq + 1)) {
        std::size_t name_end = eq;
        while (name_end > 0 && is_space(s[name_end - 1])) {
            --name_end;
        }
        std::size_t name = name_end;
        while (name > 0 && is_name_char(s[name - 1])) {
            --name;
        }
        if (name == name_end || !is_secret_keyword(s.substr(name, name_end - name))) {
            continue;
        }
        std::size_t v = eq + 1;
        while (v < s.size() && is_space(s[v])) {
            ++v;
        }
        const std::size_t end = secret_end(s, v, context_of(s, name));
        out.emplace_back(v, end);
        if (end >= s.size()) {
            break; // hidden to the end
        }
    }
    std::sort(out.begin(), out.end());
    std::vector<span> merged;
    for (const span& sp : out) {
        if (!merged.empty() && sp.first <= merged.back().second) {
            merged.back().second = std::max(merged.back().second, sp.second);
        } else {
            merged.push_back(sp);
        }
    }
    return merged;
}

/// `s` with every span replaced by "***".
inline std::string replace_spans(std::string_view s, const std::vector<span>& spans) {
    std::string out;
    out.reserve(s.size());
    std::size_t pos = 0;
    for (const span& sp : spans) {
        out.append(s.substr(pos, sp.first - pos));
        out.append("***");
        pos = sp.second;
    }
    out.append(s.substr(pos));
    return out;
}

/// Connect parameters with every secret value replaced by "***". They are read as a URI without
/// its scheme too when they look like one (looks_like_bare_uri), whatever the backend.
inline std::string redact(std::string_view params) {
    return replace_spans(params, find_secrets(params, looks_like_bare_uri(params)));
}

/// As redact(params); `bare_uri` forces the reading as a URI without its scheme.
inline std::string redact(std::string_view params, bool bare_uri) {
    return replace_spans(params, find_secrets(params, bare_uri || looks_like_bare_uri(params)));
}

/// The spellings in which a backend may echo a secret value written as `raw`: as written,
/// without backslash escapes, with ODBC's "}}" (or a doubled quote) undoubled, percent-decoded.
inline void add_secret_forms(std::string_view raw, std::vector<std::string>& forms) {
    const auto add = [&](std::string form) {
        if (!form.empty() && std::find(forms.begin(), forms.end(), form) == forms.end()) {
            forms.push_back(std::move(form));
        }
    };
    add(std::string(raw));
    std::string unescaped;
    for (std::size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] == '\\' && i + 1 < raw.size()) {
            ++i;
        }
        unescaped += raw[i];
    }
    add(unescaped);
    for (const char q : {'}', '\'', '"'}) {
        std::string undoubled;
        for (std::size_t i = 0; i < raw.size(); ++i) {
            undoubled += raw[i];
            if (raw[i] == q && i + 1 < raw.size() && raw[i + 1] == q) {
                ++i;
            }
        }
        add(undoubled);
    }
    add(percent_decode(raw));
}

/// `message` with every run of 3 or more characters that is a piece of one of `forms` replaced
/// by "***", and every occurrence of a form shorter than that too. Adjacent replacements share
/// one "***".
inline std::string mask_pieces(std::string_view message, const std::vector<std::string>& forms) {
    if (forms.empty()) {
        return std::string(message);
    }
    std::string out;
    out.reserve(message.size());
    bool masking = false;
    std::size_t i = 0;
    while (i < message.size()) {
        std::size_t best = 0;
        for (const std::string& form : forms) {
            if (form.size() < 3) {
                if (form.size() > best && message.substr(i, form.size()) == form) {
                    best = form.size();
                }
                continue;
            }
            for (std::size_t p = 0; p + 3 <= form.size(); ++p) {
                std::size_t l = 0;
                while (i + l < message.size() && p + l < form.size() &&
                       message[i + l] == form[p + l]) {
                    ++l;
                }
                if (l >= 3 && l > best) {
                    best = l;
                }
            }
        }
        if (best == 0) {
            out += message[i];
            masking = false;
            ++i;
        } else {
            if (!masking) {
                out += "***";
            }
            masking = true;
            i += best;
        }
    }
    return out;
}

/// A backend's error text made safe to show: secret spellings in it redacted, and every piece of
/// 3 or more characters of a secret value taken from `params` (as written, unescaped or decoded:
/// backends echo words of a connect string they cannot parse) replaced by "***", as is every
/// occurrence of a shorter secret.
inline std::string scrub(std::string_view message, std::string_view params, bool bare_uri) {
    std::vector<std::string> forms;
    for (span sp : find_secrets(params, bare_uri || looks_like_bare_uri(params))) {
        // With the blanks around it: a parser that keeps them may echo them with the value.
        while (sp.first > 0 && is_space(params[sp.first - 1])) {
            --sp.first;
        }
        while (sp.second < params.size() && is_space(params[sp.second])) {
            ++sp.second;
        }
        add_secret_forms(params.substr(sp.first, sp.second - sp.first), forms);
    }
    const std::string masked = mask_pieces(message, forms);
    return replace_spans(masked, find_secrets(masked, false));
}

/// As scrub(message, params, false): `params` are read as a URI without its scheme when they
/// look like one.
inline std::string scrub(std::string_view message, std::string_view params) {
    return scrub(message, params, false);
}

/// True when `key` appears as a keyword (`key=`) in `s`, in keyword or URI query form.
inline bool has_keyword(std::string_view s, std::string_view key) noexcept {
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (keyword_value_at(s, i, key) != npos) {
            return true;
        }
    }
    return false;
}

/// True for a backend name SOCI can name: non-empty, [a-z0-9_].
inline bool valid_backend_name(std::string_view name) noexcept {
    return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
}

} // namespace soci_cs
} // namespace detail
} // namespace warmpool
// ---- end warmpool/detail/soci_connect_string.hpp ----
// ---- begin warmpool/soci/mysql.hpp ----

// The SOCI adapter's MySQL/MariaDB checks: MariaDB Connector/C (libmariadb, which serves MySQL
// servers too) asked directly about the MYSQL handle of a session SOCI opened. Used by
// warmpool/soci.hpp; one header per backend so each backend's code, its client-library
// functions and its compile-time switch sit together.
//
// MySQL's own libmysqlclient lacks mysql_get_socket and the non-blocking API, so a SOCI built
// against it gets no native checks: detection finds no LIBMARIADB in <mysql.h> and treats the
// checks as unavailable (soci_config then says so), and =1 stops with an #error; =0 is the way.
//
// WARMPOOL_SOCI_MYSQL picks how (the result is WARMPOOL_SOCI_MYSQL_NATIVE):
//   undefined  detect: when <soci/mysql/soci-mysql.h> and Connector/C's <mysql.h> are on the
//              include path, the checks are compiled in and the client library's functions are
//              found at run time in the process, which has it loaded once SOCI opened a MySQL
//              session (see warmpool/detail/loaded_library.hpp). NATIVE = 2. Without the headers
//              NATIVE = 0, and soci_config refuses a "mysql://" connect string.
//   =1         called directly: link libmariadb and soci_mysql, whose static factory
//              (soci::mysql) then opens the sessions. NATIVE = 1.
//   =0         no native checks: the portable fallback documented in warmpool/soci.hpp.
//
// What the checks cost, each bounded by the timeout the pool passes (validation_timeout):
//   is_broken       the socket handle, local.
//   in_transaction  the server-status flag the last reply carried, local.
//   peer_closed     one poll(); a peek only when the socket is readable under TLS.
//   ping            "DO 0" sent with mysql_send_query, its reply awaited with poll() before
//                   mysql_read_query_result reads it: one round trip. (mysql_ping would block
//                   as long as read_timeout allows: by default forever.)
//   rollback        "ROLLBACK", the same way: one round trip.
//   reset           mysql_reset_connection through Connector/C's non-blocking API, then, on a
//                   MariaDB server, the role put back (below): two round trips, three when a
//                   role must be set. A Connector/C too old for that API (before 3.0) makes
//                   reset() return false: reset_on_release then closes at every give-back.
//   fleet_sample    one SELECT through the non-blocking API; when reaping on MariaDB 10.3+,
//                   one compound statement instead (still one round trip), elsewhere the
//                   SELECT plus one KILL per zombie and one lock release (see fleet_sample()).
//
// MYSQL_OPT_NONBLOCK is documented for use before connecting, but Connector/C accepts it on a
// connection SOCI opened: it only allocates the context the *_start/*_cont calls run on (once
// per connection; mysql_get_option tells whether it is there), and blocking calls on the same
// connection keep working. A reset that times out leaves that context suspended; the pool then
// closes the connection, and mysql_close sends COM_QUIT without waiting for the server.
//
// MariaDB's COM_RESET_CONNECTION (mysql_reset_connection) drops temporary tables, releases
// GET_LOCK locks, clears user variables, resets session variables to their global values and
// keeps the connection's character set, but it leaves the role of SET ROLE active (checked on
// MariaDB 10.11). So reset() then asks for CURRENT_ROLE() and the user's default role
// (information_schema.APPLICABLE_ROLES.IS_DEFAULT, which a new connection starts with) and runs
// SET ROLE when they differ.

// ---- begin warmpool/detail/loaded_library.hpp ----

// Finding functions of a shared library the process has already loaded, for the SOCI adapter's
// native checks (warmpool/soci/*.hpp) when the program was not linked against the database
// client library itself.
//
// Why it is needed: SOCI's dynamic backend loader dlopen()s libsoci_postgresql.so (and so libpq)
// with RTLD_LOCAL, so libpq's symbols are not in the global scope: dlsym(RTLD_DEFAULT, "PQstatus")
// finds nothing although libpq is loaded and serving the session. The objects themselves can
// still be reached: dl_iterate_phdr() lists every loaded object by path, and
// dlopen(path, RTLD_NOLOAD) returns a handle to one already loaded without loading anything.
//
// Where a function is looked for, in this order, all of a table's functions in one place:
//   1. the global scope (dlsym(RTLD_DEFAULT)): a program linked against the client library, or
//      statically linked and exporting its symbols. The dynamic linker binds the backend's own
//      references there first, so this is the very copy the session uses.
//   2. each loaded object whose file name starts with one of the given prefixes, in load order
//      ("libsoci_postgresql" first: a handle searches that object and its dependencies, the
//      scope it was linked in; then the client library by name, "libpq.so").
// Nothing is ever loaded here, and the handles taken are never closed, so the functions stay
// valid for the life of the process even if SOCI unloads its backend.
//
// POSIX with <dlfcn.h>; dl_iterate_phdr() where <link.h> has it (Linux, the BSDs). Elsewhere
// only the global scope is searched. Without <dlfcn.h> this header is empty, and the backend
// headers do not detect their client libraries (only =1 enables their checks there).

#if __has_include(<dlfcn.h>)

#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <dlfcn.h>

// Token pasting for the per-mode inline namespaces of the SOCI adapter (see warmpool/soci.hpp).
#define WARMPOOL_DETAIL_CAT_(a, b) a##b
#define WARMPOOL_DETAIL_CAT(a, b) WARMPOOL_DETAIL_CAT_(a, b)
#if __has_include(<link.h>) && !defined(__APPLE__)
#include <link.h>
#define WARMPOOL_DETAIL_HAS_DL_ITERATE_PHDR 1
#endif

namespace warmpool {
namespace detail {
namespace loaded_library {

/// Stores a symbol's address in a function pointer. (A data pointer converted to a function
/// pointer is only conditionally supported by C++; POSIX guarantees dlsym's result works.)
template <class F>
void assign(F*& fn, void* address) noexcept {
    static_assert(std::is_function<F>::value, "assign() fills function pointers");
    static_assert(sizeof(fn) == sizeof(address), "function and data pointers differ in size");
    std::memcpy(&fn, &address, sizeof fn);
}

/// The file name part of a path.
inline std::string_view base_name(std::string_view path) noexcept {
    const std::size_t slash = path.rfind('/');
    return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

/// Paths of the loaded objects whose file name starts with `prefix`, in load order.
inline std::vector<std::string> paths_starting_with(std::string_view prefix) {
    std::vector<std::string> found;
#if defined(WARMPOOL_DETAIL_HAS_DL_ITERATE_PHDR)
    struct search {
        std::string_view prefix;
        std::vector<std::string>* found;
    } s{prefix, &found};
    ::dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* data) -> int {
            auto* s = static_cast<search*>(data);
            if (info->dlpi_name != nullptr && info->dlpi_name[0] != '\0') {
                const std::string_view path = info->dlpi_name;
                if (base_name(path).substr(0, s->prefix.size()) == s->prefix) {
                    s->found->emplace_back(path);
                }
            }
            return 0;
        },
        &s);
#else
    (void)prefix;
#endif
    return found;
}

/// Where the functions of one table may be: the global scope, then the handles of the loaded
/// objects named by the prefixes (each taken with RTLD_NOLOAD: nothing is loaded).
inline std::vector<void*> scopes(std::initializer_list<std::string_view> prefixes) {
    std::vector<void*> out;
#if defined(RTLD_DEFAULT)
    out.push_back(RTLD_DEFAULT);
#endif
    for (const std::string_view prefix : prefixes) {
        for (const std::string& path : paths_starting_with(prefix)) {
            if (void* handle = ::dlopen(path.c_str(), RTLD_NOLOAD | RTLD_LAZY)) {
                out.push_back(handle); // kept open on purpose: see the top of this file
            }
        }
    }
    return out;
}

/// The address of `name` in `scope`, or nullptr.
inline void* find(void* scope, const char* name) noexcept {
    return ::dlsym(scope, name);
}

/// A backend's table of functions, looked up once per table type (thread-safe, on first use):
/// from the first scope where `fill` finds every function the table needs. nullptr when no
/// scope has them all; exceptions (out of memory) count as not found.
template <class Table>
const Table* resolve_once(std::initializer_list<std::string_view> prefixes,
                          bool (*fill)(Table&, void*) noexcept) noexcept {
    static const Table* const resolved = [&]() noexcept -> const Table* {
        static Table found;
        try {
            for (void* scope : scopes(prefixes)) {
                Table candidate{};
                if (fill(candidate, scope)) {
                    found = candidate;
                    return &found;
                }
            }
        } catch (...) {
        }
        return nullptr;
    }();
    return resolved;
}

} // namespace loaded_library
} // namespace detail
} // namespace warmpool

#endif // __has_include(<dlfcn.h>)
// ---- end warmpool/detail/loaded_library.hpp ----
// ---- begin warmpool/detail/socket_wait.hpp ----

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
// ---- end warmpool/detail/socket_wait.hpp ----

#include <soci/soci.h>

#if defined(WARMPOOL_SOCI_MYSQL)
#if (0 - WARMPOOL_SOCI_MYSQL - 1) == 1 // defined with no value: taken as =1
#define WARMPOOL_SOCI_MYSQL_NATIVE 1
#elif WARMPOOL_SOCI_MYSQL
#define WARMPOOL_SOCI_MYSQL_NATIVE 1
#else
#define WARMPOOL_SOCI_MYSQL_NATIVE 0
#endif
#elif __has_include(<soci/mysql/soci-mysql.h>) && __has_include(<mysql.h>) &&                      \
    __has_include(<dlfcn.h>) && __has_include(<poll.h>)
#include <mysql.h>
#if defined(LIBMARIADB)
#define WARMPOOL_SOCI_MYSQL_NATIVE 2
#else
#define WARMPOOL_SOCI_MYSQL_NATIVE 0 // MySQL's own libmysqlclient: see the top of this file
#define WARMPOOL_DETAIL_SOCI_MYSQL_MISSING 1
#endif
#else
#define WARMPOOL_SOCI_MYSQL_NATIVE 0
#define WARMPOOL_DETAIL_SOCI_MYSQL_MISSING 1
#endif

#if WARMPOOL_SOCI_MYSQL_NATIVE
#include <soci/mysql/soci-mysql.h>

#include <mysql.h>

#if !defined(LIBMARIADB)
#error                                                                                             \
    "warmpool: WARMPOOL_SOCI_MYSQL=1 needs MariaDB Connector/C's <mysql.h> (libmariadb), which serves MySQL servers too; MySQL's own libmysqlclient lacks the calls the checks make. Define WARMPOOL_SOCI_MYSQL=0 for the portable fallback."
#endif

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <sys/socket.h>
#include <sys/types.h>
#endif

#include <chrono>

#define WARMPOOL_DETAIL_SOCI_MY_MODE WARMPOOL_DETAIL_CAT(soci_my_mode_, WARMPOOL_SOCI_MYSQL_NATIVE)

namespace warmpool {
namespace detail {
// How this translation unit reaches the client library is part of the names (see
// "One program, one mode" in warmpool/soci.hpp).
inline namespace WARMPOOL_DETAIL_SOCI_MY_MODE {
namespace soci_my {

#if defined(WARMPOOL_DETAIL_SOCI_MYSQL_MISSING)
/// Why the checks are not compiled in, for soci_config's error.
inline constexpr const char* missing =
#if !__has_include(<soci/mysql/soci-mysql.h>)
    "SOCI's header <soci/mysql/soci-mysql.h> was not found (install SOCI's MySQL backend; "
    "Debian: libsoci-dev)";
#elif !__has_include(<mysql.h>)
    "MariaDB Connector/C's header <mysql.h> was not found: add its directory to the include "
    "path (`pkg-config --cflags libmariadb`; Debian: -I/usr/include/mariadb, package "
    "libmariadb-dev)";
#elif !__has_include(<dlfcn.h>) || !__has_include(<poll.h>)
    "this platform has no <dlfcn.h> or <poll.h> to find the client library at run time: "
    "define WARMPOOL_SOCI_MYSQL=1 and link libmariadb and soci_mysql";
#else
    "the <mysql.h> on the include path is not MariaDB Connector/C's (it serves MySQL servers "
    "too); MySQL's own libmysqlclient lacks the calls the checks make, so with a SOCI built "
    "against it the portable fallback is the choice";
#endif
#endif

#if WARMPOOL_SOCI_MYSQL_NATIVE

using steady = std::chrono::steady_clock;
namespace sock = detail::socket_wait;

/// Connector/C's functions the checks call: linked directly (=1) or found at run time.
struct functions {
    decltype(&::mysql_get_socket) get_socket = nullptr;
    decltype(&::mysql_get_ssl_cipher) get_ssl_cipher = nullptr;
    decltype(&::mysql_send_query) send_query = nullptr;
    decltype(&::mysql_read_query_result) read_query_result = nullptr;
    decltype(&::mysql_errno) error_number = nullptr;
    decltype(&::mysql_error) error_text = nullptr;
    // The non-blocking API, for reset(); all or none (`nonblocking`).
    bool nonblocking = false;
    decltype(&::mysql_options) options = nullptr;
    decltype(&::mysql_get_option) get_option = nullptr;
    decltype(&::mysql_get_server_info) server_info = nullptr;
    decltype(&::mysql_reset_connection_start) reset_start = nullptr;
    decltype(&::mysql_reset_connection_cont) reset_cont = nullptr;
    decltype(&::mysql_real_query_start) query_start = nullptr;
    decltype(&::mysql_real_query_cont) query_cont = nullptr;
    decltype(&::mysql_store_result_start) store_start = nullptr;
    decltype(&::mysql_store_result_cont) store_cont = nullptr;
    decltype(&::mysql_fetch_row) fetch_row = nullptr;
    decltype(&::mysql_free_result) free_result = nullptr;
    decltype(&::mysql_num_fields) num_fields = nullptr;
    decltype(&::mysql_next_result_start) next_result_start = nullptr;
    decltype(&::mysql_next_result_cont) next_result_cont = nullptr;
};

#if WARMPOOL_SOCI_MYSQL_NATIVE == 2
/// Fills `f` from one scope; true when every required function was there (the non-blocking
/// ones are taken only when all of them are).
inline bool fill(functions& f, void* scope) noexcept {
    bool all = true;
    const auto get = [&](auto& fn, const char* name) {
        void* const address = loaded_library::find(scope, name);
        all = all && address != nullptr;
        if (address != nullptr) {
            loaded_library::assign(fn, address);
        }
    };
    get(f.get_socket, "mysql_get_socket");
    get(f.get_ssl_cipher, "mysql_get_ssl_cipher");
    get(f.send_query, "mysql_send_query");
    get(f.read_query_result, "mysql_read_query_result");
    get(f.error_number, "mysql_errno");
    get(f.error_text, "mysql_error");
    if (!all) {
        return false;
    }
    get(f.options, "mysql_options");
    get(f.get_option, "mysql_get_option");
    get(f.server_info, "mysql_get_server_info");
    get(f.reset_start, "mysql_reset_connection_start");
    get(f.reset_cont, "mysql_reset_connection_cont");
    get(f.query_start, "mysql_real_query_start");
    get(f.query_cont, "mysql_real_query_cont");
    get(f.store_start, "mysql_store_result_start");
    get(f.store_cont, "mysql_store_result_cont");
    get(f.fetch_row, "mysql_fetch_row");
    get(f.free_result, "mysql_free_result");
    get(f.num_fields, "mysql_num_fields");
    get(f.next_result_start, "mysql_next_result_start");
    get(f.next_result_cont, "mysql_next_result_cont");
    f.nonblocking = all;
    return true;
}
#endif

/// The table, or nullptr when the client library's functions cannot be found in this process.
/// Resolved once, on first use, which is always with a MySQL session open.
inline const functions* api() noexcept {
#if WARMPOOL_SOCI_MYSQL_NATIVE == 1
    static const functions linked = [] {
        functions f;
        f.get_socket = &::mysql_get_socket;
        f.get_ssl_cipher = &::mysql_get_ssl_cipher;
        f.send_query = &::mysql_send_query;
        f.read_query_result = &::mysql_read_query_result;
        f.error_number = &::mysql_errno;
        f.error_text = &::mysql_error;
        f.nonblocking = true;
        f.options = &::mysql_options;
        f.get_option = &::mysql_get_option;
        f.server_info = &::mysql_get_server_info;
        f.reset_start = &::mysql_reset_connection_start;
        f.reset_cont = &::mysql_reset_connection_cont;
        f.query_start = &::mysql_real_query_start;
        f.query_cont = &::mysql_real_query_cont;
        f.store_start = &::mysql_store_result_start;
        f.store_cont = &::mysql_store_result_cont;
        f.fetch_row = &::mysql_fetch_row;
        f.free_result = &::mysql_free_result;
        f.num_fields = &::mysql_num_fields;
        f.next_result_start = &::mysql_next_result_start;
        f.next_result_cont = &::mysql_next_result_cont;
        return f;
    }();
    return &linked;
#else
    return loaded_library::resolve_once<functions>({"libsoci_mysql", "libmariadb.so"}, &fill);
#endif
}

/// What the connect error says when api() is nullptr.
inline constexpr const char* unresolved =
    "MariaDB Connector/C's functions (mysql_get_socket, mysql_send_query, ...) were not found "
    "in "
    "this process, so the native checks cannot run (looked in the global scope, SOCI's "
    "libsoci_mysql and libmariadb.so*). Link libmariadb and soci_mysql and define "
    "WARMPOOL_SOCI_MYSQL=1, or define WARMPOOL_SOCI_MYSQL=0 for the portable fallback";

inline MYSQL* conn(soci::session& s) noexcept {
    return static_cast<soci::mysql_session_backend*>(s.get_backend())->conn_;
}

/// The error number SOCI's MySQL error carries; 0 for any other exception. (mysql_soci_error's
/// virtual functions are all inline, so this dynamic_cast needs no link to soci_mysql.)
inline unsigned error_number(const std::exception& e) noexcept {
    if (const auto* m = dynamic_cast<const soci::mysql_soci_error*>(&e)) {
        return m->err_num_;
    }
    return 0;
}

inline int socket_of(const functions& my, MYSQL* c) noexcept {
    return static_cast<int>(my.get_socket(c));
}

inline bool is_broken(soci::session& s) noexcept {
    const functions* const my = api();
    MYSQL* const c = conn(s);
    return my == nullptr || c == nullptr || socket_of(*my, c) < 0;
}

inline bool in_transaction(soci::session& s) noexcept {
    MYSQL* const c = conn(s);
    return api() == nullptr || c == nullptr || (c->server_status & SERVER_STATUS_IN_TRANS) != 0;
}

/// What the idle session's socket says, in one zero-timeout poll(). A hang-up is `closed`.
/// Plain TCP: MySQL sends an idle session nothing unprompted except the error packet that
/// precedes a server-side close (MySQL 8.0.24 and later, on wait_timeout; MariaDB 10.11 sends
/// none, on KILL, wait_timeout or shutdown alike), so readable means `closed`. TLS
/// (mysql_get_ssl_cipher): the bytes are records the check cannot read without consuming them;
/// they may be that error packet or something harmless (a TLS 1.3 key update, a session ticket),
/// so they are `unsure` and the pool pings at once. MariaDB's session tickets arrive before the
/// reply that completes the connect, so Connector/C reads them there: the socket of a healthy
/// idle session holds nothing, and costs no extra ping.
inline peer_state peer_closed(soci::session& s) noexcept {
    const functions* const my = api();
    MYSQL* const c = conn(s);
    if (my == nullptr || c == nullptr) {
        return peer_state::closed;
    }
    const int fd = socket_of(*my, c);
    if (fd < 0) {
        return peer_state::closed;
    }
    const short revents = sock::now(fd);
    if (revents == 0) {
        return peer_state::open;
    }
    if ((revents & sock::hangup_events) != 0 || my->get_ssl_cipher(c) == nullptr) {
        return peer_state::closed;
    }
    // Where poll() has no POLLRDHUP, the end of the stream shows only as readable.
    char byte = 0;
    const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        return peer_state::closed;
    }
    return peer_state::unsure;
}

/// Makes closing the session send nothing (see socket_wait::silence).
inline void abandon(soci::session& s) noexcept {
    const functions* const my = api();
    MYSQL* const c = conn(s);
    if (my != nullptr && c != nullptr) {
        sock::silence(socket_of(*my, c));
    }
}

/// One statement with a short reply, sent, its reply awaited with poll() until the deadline and
/// then read. False on failure or timeout (the connection is mid-command then: the pool closes
/// it, and mysql_close only sends COM_QUIT).
inline bool exec_bounded(soci::session& s, const char* sql,
                         std::chrono::milliseconds timeout) noexcept {
    const functions* const my = api();
    MYSQL* const c = conn(s);
    if (my == nullptr || c == nullptr) {
        return false;
    }
    const auto deadline = steady::now() + timeout;
    const int fd = socket_of(*my, c);
    if (fd < 0) {
        return false;
    }
    if (my->send_query(c, sql, static_cast<unsigned long>(std::strlen(sql))) != 0) {
        return false;
    }
    if (sock::until(fd, POLLIN, deadline) == 0) {
        return false;
    }
    return my->read_query_result(c) == 0;
}

inline bool ping(soci::session& s, std::chrono::milliseconds timeout) noexcept {
    return exec_bounded(s, "DO 0", timeout);
}

/// True when no transaction is open afterwards.
inline bool rollback(soci::session& s, std::chrono::milliseconds timeout) noexcept {
    return exec_bounded(s, "ROLLBACK", timeout) && !in_transaction(s);
}

/// Drives one call of Connector/C's non-blocking API: `start()` and `cont(ready)` return the
/// events the library waits for (0 when done); between them the socket is polled until the
/// deadline. False when the deadline passed first, leaving the call suspended.
template <class Start, class Cont>
bool drive(int fd, steady::time_point deadline, Start&& start, Cont&& cont) noexcept {
    int status = start();
    while (status != 0) {
        short events = 0;
        if ((status & MYSQL_WAIT_READ) != 0) {
            events |= POLLIN;
        }
        if ((status & MYSQL_WAIT_WRITE) != 0) {
            events |= POLLOUT;
        }
        if ((status & MYSQL_WAIT_EXCEPT) != 0) {
            events |= POLLPRI;
        }
        const short revents = events != 0 ? sock::until(fd, events, deadline) : 0;
        if (revents == 0) {
            return false;
        }
        int ready = 0;
        if ((revents & (POLLIN | sock::hangup_events)) != 0) {
            ready |= MYSQL_WAIT_READ;
        }
        if ((revents & POLLOUT) != 0) {
            ready |= MYSQL_WAIT_WRITE;
        }
        if ((revents & POLLPRI) != 0) {
            ready |= MYSQL_WAIT_EXCEPT;
        }
        status = cont(ready);
    }
    return true;
}

/// The first row of a result: each column's text ("" for NULL) and whether it is NULL.
struct row_values {
    std::vector<std::string> value;
    std::vector<bool> null;

    bool is_null(std::size_t i) const noexcept { return i >= null.size() || null[i]; }
    const std::string& text(std::size_t i) const noexcept {
        static const std::string none;
        return i < value.size() ? value[i] : none;
    }
    long long number(std::size_t i, long long otherwise = 0) const noexcept {
        if (is_null(i) || value[i].empty()) {
            return otherwise;
        }
        char* end = nullptr;
        const long long n = std::strtoll(value[i].c_str(), &end, 10);
        return end != nullptr && *end == '\0' ? n : otherwise;
    }
};

/// How a statement sent through the non-blocking API ended.
enum class query_end {
    done,         // answered as asked
    server_error, // the server refused it, cleanly (mysql_errno tells why): the connection is
                  // usable
    lost,         // the deadline passed or the connection failed: it may be mid-command
};

/// query_outcome() up to its first result.
inline query_end first_outcome(const functions& my, MYSQL* c, int fd, const std::string& sql,
                               steady::time_point deadline, row_values* row) {
    int ret = 1;
    if (!drive(
            fd, deadline,
            [&] {
                return my.query_start(&ret, c, sql.data(), static_cast<unsigned long>(sql.size()));
            },
            [&](int ready) { return my.query_cont(&ret, c, ready); })) {
        return query_end::lost;
    }
    // Client-side errors (CR_*, 2000 to 2999: server gone, connection lost, out of sync) leave
    // the connection unusable; the server's own are clean refusals.
    const auto failed = [&] {
        const unsigned number = my.error_number(c);
        return number >= 2000 && number < 3000 ? query_end::lost : query_end::server_error;
    };
    if (ret != 0) {
        return failed();
    }
    MYSQL_RES* result = nullptr;
    if (!drive(
            fd, deadline, [&] { return my.store_start(&result, c); },
            [&](int ready) { return my.store_cont(&result, c, ready); })) {
        return query_end::lost;
    }
    if (result == nullptr) {
        if (my.error_number(c) != 0) {
            return failed(); // the result set was cut off, or the server ended it with an error
        }
        return row == nullptr ? query_end::done : query_end::server_error;
    }
    query_end end = query_end::server_error;
    if (MYSQL_ROW r = my.fetch_row(result)) {
        if (row != nullptr) {
            const unsigned n = my.num_fields(result);
            row->value.assign(n, std::string());
            row->null.assign(n, true);
            for (unsigned i = 0; i < n; ++i) {
                row->null[i] = r[i] == nullptr;
                if (r[i] != nullptr) {
                    row->value[i] = r[i];
                }
            }
            end = query_end::done;
        }
    }
    my.free_result(result); // a stored result: no I/O
    return end;
}

/// One statement through the non-blocking API, bounded by `deadline`. With `row` its first
/// result must be a row, all of whose columns land there (a statement returning none is a
/// server_error with mysql_errno 0); without, it must return no result set. The results that
/// follow (a compound statement's closing status) are read and dropped, so the connection is
/// ready for the next statement; an error among them is the statement's.
inline query_end query_outcome(const functions& my, MYSQL* c, int fd, const std::string& sql,
                               steady::time_point deadline, row_values* row = nullptr) {
    const query_end end = first_outcome(my, c, fd, sql, deadline, row);
    if (end == query_end::lost) {
        return end;
    }
    while ((c->server_status & SERVER_MORE_RESULTS_EXIST) != 0) {
        int ret = 0;
        if (!drive(
                fd, deadline, [&] { return my.next_result_start(&ret, c); },
                [&](int ready) { return my.next_result_cont(&ret, c, ready); })) {
            return query_end::lost;
        }
        if (ret > 0) {
            const unsigned number = my.error_number(c);
            return number >= 2000 && number < 3000 ? query_end::lost : query_end::server_error;
        }
        if (ret < 0) {
            break;
        }
        MYSQL_RES* more = nullptr;
        if (!drive(
                fd, deadline, [&] { return my.store_start(&more, c); },
                [&](int ready) { return my.store_cont(&more, c, ready); })) {
            return query_end::lost;
        }
        if (more != nullptr) {
            my.free_result(more);
        } else if (my.error_number(c) != 0) {
            const unsigned number = my.error_number(c);
            return number >= 2000 && number < 3000 ? query_end::lost : query_end::server_error;
        }
    }
    return end;
}

/// query_outcome(), answered as asked or not.
inline bool query_async(const functions& my, MYSQL* c, int fd, const std::string& sql,
                        steady::time_point deadline, row_values* row = nullptr) {
    return query_outcome(my, c, fd, sql, deadline, row) == query_end::done;
}

/// Gives the connection the context Connector/C's non-blocking calls run on (see the top of
/// this file); false when it cannot.
inline bool make_nonblocking(const functions& my, MYSQL* c) noexcept {
    my_bool has_context = 0;
    if (my.get_option(c, MYSQL_OPT_NONBLOCK, &has_context) != 0 || has_context == 0) {
        return my.options(c, MYSQL_OPT_NONBLOCK, nullptr) == 0;
    }
    return true;
}

/// `name` as a quoted identifier. Not called quoted(): with <iomanip> included first, a call
/// with a std::string would find std::quoted by argument-dependent lookup and prefer it.
inline std::string quoted_identifier(const std::string& name) {
    std::string out = "`";
    for (const char ch : name) {
        out += ch;
        if (ch == '`') {
            out += '`';
        }
    }
    return out + "`";
}

/// mysql_reset_connection and the role put back, bounded by `timeout` (see the top of this
/// file).
inline bool reset(soci::session& s, std::chrono::milliseconds timeout) noexcept {
    const functions* const my = api();
    MYSQL* const c = conn(s);
    if (my == nullptr || c == nullptr || !my->nonblocking) {
        return false;
    }
    const int fd = socket_of(*my, c);
    if (fd < 0) {
        return false;
    }
    try {
        const auto deadline = steady::now() + timeout;
        if (!make_nonblocking(*my, c)) {
            return false;
        }
        int ret = 1;
        if (!drive(
                fd, deadline, [&] { return my->reset_start(&ret, c); },
                [&](int ready) { return my->reset_cont(&ret, c, ready); }) ||
            ret != 0) {
            return false;
        }
        const char* const server = my->server_info(c);
        if (server == nullptr || std::strstr(server, "MariaDB") == nullptr) {
            return !in_transaction(s);
        }
        row_values roles; // the active one, and the user's default, which a new connection has
        if (!query_async(*my, c, fd,
                         "SELECT CURRENT_ROLE(), (SELECT ROLE_NAME FROM "
                         "information_schema.APPLICABLE_ROLES WHERE IS_DEFAULT = 'YES' LIMIT 1)",
                         deadline, &roles)) {
            return false;
        }
        if (roles.is_null(0) != roles.is_null(1) || roles.text(0) != roles.text(1)) {
            const std::string set =
                roles.is_null(1) ? "SET ROLE NONE" : "SET ROLE " + quoted_identifier(roles.text(1));
            if (!query_async(*my, c, fd, set, deadline)) {
                return false;
            }
        }
        return !in_transaction(s);
    } catch (...) {
        return false;
    }
}
// --- The fleet policy (warmpool/fleet.hpp) ------------------------------------------------

/// The named-lock prefix a reaper marks its victims with (GET_LOCK): with the connection id
/// appended, at most 64 characters.
inline constexpr const char* fleet_lock_prefix = "warmpool.fleet.reap.";

/// The longest idle time compared with: about 100 years (options::forever); nothing has been
/// idle longer, and the number stays far from any overflow.
inline constexpr long long fleet_idle_most_ms = 3'155'760'000'000;

/// How the sample reaps. `block`: one compound statement (MariaDB 10.3 and later: BEGIN NOT
/// ATOMIC and FOR loops) that re-checks each zombie and kills it on the server. `statement`:
/// one SELECT, then one KILL per zombie and one lock release (MySQL, older MariaDB). `detect`
/// picks by the server; the integration tests force `statement` to run it on MariaDB too.
enum class fleet_dialect { detect, block, statement };

/// True for a MariaDB server that runs compound statements with FOR loops (10.3 and later).
/// Connector/C reports "10.11.19-MariaDB-..."; a server that sends the old "5.5.5-" prefix
/// has it removed first.
inline bool mariadb_with_blocks(const char* server) noexcept {
    if (server == nullptr || std::strstr(server, "MariaDB") == nullptr) {
        return false;
    }
    const char* v = std::strncmp(server, "5.5.5-", 6) == 0 ? server + 6 : server;
    char* end = nullptr;
    const long major = std::strtol(v, &end, 10);
    const long minor = end != nullptr && *end == '.' ? std::strtol(end + 1, nullptr, 10) : 0;
    return major > 10 || (major == 10 && minor >= 3);
}

/// The user name part of USER(): PROCESSLIST.USER is the name the session logged in with.
/// Compared byte for byte (CAST AS BINARY): account names are case-sensitive, but
/// PROCESSLIST.USER's collation is not, so 'app' would otherwise count (and reap) 'APP'.
inline constexpr const char* fleet_same_user =
    "CAST(USER AS BINARY) = CAST(LEFT(USER(), CHAR_LENGTH(USER()) - "
    "CHAR_LENGTH(SUBSTRING_INDEX(USER(), '@', -1)) - 1) AS BINARY)";

/// The counts and limits, shared by every form. Columns: 0 client connections on the server,
/// 1 those of this user, 2 max_connections, 3 max_user_connections (the session's value is the
/// account's MAX_USER_CONNECTIONS when it has one, else the global one; checked on MariaDB
/// 10.11).
inline std::string fleet_counts_sql(bool mariadb) {
    // MySQL 5.7 moved the status tables to performance_schema (readable by every user).
    return std::string("(SELECT VARIABLE_VALUE FROM ") +
           (mariadb ? "information_schema.GLOBAL_STATUS" : "performance_schema.global_status") +
           " WHERE VARIABLE_NAME = 'THREADS_CONNECTED'),"
           " (SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE " +
           fleet_same_user + ")";
}

/// Reaping needs INNODB_TRX, which needs PROCESS; without it nothing is killed.
inline constexpr const char* fleet_may_read_trx =
    "EXISTS(SELECT 1 FROM information_schema.USER_PRIVILEGES WHERE PRIVILEGE_TYPE = 'PROCESS')";

inline long long fleet_idle_ms(const fleet_request& req) {
    return std::min(std::max(0LL, static_cast<long long>(req.reap_idle_after.count())),
                    fleet_idle_most_ms);
}

/// The counting SELECT (no reaping): the four columns of fleet_counts_sql() and the limits.
inline std::string fleet_sql(bool mariadb) {
    return "SELECT " + fleet_counts_sql(mariadb) +
           ", @@max_connections, @@session.max_user_connections";
}

/// The MariaDB compound statement (fleet_dialect::block), from constant text and the request's
/// numbers. Counts first, into variables (so every zombie it kills is in them once); then, for
/// each of at most reap_max candidates (this user, COMMAND 'Sleep' for reap_idle_after or
/// longer by TIME_MS, not this connection, not in INNODB_TRX, oldest first): its named lock,
/// no wait (held by another reaper: skipped); PROCESSLIST read again for it alone, still
/// 'Sleep' and idle that long (any command since resets TIME_MS, and a KILL already made shows
/// 'Killed'); KILL CONNECTION; the lock released. Its one row: the four counting columns,
/// 4 the zombies killed (NULL without PROCESS), 5 the first KILL error other than "no such
/// thread" / "not owner" (NULL for none). An error anywhere else ends the statement, after
/// releasing the lock it holds, with that error.
inline std::string fleet_block_sql(const fleet_request& req) {
    const std::string idle = std::to_string(fleet_idle_ms(req));
    return std::string("BEGIN NOT ATOMIC"
                       " DECLARE server_n, user_n BIGINT DEFAULT 0;"
                       " DECLARE reaped, gone INT DEFAULT 0;"
                       " DECLARE kill_error VARCHAR(600) DEFAULT NULL;"
                       " DECLARE held VARCHAR(64) DEFAULT NULL;"
                       " DECLARE may_read INT DEFAULT ") +
           fleet_may_read_trx +
           ";"
           " DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN DO RELEASE_LOCK(held); RESIGNAL; END;"
           " SELECT " +
           fleet_counts_sql(true) +
           " INTO server_n, user_n;"
           " IF may_read THEN"
           " FOR z IN (SELECT ID FROM information_schema.PROCESSLIST WHERE " +
           fleet_same_user + " AND COMMAND = 'Sleep' AND TIME_MS >= " + idle +
           " AND ID <> CONNECTION_ID()"
           " AND ID NOT IN (SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX"
           " WHERE trx_mysql_thread_id IS NOT NULL)"
           " ORDER BY TIME_MS DESC, ID LIMIT " +
           std::to_string(req.reap_max) +
           ") DO"
           " SET held = CONCAT('" +
           fleet_lock_prefix +
           "', z.ID);"
           " IF GET_LOCK(held, 0) = 1 THEN"
           " IF EXISTS(SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = z.ID"
           " AND COMMAND = 'Sleep' AND TIME_MS >= " +
           idle +
           ") THEN"
           " BEGIN"
           " DECLARE e_number INT DEFAULT 0;"
           " DECLARE e_text VARCHAR(512) DEFAULT '';"
           " DECLARE CONTINUE HANDLER FOR 1094, 1095 SET gone = 1;"
           " DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN"
           " GET DIAGNOSTICS CONDITION 1 e_number = MYSQL_ERRNO, e_text = MESSAGE_TEXT;"
           " SET gone = 1;"
           " IF kill_error IS NULL THEN SET kill_error = CONCAT(e_number, ' ', e_text); END IF;"
           " END;"
           " SET gone = 0;"
           " KILL CONNECTION z.ID;"
           " END;"
           " IF gone = 0 THEN SET reaped = reaped + 1; END IF;"
           " END IF;"
           " DO RELEASE_LOCK(held);"
           " END IF;"
           " SET held = NULL;"
           " END FOR;"
           " END IF;"
           " SELECT server_n, user_n, @@max_connections, @@session.max_user_connections,"
           " IF(may_read, reaped, NULL), kill_error;"
           " END";
}

/// The longest list of ids GROUP_CONCAT may need for `reap_max` of them: 20 digits each (an
/// unsigned 64-bit id) and a separator.
inline unsigned long long fleet_list_most(unsigned reap_max) {
    return 21ULL * reap_max;
}

/// The SELECT of fleet_dialect::statement, from constant text and the request's numbers: the
/// four counting columns, then 4: "k:id,id,..." (the k zombies locked for this reaper; "0:"
/// for none), "-" when group_concat_max_len is too short for reap_max ids (then no lock is
/// taken: IF evaluates one branch), NULL without PROCESS; 5 group_concat_max_len. The
/// candidates are those of fleet_block_sql() with TIME in whole seconds (rounded up); each
/// gets GET_LOCK once, in a derived table that LIMIT keeps from being merged, so the count
/// and the list read the same locks. MySQL 8 raises group_concat_max_len for this statement
/// alone (SET_VAR); elsewhere the hint is a comment.
inline std::string fleet_statement_sql(const fleet_request& req) {
    const long long ms = fleet_idle_ms(req);
    const long long seconds = ms / 1000 + (ms % 1000 != 0 ? 1 : 0);
    const std::string most = std::to_string(fleet_list_most(req.reap_max));
    const std::string limit = std::to_string(req.reap_max);
    return "SELECT /*+ SET_VAR(group_concat_max_len = " + most + ") */ " + fleet_counts_sql(false) +
           ", @@max_connections, @@session.max_user_connections, IF(" + fleet_may_read_trx +
           ", IF(@@session.group_concat_max_len >= " + most +
           ", (SELECT CONCAT(COALESCE(SUM(got = 1), 0), ':', COALESCE(GROUP_CONCAT(IF(got = 1,"
           " ID, NULL) ORDER BY TIME DESC, ID SEPARATOR ','), ''))"
           " FROM (SELECT ID, TIME, GET_LOCK(CONCAT('" +
           fleet_lock_prefix +
           "', ID), 0) AS got FROM (SELECT ID, TIME FROM information_schema.PROCESSLIST"
           " WHERE " +
           fleet_same_user + " AND COMMAND = 'Sleep' AND TIME >= " + std::to_string(seconds) +
           " AND ID <> CONNECTION_ID()"
           " AND ID NOT IN (SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX"
           " WHERE trx_mysql_thread_id IS NOT NULL)"
           " ORDER BY TIME DESC, ID LIMIT " +
           limit + ") AS candidates LIMIT " + limit +
           ") AS locked), '-'), NULL), @@session.group_concat_max_len";
}

/// The ids in "k:id,id,...": exactly k of them, each all digits (1 to 20), k <= most. False
/// for anything else: a list cut short must never be read as ids.
inline bool fleet_ids(const std::string& text, unsigned most,
                      std::vector<unsigned long long>& ids) {
    ids.clear();
    const std::size_t colon = text.find(':');
    if (colon == 0 || colon == std::string::npos || colon > 4) {
        return false;
    }
    unsigned long long k = 0;
    for (std::size_t i = 0; i < colon; ++i) {
        if (text[i] < '0' || text[i] > '9') {
            return false;
        }
        k = k * 10 + static_cast<unsigned>(text[i] - '0');
    }
    std::size_t at = colon + 1;
    while (at < text.size()) {
        std::size_t next = text.find(',', at);
        if (next == std::string::npos) {
            next = text.size();
        }
        if (next == at || next - at > 20) {
            return false;
        }
        unsigned long long id = 0;
        for (std::size_t i = at; i < next; ++i) {
            const char ch = text[i];
            const unsigned digit = static_cast<unsigned>(ch - '0');
            if (ch < '0' || ch > '9' || id > (~0ULL - digit) / 10) {
                return false;
            }
            id = id * 10 + digit;
        }
        ids.push_back(id);
        if (next == text.size()) {
            break;
        }
        at = next + 1;
        if (at == text.size()) {
            return false; // a trailing separator: cut after it
        }
    }
    return ids.size() == k && k <= most;
}

/// `what` with the statement the pool needs about the connection after a failure.
inline std::string fleet_failure(const fleet_reading& r, std::string what) {
    return what +
           (r.usable ? "; the connection can be reused" : "; the connection cannot be reused");
}

/// What fleet_sample() does, bounded by `timeout` as a whole, through Connector/C's
/// non-blocking API (see warmpool/fleet.hpp for the policy):
///
///   counts    Threads_connected (GLOBAL_STATUS: the server's client connections, readable
///             without privileges; PROCESSLIST shows a user without PROCESS only its own
///             connections, so it cannot count the server's), and this user's connections in
///             PROCESSLIST, the user name compared byte for byte (account names are
///             case-sensitive; PROCESSLIST.USER's collation is not). Read before any KILL, and
///             the zombies killed are subtracted.
///   capacity  @@max_connections (MariaDB and MySQL admit one connection more, for an
///             administrator); @@session.max_user_connections, the account's own limit or the
///             global one (0: none).
///   reap      at most reap_max connections of this user (PROCESSLIST.USER, byte for byte) in
///             COMMAND 'Sleep' for reap_idle_after or longer, not this one and not inside an
///             InnoDB transaction (INNODB_TRX), oldest first, each under a named lock (GET_LOCK,
///             no wait; one another reaper holds is skipped).
///             MariaDB 10.3 and later (fleet_block_sql()): one compound statement, one round
///             trip. Counts first; then for each candidate in turn: the lock, PROCESSLIST read
///             again for that connection alone (still 'Sleep', TIME_MS still at least
///             reap_idle_after: any command it sent since resets TIME_MS), KILL CONNECTION at
///             once, the lock released. Exactly once under concurrent reapers: the next reaper
///             to take the lock reads the victim as COMMAND 'Killed' (set by the KILL itself)
///             or gone, and skips it.
///             MySQL and older MariaDB (fleet_statement_sql()): the SELECT locks the candidates
///             and returns their ids; then one KILL CONNECTION per zombie and one DO
///             RELEASE_LOCK(...) for all of them: reap_max + 2 round trips. Another reaper that
///             read a zombie before our lock skips it; one that reads it after our KILL sees
///             'Killed'. The ids come back through GROUP_CONCAT: when group_concat_max_len
///             (raised for the statement on MySQL 8) is below 21 * reap_max nothing is locked
///             and reap_error says so, and a list that does not parse to exactly the count the
///             server gives is not used (the connection, which may hold locks, is not reused).
///             A zombie already gone or killed by another reaper meanwhile (ER_NO_SUCH_THREAD
///             1094, ER_KILL_DENIED_ERROR 1095) is not counted and is no error; other KILL
///             errors go to reap_error.
///
/// What remains, and what it costs: a connection idle for reap_idle_after that sends a
/// command between the moment it is last read as idle and its KILL is killed as that command
/// starts or runs: its client gets an error (the connection was lost), the command and any
/// transaction it opened are not committed (InnoDB rolls them back), nothing is silently lost.
/// On MariaDB 10.3+ that moment is microseconds before the KILL, in the same statement on the
/// server; with fleet_dialect::statement it is the SELECT, one round trip (plus one per KILL
/// before it) earlier. A connection that sends nothing for reap_idle_after is never at risk.
///
/// The scope is the user. SOCI's MySQL backend opens the connection itself, so no connection
/// attribute (program_name) can be set, and performance_schema, where attributes are read, is
/// off by default: give each application its own database user, or reaping ends the idle
/// connections of every application that shares it.
///
/// Reaping needs the PROCESS privilege, to read INNODB_TRX: without it nothing is killed (never
/// without the transaction check) and reap_error says what to grant; the counts are still read.
///
/// A connection that ran BEGIN (or START TRANSACTION) and has not touched an InnoDB table yet
/// has no InnoDB transaction, so INNODB_TRX does not list it, and it can be reaped once idle
/// that long. That loses nothing: it has written nothing, holds no row lock and no snapshot
/// (START TRANSACTION WITH CONSISTENT SNAPSHOT, a read or a write registers the transaction,
/// and then it is listed and kept), so ending it undoes nothing; its next statement fails on the
/// lost connection, as after any server-side close, and a warmpool pool replaces it. What
/// reaping cannot see either way is session state outside transactions: GET_LOCK named locks,
/// LOCK TABLES, temporary tables, user variables of an idle connection of the same user. A
/// zombie's owner is gone, so nothing waits for them; a live instance idle that long
/// (reap_idle_after too short) loses them with its connection.
///
/// A timeout or a lost connection leaves it mid-command (ok = false, usable = false: the pool
/// closes it). An error the server reported leaves it usable (ok = false for the SELECT or the
/// compound statement; a KILL's other errors go to reap_error). Each error text ends by saying
/// whether the connection can be reused.
inline fleet_reading fleet_sample(soci::session& s, const fleet_request& req,
                                  std::chrono::milliseconds timeout,
                                  fleet_dialect dialect = fleet_dialect::detect) noexcept {
    fleet_reading r;
    const auto start = steady::now();
    const auto deadline = start + timeout;
    try {
        const functions* const my = api();
        MYSQL* const c = conn(s);
        const int fd = my != nullptr && c != nullptr ? socket_of(*my, c) : -1;
        if (fd < 0) {
            r.usable = false;
            r.error = fleet_failure(r, "the fleet sample was not sent: the connection is broken");
            return r;
        }
        if (!my->nonblocking) {
            r.error = fleet_failure(r, "the fleet sample needs MariaDB Connector/C 3.0 or later "
                                       "(its non-blocking API was not found)");
            return r;
        }
        if (in_transaction(s)) {
            // The named locks are session-level, but the counts would be taken mid-transaction
            // by a caller that should have rolled back first.
            r.error = fleet_failure(r, "the fleet sample was not sent: the connection is inside "
                                       "a transaction (sample only after the rollback at "
                                       "give-back)");
            return r;
        }
        if (!make_nonblocking(*my, c)) {
            r.error = fleet_failure(r, "the fleet sample was not sent: Connector/C cannot "
                                       "allocate its non-blocking context");
            return r;
        }
        const char* const server = my->server_info(c);
        const bool mariadb = server != nullptr && std::strstr(server, "MariaDB") != nullptr;
        if (dialect == fleet_dialect::detect) {
            dialect = mariadb_with_blocks(server) ? fleet_dialect::block : fleet_dialect::statement;
        }
        const auto lost = [&](const char* what) {
            r.ok = false;
            r.usable = false;
            if (steady::now() >= deadline) {
                r.error = fleet_failure(r, std::string("the fleet sample's ") + what +
                                               " got no answer within " +
                                               std::to_string(timeout.count()) +
                                               " ms (the server or the network is stalled)");
            } else {
                r.error = fleet_failure(
                    r, std::string("the fleet sample's ") + what + " lost the connection (" +
                           std::to_string(my->error_number(c)) + " " + my->error_text(c) + ")");
            }
            return r;
        };

        const bool block = req.reap && dialect == fleet_dialect::block;
        const std::string sql = !req.reap ? fleet_sql(mariadb)
                                : block   ? fleet_block_sql(req)
                                          : fleet_statement_sql(req);
        const char* const what = block ? "statement" : "SELECT";
        row_values row;
        switch (query_outcome(*my, c, fd, sql, deadline, &row)) {
        case query_end::lost:
            return lost(what);
        case query_end::server_error:
            r.error = fleet_failure(
                r, std::string("the fleet sample's ") + what + " failed on the server: " +
                       (my->error_number(c) != 0
                            ? std::to_string(my->error_number(c)) + " " + my->error_text(c)
                            : std::string("no row came back")));
            return r;
        case query_end::done:
            break;
        }
        const auto count = [](long long n) {
            return static_cast<std::size_t>(std::max(0LL, n));
        };
        if (req.with_capacity) {
            r.server_capacity = count(row.number(2));
            r.user_capacity = count(row.number(3)); // -1 (MariaDB: only administrators) too
        }
        const char* const no_process =
            "not reaping: telling idle connections from those inside a transaction needs "
            "information_schema.INNODB_TRX, which needs the PROCESS privilege: GRANT PROCESS ON "
            "*.* TO this account";
        std::vector<unsigned long long> locked;
        if (req.reap && block) {
            if (row.is_null(4)) {
                r.reap_error = no_process;
            } else {
                r.reaped = static_cast<unsigned>(std::max(0LL, row.number(4)));
                if (!row.is_null(5)) {
                    r.reap_error = "KILL CONNECTION failed: " + row.text(5);
                }
            }
        } else if (req.reap) {
            if (row.is_null(4)) {
                r.reap_error = no_process;
            } else if (row.text(4) == "-") {
                r.reap_error =
                    "not reaping: group_concat_max_len is " + row.text(5) +
                    ", too short for the ids of reap_max = " + std::to_string(req.reap_max) +
                    " zombies (" + std::to_string(fleet_list_most(req.reap_max)) +
                    " needed): raise it (SET GLOBAL group_concat_max_len = " +
                    std::to_string(fleet_list_most(req.reap_max)) + " or more) or lower reap_max";
            } else if (!fleet_ids(row.text(4), req.reap_max, locked)) {
                // Which named locks it holds is unknown: closing the connection releases them.
                r.usable = false;
                r.error = fleet_failure(r, "the fleet sample's list of zombies came back "
                                           "malformed (\"" +
                                               row.text(4).substr(0, 60) +
                                               "\"), so nothing was killed; it may hold their "
                                               "named locks");
                return r;
            }
        }
        for (const unsigned long long id : locked) {
            const query_end end =
                query_outcome(*my, c, fd, "KILL CONNECTION " + std::to_string(id), deadline);
            if (end == query_end::lost) {
                return lost("KILL");
            }
            if (end == query_end::done) {
                ++r.reaped;
                continue;
            }
            const unsigned number = my->error_number(c);
            if (number != 1094 && number != 1095 && r.reap_error.empty()) {
                r.reap_error =
                    "KILL CONNECTION failed: " + std::to_string(number) + " " + my->error_text(c);
            }
        }
        if (!locked.empty()) {
            std::string release = "DO ";
            for (const unsigned long long id : locked) {
                release += std::string(release.size() > 3 ? ", " : "") + "RELEASE_LOCK('" +
                           fleet_lock_prefix + std::to_string(id) + "')";
            }
            const query_end end = query_outcome(*my, c, fd, release, deadline);
            if (end == query_end::lost) {
                return lost("RELEASE_LOCK");
            }
            if (end != query_end::done) {
                // Left held, the locks would keep every other reaper off these ids: the pool
                // closes the connection, which releases them.
                r.usable = false;
                r.error = fleet_failure(r, "the fleet sample's RELEASE_LOCK failed: " +
                                               std::to_string(my->error_number(c)) + " " +
                                               my->error_text(c));
                return r;
            }
        }
        // Every zombie killed was in the counts, read before its KILL.
        r.server_in_use = count(row.number(0) - static_cast<long long>(r.reaped));
        r.user_in_use = count(row.number(1) - static_cast<long long>(r.reaped));
        r.ok = true;
        return r;
    } catch (...) {
        // Out of memory, perhaps mid-command.
        r.ok = false;
        r.usable = false;
        r.error = "the fleet sample failed: out of memory; the connection cannot be reused";
        return r;
    }
}

#endif // WARMPOOL_SOCI_MYSQL_NATIVE

} // namespace soci_my
} // namespace WARMPOOL_DETAIL_SOCI_MY_MODE
} // namespace detail
} // namespace warmpool
// ---- end warmpool/soci/mysql.hpp ----
// ---- begin warmpool/soci/postgresql.hpp ----

// The SOCI adapter's PostgreSQL checks: libpq asked directly about the PGconn of a session SOCI
// opened. Used by warmpool/soci.hpp; one header per backend so each backend's code, its
// client-library functions and its compile-time switch sit together.
//
// WARMPOOL_SOCI_POSTGRESQL picks how (the result is WARMPOOL_SOCI_POSTGRESQL_NATIVE):
//   undefined  detect: when <soci/postgresql/soci-postgresql.h> and <libpq-fe.h> are on the
//              include path, the checks are compiled in and libpq's functions are found at run
//              time in the process, which has libpq loaded once SOCI opened a PostgreSQL
//              session (see warmpool/detail/loaded_library.hpp). The program links nothing
//              more than SOCI needs, and sessions open through SOCI's dynamic backend loader.
//              NATIVE = 2. Without the headers NATIVE = 0, and soci_config refuses a
//              "postgresql://" connect string, saying what is missing.
//   =1         libpq's functions are called directly: link libpq (-lpq) and soci_postgresql,
//              whose static factory (soci::postgresql) then opens the sessions, and
//              soci_config also checks the parameters with libpq's parser. NATIVE = 1. The
//              CMake target warmpool::soci defines it for every backend it links.
//   =0         no native checks: the portable fallback documented in warmpool/soci.hpp.
//              NATIVE = 0.
//
// What the checks cost, each bounded by the timeout the pool passes (validation_timeout):
//   is_broken       PQstatus, local.
//   in_transaction  PQtransactionStatus, local.
//   peer_closed     one poll(); a peek (and over plain TCP a read) only when the socket is
//                   readable, which a healthy idle session's never is.
//   ping            the empty query, sent and awaited non-blocking: one round trip.
//   rollback        ROLLBACK, sent and awaited the same way: one round trip.
//   reset           DISCARD ALL, the same way: one round trip.
//   fleet_sample    one SELECT, the same way: one round trip, counting, reading limits and
//                   terminating zombies (see fleet_sample() below).
// A round trip that times out leaves the socket non-blocking, because the pool then closes the
// connection and PQfinish must not block on a server that stopped reading.

#include <soci/soci.h>

#if defined(WARMPOOL_SOCI_POSTGRESQL)
#if (0 - WARMPOOL_SOCI_POSTGRESQL - 1) == 1 // defined with no value: taken as =1
#define WARMPOOL_SOCI_POSTGRESQL_NATIVE 1
#elif WARMPOOL_SOCI_POSTGRESQL
#define WARMPOOL_SOCI_POSTGRESQL_NATIVE 1
#else
#define WARMPOOL_SOCI_POSTGRESQL_NATIVE 0
#endif
#elif __has_include(<soci/postgresql/soci-postgresql.h>) && __has_include(<libpq-fe.h>) &&        \
    __has_include(<dlfcn.h>) && __has_include(<poll.h>)
#define WARMPOOL_SOCI_POSTGRESQL_NATIVE 2
#else
#define WARMPOOL_SOCI_POSTGRESQL_NATIVE 0
#define WARMPOOL_DETAIL_SOCI_POSTGRESQL_MISSING 1
#endif

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
#include <soci/postgresql/soci-postgresql.h>

#include <libpq-fe.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <string>
#include <vector>

#include <sys/socket.h>
#include <sys/types.h>
#endif

#include <chrono>

#define WARMPOOL_DETAIL_SOCI_PG_MODE                                                               \
    WARMPOOL_DETAIL_CAT(soci_pg_mode_, WARMPOOL_SOCI_POSTGRESQL_NATIVE)

namespace warmpool {
namespace detail {
// How this translation unit reaches the client library is part of the names (see
// "One program, one mode" in warmpool/soci.hpp).
inline namespace WARMPOOL_DETAIL_SOCI_PG_MODE {
namespace soci_pg {

#if defined(WARMPOOL_DETAIL_SOCI_POSTGRESQL_MISSING)
/// Why the checks are not compiled in, for soci_config's error.
inline constexpr const char* missing =
#if !__has_include(<soci/postgresql/soci-postgresql.h>)
    "SOCI's header <soci/postgresql/soci-postgresql.h> was not found (install SOCI's "
    "PostgreSQL backend; Debian: libsoci-dev)";
#elif !__has_include(<libpq-fe.h>)
    "libpq's header <libpq-fe.h> was not found: add its directory to the include path "
    "(`pkg-config --cflags libpq`; Debian: -I/usr/include/postgresql, package libpq-dev)";
#else
    "this platform has no <dlfcn.h> or <poll.h> to find libpq at run time: define "
    "WARMPOOL_SOCI_POSTGRESQL=1 and link libpq and soci_postgresql";
#endif
#endif

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE

using steady = std::chrono::steady_clock;
namespace sock = detail::socket_wait;

/// The libpq functions the checks call: linked directly (=1) or found at run time.
struct functions {
    decltype(&::PQstatus) status = nullptr;
    decltype(&::PQsocket) socket = nullptr;
    decltype(&::PQsslInUse) ssl_in_use = nullptr;
    decltype(&::PQconsumeInput) consume_input = nullptr;
    decltype(&::PQisBusy) is_busy = nullptr;
    decltype(&::PQsendQuery) send_query = nullptr;
    decltype(&::PQflush) flush = nullptr;
    decltype(&::PQgetResult) get_result = nullptr;
    decltype(&::PQresultStatus) result_status = nullptr;
    decltype(&::PQclear) clear = nullptr;
    decltype(&::PQisnonblocking) is_nonblocking = nullptr;
    decltype(&::PQsetnonblocking) set_nonblocking = nullptr;
    decltype(&::PQtransactionStatus) transaction_status = nullptr;
    // For fleet_sample(): reading a result's first row and its error, and the server's version.
    decltype(&::PQntuples) ntuples = nullptr;
    decltype(&::PQnfields) nfields = nullptr;
    decltype(&::PQgetvalue) get_value = nullptr;
    decltype(&::PQgetisnull) get_is_null = nullptr;
    decltype(&::PQresultErrorField) result_error_field = nullptr;
    decltype(&::PQerrorMessage) error_message = nullptr;
    decltype(&::PQserverVersion) server_version = nullptr;
};

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE == 2
/// Fills `f` from one scope; true when every function was there.
inline bool fill(functions& f, void* scope) noexcept {
    bool all = true;
    const auto get = [&](auto& fn, const char* name) {
        void* const address = loaded_library::find(scope, name);
        all = all && address != nullptr;
        if (address != nullptr) {
            loaded_library::assign(fn, address);
        }
    };
    get(f.status, "PQstatus");
    get(f.socket, "PQsocket");
    get(f.ssl_in_use, "PQsslInUse");
    get(f.consume_input, "PQconsumeInput");
    get(f.is_busy, "PQisBusy");
    get(f.send_query, "PQsendQuery");
    get(f.flush, "PQflush");
    get(f.get_result, "PQgetResult");
    get(f.result_status, "PQresultStatus");
    get(f.clear, "PQclear");
    get(f.is_nonblocking, "PQisnonblocking");
    get(f.set_nonblocking, "PQsetnonblocking");
    get(f.transaction_status, "PQtransactionStatus");
    get(f.ntuples, "PQntuples");
    get(f.nfields, "PQnfields");
    get(f.get_value, "PQgetvalue");
    get(f.get_is_null, "PQgetisnull");
    get(f.result_error_field, "PQresultErrorField");
    get(f.error_message, "PQerrorMessage");
    get(f.server_version, "PQserverVersion");
    return all;
}
#endif

/// The table, or nullptr when libpq's functions cannot be found in this process. Resolved once,
/// on first use, which is always with a PostgreSQL session open: libpq is loaded by then.
inline const functions* api() noexcept {
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE == 1
    static const functions linked{&::PQstatus,
                                  &::PQsocket,
                                  &::PQsslInUse,
                                  &::PQconsumeInput,
                                  &::PQisBusy,
                                  &::PQsendQuery,
                                  &::PQflush,
                                  &::PQgetResult,
                                  &::PQresultStatus,
                                  &::PQclear,
                                  &::PQisnonblocking,
                                  &::PQsetnonblocking,
                                  &::PQtransactionStatus,
                                  &::PQntuples,
                                  &::PQnfields,
                                  &::PQgetvalue,
                                  &::PQgetisnull,
                                  &::PQresultErrorField,
                                  &::PQerrorMessage,
                                  &::PQserverVersion};
    return &linked;
#else
    return loaded_library::resolve_once<functions>({"libsoci_postgresql", "libpq.so"}, &fill);
#endif
}

/// What the connect error says when api() is nullptr.
inline constexpr const char* unresolved =
    "libpq's functions (PQstatus, PQsendQuery, ...) were not found in this process, so the "
    "native checks cannot run (looked in the global scope, SOCI's libsoci_postgresql and "
    "libpq.so*). Link libpq and soci_postgresql and define WARMPOOL_SOCI_POSTGRESQL=1, or "
    "define WARMPOOL_SOCI_POSTGRESQL=0 for the portable fallback";

inline PGconn* conn(soci::session& s) noexcept {
    return static_cast<soci::postgresql_session_backend*>(s.get_backend())->conn_;
}

inline bool is_broken(soci::session& s) noexcept {
    const functions* const pq = api();
    PGconn* const c = conn(s);
    return pq == nullptr || c == nullptr || pq->status(c) == CONNECTION_BAD;
}

inline bool in_transaction(soci::session& s) noexcept {
    const functions* const pq = api();
    PGconn* const c = conn(s);
    return pq == nullptr || c == nullptr || pq->transaction_status(c) != PQTRANS_IDLE;
}

/// True when the bytes waiting on the socket hold an ErrorResponse. While a session is idle the
/// server sends one only right before closing it (idle_session_timeout, pg_terminate_backend,
/// shutdown), but libpq takes it for a notice and reports the death only once the end of the
/// stream arrives, which can be milliseconds later than the check. So peek at the raw messages
/// (type byte, then a big-endian length that counts itself). Plain TCP only.
inline bool error_pending(int fd) noexcept {
    unsigned char buf[512];
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    std::size_t at = 0;
    while (n > 0 && at < static_cast<std::size_t>(n)) {
        if (buf[at] == 'E') {
            return true;
        }
        if (at + 5 > static_cast<std::size_t>(n)) {
            return false;
        }
        const std::size_t length = (std::size_t{buf[at + 1]} << 24) |
                                   (std::size_t{buf[at + 2]} << 16) |
                                   (std::size_t{buf[at + 3]} << 8) | std::size_t{buf[at + 4]};
        if (length < 4) {
            return false;
        }
        at += 1 + length;
    }
    return false;
}

/// An idle TLS session's socket, as poll() saw it (`revents`, non-zero). The bytes are TLS
/// records: the check cannot look into them without consuming them, and letting libpq consume
/// them is worse than useless, because it takes the server's FATAL message for a notice and
/// finds the connection fine as long as the close_notify alert and the end of the stream that
/// follow have not arrived (across a network they can come a lost segment later). So only a
/// hang-up is `closed`; bytes without one are `unsure`, and the pool pings at once: the ping
/// reads them, passes over a notification, and fails on a FATAL message. PostgreSQL sends no
/// TLS session tickets, so the socket of a healthy idle session holds nothing: no extra ping.
inline peer_state tls_socket_state(int fd, short revents) noexcept {
    if ((revents & sock::hangup_events) != 0) {
        return peer_state::closed;
    }
    // Where poll() has no POLLRDHUP, the end of the stream shows only as readable.
    char byte = 0;
    const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        return peer_state::closed;
    }
    return peer_state::unsure;
}

/// What the idle session's socket says, in one zero-timeout poll() when nothing arrived (the
/// usual case). Plain TCP: a hang-up or a FATAL message is `closed`; other bytes (a
/// notification, a ParameterStatus) libpq reads and judges, so the answer is `closed` or
/// `open`. TLS (PQsslInUse): see tls_socket_state.
inline peer_state peer_closed(soci::session& s) noexcept {
    const functions* const pq = api();
    PGconn* const c = conn(s);
    if (pq == nullptr || c == nullptr || pq->status(c) == CONNECTION_BAD) {
        return peer_state::closed;
    }
    const int fd = pq->socket(c);
    if (fd < 0) {
        return peer_state::closed;
    }
    short revents = sock::now(fd);
    if (revents != 0 && pq->ssl_in_use(c) != 0) {
        return tls_socket_state(fd, revents);
    }
    // A FATAL message and the end of the stream may arrive apart: look a few times.
    for (int round = 0; revents != 0; ++round) {
        if ((revents & sock::hangup_events) != 0 || error_pending(fd)) {
            return peer_state::closed;
        }
        // Readable while idle: a NOTIFY or a ParameterStatus is not death; let libpq read it
        // and judge. PQisBusy() makes it parse what arrived.
        if (pq->consume_input(c) == 0) {
            return peer_state::closed;
        }
        (void)pq->is_busy(c);
        if (pq->status(c) == CONNECTION_BAD) {
            return peer_state::closed;
        }
        if (round == 2) {
            break;
        }
        revents = sock::now(fd);
    }
    return peer_state::open;
}

/// Makes closing the session send nothing (see socket_wait::silence).
inline void abandon(soci::session& s) noexcept {
    const functions* const pq = api();
    PGconn* const c = conn(s);
    if (pq != nullptr && c != nullptr) {
        sock::silence(pq->socket(c));
    }
}

/// Sends `sql` and reads all its results, never blocking past `deadline`, handing each to
/// `on_result` before it is cleared. True when every result was a success; false also when
/// the deadline passed or the connection failed (`io_failed` then tells which: the connection
/// may be mid-query). The connection must be non-blocking already. Throws only what
/// `on_result` throws (a result it threw on is leaked: the caller closes the connection).
template <class OnResult>
bool send_and_collect(const functions& pq, PGconn* c, const char* sql, steady::time_point deadline,
                      OnResult&& on_result, bool* io_failed = nullptr) {
    const auto lost = [&] {
        if (io_failed != nullptr) {
            *io_failed = true;
        }
        return false;
    };
    const int fd = pq.socket(c);
    if (pq.send_query(c, sql) == 0) {
        return lost();
    }
    for (;;) {
        const int flushed = pq.flush(c);
        if (flushed < 0) {
            return lost();
        }
        if (flushed == 0) {
            break;
        }
        if (sock::until(fd, POLLOUT | POLLIN, deadline) == 0 || pq.consume_input(c) == 0) {
            return lost();
        }
    }
    bool succeeded = true;
    for (;;) {
        while (pq.is_busy(c) != 0) {
            if (sock::until(fd, POLLIN, deadline) == 0 || pq.consume_input(c) == 0) {
                return lost();
            }
        }
        PGresult* const result = pq.get_result(c);
        if (result == nullptr) {
            break;
        }
        const ExecStatusType status = pq.result_status(result);
        if (status != PGRES_EMPTY_QUERY && status != PGRES_COMMAND_OK &&
            status != PGRES_TUPLES_OK) {
            succeeded = false;
        }
        on_result(result);
        pq.clear(result);
    }
    return succeeded;
}

/// Sends `sql` and reads all its results, never blocking past `deadline`. True when every
/// result was a success. The connection must be non-blocking already.
inline bool send_and_await(const functions& pq, PGconn* c, const char* sql,
                           steady::time_point deadline) noexcept {
    return send_and_collect(pq, c, sql, deadline, [](PGresult*) noexcept {});
}

/// One statement, one round trip, bounded by `timeout`. On a timeout or a failure the
/// connection may be mid-query: it is left non-blocking, so that PQfinish, when the pool closes
/// it, does not block on a server that stopped reading.
inline bool exec_bounded(soci::session& s, const char* sql,
                         std::chrono::milliseconds timeout) noexcept {
    const functions* const pq = api();
    PGconn* const c = conn(s);
    if (pq == nullptr || c == nullptr || pq->status(c) != CONNECTION_OK || pq->is_busy(c) != 0) {
        return false;
    }
    const auto deadline = steady::now() + timeout;
    const bool was_nonblocking = pq->is_nonblocking(c) != 0;
    if (!was_nonblocking && pq->set_nonblocking(c, 1) != 0) {
        return false;
    }
    if (!send_and_await(*pq, c, sql, deadline)) {
        return false;
    }
    if (!was_nonblocking && pq->set_nonblocking(c, 0) != 0) {
        return false;
    }
    return pq->status(c) == CONNECTION_OK;
}

/// The empty query: the cheapest round trip the server answers.
inline bool ping(soci::session& s, std::chrono::milliseconds timeout) noexcept {
    return exec_bounded(s, "", timeout);
}

/// True when no transaction is open afterwards.
inline bool rollback(soci::session& s, std::chrono::milliseconds timeout) noexcept {
    return exec_bounded(s, "ROLLBACK", timeout) && !in_transaction(s);
}

/// DISCARD ALL: SET SESSION AUTHORIZATION DEFAULT and RESET ALL (so SET ROLE, search_path and
/// every other SET), DEALLOCATE ALL (prepared statements: a soci::statement must not outlive
/// its lease), CLOSE ALL, UNLISTEN *, pg_advisory_unlock_all(), DISCARD PLANS, TEMP and
/// SEQUENCES. Parameters given at connect time (options='-c ...') are the defaults RESET ALL
/// returns to, so they survive.
inline bool reset(soci::session& s, std::chrono::milliseconds timeout) noexcept {
    return exec_bounded(s, "DISCARD ALL", timeout) && !in_transaction(s);
}

// --- The fleet policy (warmpool/fleet.hpp) ------------------------------------------------

/// The advisory lock space a reaper marks its victims in: pg_try_advisory_xact_lock(key, pid),
/// held until its statement ends. "wpfl" in ASCII; only another program using the same
/// two-key lock with this first key could meet it.
inline constexpr long fleet_lock_key = 0x7770666c;

/// The longest idle time the statement compares with: about 100 years (options::forever).
/// Longer would only push now() - interval out of the timestamp range (or the interval's
/// own), failing every sample; nothing has been idle that long.
inline constexpr long long fleet_idle_most_ms = 3'155'760'000'000;

/// The fleet sample's one statement, from constant text and the request's numbers (integers
/// only: nothing a user wrote is interpolated). Columns, in order:
///   0 client backends on the server   1 those of this session's user   2 zombies terminated
///   3 application_name is empty       4 max_connections   5 superuser_reserved_connections
///   6 reserved_connections (PostgreSQL 16; NULL before)   7 the user's CONNECTION LIMIT
///   8 the database's                  9 the user is a superuser
///   10 client backends connected to this database (every user's)
///   11 rounds of about a millisecond spent waiting for the terminated to exit (0 when not
///      reaping)
/// pg_stat_get_activity(NULL) is read once (a CTE used twice is materialized), not through the
/// pg_stat_activity view, whose joins to pg_database and pg_authid made planning cost more
/// than the rest of the statement. The counts come from that snapshot, taken before anything
/// is terminated (the aggregate reads the CTE before the target list runs the reaping
/// subqueries), so every zombie terminated is in them once. See fleet_sample() for why each
/// condition is there.
inline std::string fleet_sql(const fleet_request& req, long long exit_wait_rounds) {
    std::string sql =
        "WITH RECURSIVE me AS (SELECT r.oid AS role, r.rolconnlimit, r.rolsuper, d.oid AS db,"
        " d.datconnlimit FROM pg_catalog.pg_roles r, pg_catalog.pg_database d"
        " WHERE r.rolname = session_user AND d.datname = pg_catalog.current_database()),"
        " activity AS (SELECT datid, pid, usesysid, application_name, state, state_change,"
        " backend_type FROM pg_catalog.pg_stat_get_activity(NULL))";
    if (req.reap) {
        const long long idle_ms = std::min(
            std::max(0LL, static_cast<long long>(req.reap_idle_after.count())), fleet_idle_most_ms);
        sql += ", victims AS (SELECT a.pid, a.state_change FROM activity a, me"
               " WHERE pg_catalog.current_setting('application_name') <> ''"
               " AND a.usesysid = me.role AND a.datid = me.db"
               " AND a.application_name = pg_catalog.current_setting('application_name')"
               " AND a.state = 'idle' AND a.backend_type = 'client backend'"
               " AND a.pid <> pg_catalog.pg_backend_pid()"
               " AND a.state_change <= pg_catalog.now() - interval '" +
               std::to_string(idle_ms) + " milliseconds' ORDER BY a.state_change, a.pid LIMIT " +
               std::to_string(req.reap_max) +
               "), signalled AS (SELECT a.pid, CASE"
               // A backend gone meanwhile makes pg_terminate_backend warn; the warning is no
               // news to anyone, so it is kept from the client (for this statement only).
               " WHEN pg_catalog.set_config('client_min_messages', 'error', true) = '' THEN false"
               " WHEN NOT pg_catalog.pg_try_advisory_xact_lock(" +
               std::to_string(fleet_lock_key) +
               ", a.pid) THEN false"
               // The snapshot above may be a few milliseconds old by now: drop it and read this
               // backend alone again, just before the signal. Still idle since the same moment
               // means it has sent nothing since the snapshot.
               " WHEN pg_catalog.pg_stat_clear_snapshot() IS NULL THEN false"
               " WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(a.pid) fresh"
               " WHERE fresh.state = 'idle' AND fresh.state_change = a.state_change) THEN false"
               // No wait here (the two-argument form polls every 100 ms, one victim after the
               // other): all are signalled first, then waited for together below.
               " ELSE pg_catalog.pg_terminate_backend(a.pid) END AS ended FROM victims a),"
               // Until the signalled have exited (or the rounds run out) the statement, and so
               // its advisory locks, lasts: another reaper that read one of them as idle
               // skips it meanwhile, and finds it gone afterwards.
               " waiting (round, alive) AS (SELECT 0, (SELECT count(*) FROM signalled WHERE ended)"
               " UNION ALL SELECT w.round + 1, (SELECT count(*) FROM signalled s WHERE s.ended"
               // w.round makes the subquery correlated, so it runs again at each round.
               " AND w.round >= 0 AND EXISTS (SELECT 1 FROM"
               " pg_catalog.pg_stat_get_activity(s.pid)))"
               " FROM waiting w WHERE CASE WHEN w.alive = 0 OR w.round >= " +
               std::to_string(exit_wait_rounds) +
               " THEN false"
               " WHEN pg_catalog.pg_sleep(0.001) IS NULL THEN false"
               " WHEN pg_catalog.pg_stat_clear_snapshot() IS NULL THEN false ELSE true END)";
    }
    // A role without pg_read_all_stats sees other roles' sessions without backend_type: those
    // count when they have a database and a user, as client backends have (and autovacuum and
    // parallel workers too, which overcounts by a few at most, on the safe side).
    const char* const client = "(a.backend_type = 'client backend' OR"
                               " (a.backend_type IS NULL AND a.datid IS NOT NULL AND"
                               " a.usesysid IS NOT NULL))";
    sql += std::string(" SELECT count(*) FILTER (WHERE ") + client +
           "), count(*) FILTER (WHERE a.usesysid = me.role AND a.backend_type = 'client "
           "backend'),";
    sql += req.reap ? " (SELECT count(*) FROM signalled WHERE ended)," : " 0,";
    sql += std::string(" pg_catalog.current_setting('application_name') = '',"
                       " pg_catalog.current_setting('max_connections'),"
                       " pg_catalog.current_setting('superuser_reserved_connections'),"
                       " pg_catalog.current_setting('reserved_connections', true),"
                       " me.rolconnlimit, me.datconnlimit, me.rolsuper,"
                       " count(*) FILTER (WHERE a.datid = me.db AND ") +
           client + "),";
    sql += req.reap ? " (SELECT max(round) FROM waiting)" : " 0";
    sql += " FROM activity a, me GROUP BY me.rolconnlimit, me.datconnlimit, me.rolsuper";
    return sql;
}

/// The first row of a result: each column's text, "" for NULL (`null` tells).
struct fleet_row {
    std::vector<std::string> value;
    std::vector<bool> null;

    long long number(std::size_t i, long long otherwise = 0) const noexcept {
        if (i >= value.size() || null[i] || value[i].empty()) {
            return otherwise;
        }
        char* end = nullptr;
        const long long n = std::strtoll(value[i].c_str(), &end, 10);
        return end != nullptr && *end == '\0' ? n : otherwise;
    }
    bool flag(std::size_t i) const noexcept {
        return i < value.size() && !null[i] && value[i] == "t";
    }
};

/// libpq's text as one line, for an error message.
inline std::string one_line(const char* text) {
    std::string out;
    for (const char* p = text; p != nullptr && *p != '\0'; ++p) {
        const bool blank = *p == '\n' || *p == '\r' || *p == '\t' || *p == ' ';
        if (!blank) {
            out += *p;
        } else if (!out.empty() && out.back() != ' ') {
            out += ' ';
        }
    }
    while (!out.empty() && out.back() == ' ') {
        out.pop_back();
    }
    return out;
}

/// The user's limit that binds, and the connections counted against it: of the role's
/// CONNECTION LIMIT (the role's connections to every database) and the database's (every
/// role's connections to this database), the fuller one. Limits of -1 (none) and 0 (nobody
/// new gets in, so there is no slot to give back either) are no limit.
struct fleet_user_limit {
    long long capacity = 0;
    long long in_use = 0;
};

inline fleet_user_limit binding_user_limit(long long role_limit, long long role_in_use,
                                           long long db_limit, long long db_in_use) {
    fleet_user_limit out{0, role_in_use};
    const bool role = role_limit > 0;
    const bool db = db_limit > 0;
    if (role && (!db || static_cast<double>(role_in_use) * static_cast<double>(db_limit) >
                            static_cast<double>(db_in_use) * static_cast<double>(role_limit))) {
        out = {role_limit, role_in_use};
    } else if (db) {
        out = {db_limit, db_in_use};
    }
    return out;
}

/// `what` with the statement the pool needs about the connection after a failure.
inline std::string fleet_failure(fleet_reading& r, std::string what) {
    return what +
           (r.usable ? "; the connection can be reused" : "; the connection cannot be reused");
}

/// What fleet_sample() does, in one round trip bounded by `timeout` (see warmpool/fleet.hpp
/// for the policy and fleet_sql() for the statement):
///
///   counts    pg_stat_activity's client backends, all and this session user's, from the
///             snapshot the statement reads first; the zombies it then terminates are
///             subtracted (they are gone, or going, by the time the pool decides).
///   capacity  max_connections - superuser_reserved_connections - reserved_connections (16+).
///             The user's limit: PostgreSQL refuses a non-superuser's connection when either
///             the role's CONNECTION LIMIT (counting the role's connections to every database)
///             or the database's (counting every role's connections to it) is reached. Each is
///             compared with its own count, and user_capacity / user_in_use report the fuller
///             of the two (in use / limit; the lower limit on a tie): e.g. a database limit of
///             5 with 4 connections of other roles and 1 of this one reads "5 of 5", while the
///             role's limit of 20 reads 1 of 20. user_in_use is the role's count when neither
///             limit is set (superusers have neither). Both capacities are filled at every
///             sample (the limits come with the statement anyway): which limit binds can change
///             with the counts, and user_in_use is only meaningful with this sample's
///             user_capacity.
///   reap      in the same statement, pg_terminate_backend on at most reap_max sessions with
///             this session's user, database and application_name (which must be set: with an
///             empty one nothing is reaped and reap_error says so), state 'idle' exactly (never
///             'idle in transaction', never 'active'), a client backend, not this one, idle
///             since reap_idle_after or longer (at most about 100 years), oldest first. Each
///             victim is taken in turn: a transaction-level advisory lock on its pid (key
///             fleet_lock_key; one another reaper holds means skip it), then the activity
///             snapshot is dropped (pg_stat_clear_snapshot) and that backend read again
///             (pg_stat_get_activity(pid)): only if it is still 'idle' with the same
///             state_change is it signalled, and counted when pg_terminate_backend returns
///             true. pg_terminate_backend(pid) does not wait (the two-argument form polls every
///             100 ms, one victim after the other); instead, once all are signalled, the
///             statement polls every millisecond until every one has exited, for at most a
///             quarter of the timeout and 200 ms. Victims exit in a few milliseconds, together,
///             so the statement is one quick round trip whatever reap_max is, and its advisory
///             locks last until its victims are gone: another reaper that read one of them as
///             idle skips it, then no longer finds it. Exactly once, then, except for a victim
///             that takes longer than that wait to exit (a stopped or starved process), which a
///             second reaper can find still 'idle' and count again: its reaped is then one too
///             high and its counts one too low, for that sample only.
///   user      session_user: the login role, which pg_stat_activity shows and CONNECTION LIMIT
///             counts (current_user differs after SET ROLE).
///
/// What remains: a session that sends a statement in the microseconds between its re-read and
/// the signal is terminated as that statement starts. Its client gets an error (the
/// connection was terminated), the statement and its transaction are not committed, nothing it
/// did is silently lost. A session that sends nothing for reap_idle_after is at no other risk,
/// and one that sent anything since the statement's snapshot is left alone.
///
/// What reaping cannot see: session state outside a transaction, such as session-level
/// advisory locks, LISTEN or temporary tables of an idle session of the same application. A
/// zombie's owner is gone, so nothing waits for them; a live instance's connection idle that
/// long (reap_idle_after too short) loses them with the connection.
///
/// A timeout or an I/O error leaves the connection mid-query (ok = false, usable = false: the
/// pool closes it); an error the server reported is read to the end (usable = true). Each error
/// text ends by saying which.
inline fleet_reading fleet_sample(soci::session& s, const fleet_request& req,
                                  std::chrono::milliseconds timeout) noexcept {
    fleet_reading r;
    try {
        const functions* const pq = api();
        PGconn* const c = conn(s);
        if (pq == nullptr || c == nullptr || pq->status(c) != CONNECTION_OK) {
            r.usable = false;
            r.error = fleet_failure(r, "the fleet sample was not sent: the connection is broken");
            return r;
        }
        if (pq->is_busy(c) != 0 || pq->transaction_status(c) != PQTRANS_IDLE) {
            // The advisory locks and the setting would outlive the statement inside a
            // transaction; the pool samples only after its rollback, so this is a caller's bug.
            r.error = fleet_failure(r, "the fleet sample was not sent: the connection is inside "
                                       "a transaction or busy (sample only after the rollback "
                                       "at give-back)");
            return r;
        }
        const auto start = steady::now();
        const auto deadline = start + timeout;
        // Waiting for the terminated to exit takes a few milliseconds; one stuck (stopped,
        // or on a swamped host) is waited for at most a quarter of the timeout, and 200 ms.
        const long long exit_wait_rounds =
            std::min<long long>(200, std::max<long long>(1, timeout.count() / 4));
        const std::string sql = fleet_sql(req, exit_wait_rounds);
        const bool was_nonblocking = pq->is_nonblocking(c) != 0;
        if (!was_nonblocking && pq->set_nonblocking(c, 1) != 0) {
            r.usable = false;
            r.error = fleet_failure(r, "the fleet sample was not sent: libpq cannot make the "
                                       "connection non-blocking");
            return r;
        }
        fleet_row row;
        std::string server_error;
        bool io_failed = false;
        const bool succeeded = send_and_collect(
            *pq, c, sql.c_str(), deadline,
            [&](PGresult* result) {
                const ExecStatusType status = pq->result_status(result);
                if (status == PGRES_TUPLES_OK && row.value.empty() && pq->ntuples(result) > 0) {
                    const int n = pq->nfields(result);
                    for (int i = 0; i < n; ++i) {
                        row.null.push_back(pq->get_is_null(result, 0, i) != 0);
                        row.value.emplace_back(pq->get_value(result, 0, i));
                    }
                } else if (status != PGRES_TUPLES_OK && server_error.empty()) {
                    const char* primary = pq->result_error_field(result, PG_DIAG_MESSAGE_PRIMARY);
                    const char* state = pq->result_error_field(result, PG_DIAG_SQLSTATE);
                    server_error = one_line(primary != nullptr ? primary : "no message");
                    if (state != nullptr) {
                        server_error += std::string(" (SQLSTATE ") + state + ")";
                    }
                }
            },
            &io_failed);
        if (io_failed || pq->status(c) != CONNECTION_OK) {
            r.usable = false;
            const long long waited =
                std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - start)
                    .count();
            if (steady::now() >= deadline) {
                r.error = fleet_failure(r, "the fleet sample got no answer within " +
                                               std::to_string(timeout.count()) +
                                               " ms (the server or the network is stalled)");
            } else {
                r.error =
                    fleet_failure(r, "the fleet sample failed after " + std::to_string(waited) +
                                         " ms: " + one_line(pq->error_message(c)));
            }
            return r;
        }
        if (!was_nonblocking && pq->set_nonblocking(c, 0) != 0) {
            r.usable = false;
        }
        if (!succeeded || row.value.size() < 12) {
            r.error = fleet_failure(
                r, "the fleet sample's query failed on the server: " +
                       (server_error.empty() ? std::string("no row came back") : server_error));
            return r;
        }
        if (!r.usable) {
            // Answered, but libpq would not make the socket blocking again, as SOCI needs it.
            r.error = fleet_failure(r, "the fleet sample was answered, but libpq cannot make the "
                                       "connection blocking again");
            return r;
        }
        const auto count = [](long long n) {
            return static_cast<std::size_t>(std::max(0LL, n));
        };
        const long long reaped = std::max(0LL, row.number(2));
        r.reaped = static_cast<unsigned>(reaped);
        // Every zombie terminated was in the snapshot the counts come from, in each of them:
        // a client backend of this user, connected to this database.
        r.server_in_use = count(row.number(0) - reaped);
        const long long role_in_use = std::max(0LL, row.number(1) - reaped);
        const long long db_in_use = std::max(0LL, row.number(10) - reaped);
        if (req.reap && row.flag(3)) {
            r.reap_error = "not reaping: this session's application_name is empty, so its "
                           "zombies cannot be told from other applications' connections; set "
                           "soci_config::application_name (or application_name in the connect "
                           "string)";
        }
        r.server_capacity =
            count(row.number(4) - row.number(5) - row.number(6)); // NULL reserved: 0
        const fleet_user_limit user =
            row.flag(9)
                ? fleet_user_limit{0, role_in_use}
                : binding_user_limit(row.number(7, -1), role_in_use, row.number(8, -1), db_in_use);
        r.user_capacity = count(user.capacity);
        r.user_in_use = count(user.in_use);
        r.ok = true;
        return r;
    } catch (...) {
        // Out of memory, perhaps between reading results: the connection may be mid-query.
        r.ok = false;
        r.usable = false;
        r.error = "the fleet sample failed: out of memory; the connection cannot be reused";
        return r;
    }
}

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE == 1
/// libpq's complaint about a conninfo string, "" when it parses. Only where libpq is linked:
/// soci_config's constructor runs before any session exists, so before a program that relies on
/// SOCI's loader has libpq loaded.
inline std::string parse_error(const std::string& conninfo) {
    char* error = nullptr;
    PQconninfoOption* const parsed = ::PQconninfoParse(conninfo.c_str(), &error);
    if (parsed != nullptr) {
        ::PQconninfoFree(parsed);
        return {};
    }
    std::string why = error != nullptr ? error : "out of memory";
    ::PQfreemem(error);
    return why;
}
#endif

#endif // WARMPOOL_SOCI_POSTGRESQL_NATIVE

} // namespace soci_pg
} // namespace WARMPOOL_DETAIL_SOCI_PG_MODE
} // namespace detail
} // namespace warmpool
// ---- end warmpool/soci/postgresql.hpp ----
// ---- begin warmpool/soci/sqlite3.hpp ----

// The SOCI adapter's SQLite checks: libsqlite3 asked directly about the sqlite3 handle of a
// session SOCI opened. Used by warmpool/soci.hpp; one header per backend so each backend's code,
// its client-library functions and its compile-time switch sit together.
//
// WARMPOOL_SOCI_SQLITE3 picks how (the result is WARMPOOL_SOCI_SQLITE3_NATIVE):
//   undefined  detect: when <soci/sqlite3/soci-sqlite3.h> and <sqlite3.h> are on the include
//              path, the checks are compiled in and libsqlite3's functions are found at run time
//              in the process, which has it loaded once SOCI opened an SQLite session (see
//              warmpool/detail/loaded_library.hpp). NATIVE = 2. Without the headers NATIVE = 0,
//              and soci_config refuses a "sqlite3://" connect string.
//   =1         called directly: link sqlite3 and soci_sqlite3, whose static factory
//              (soci::sqlite3) then opens the sessions. NATIVE = 1.
//   =0         no native checks: the portable fallback documented in warmpool/soci.hpp.
//
// Everything runs in process; there is no server to hang, so no check waits on a socket:
//   is_broken       the handle is there. peer_closed: false (no socket).
//   in_transaction  sqlite3_get_autocommit, local.
//   ping            SELECT 1.
//   rollback        ROLLBACK; true when autocommit is back on.
//   reset           drops every object of the temp schema (TEMP tables, views, triggers) and
//                   detaches every ATTACHed database. PRAGMAs set on the connection (foreign_keys,
//                   busy_timeout, cache_size, ...) and functions registered on the handle cannot
//                   be reset generically and persist: set them in soci_config::on_connect, which
//                   reset_on_release runs again after every reset, so a lease that changes one
//                   hands the next lease the on_connect value, or the value it left for PRAGMAs
//                   on_connect does not set.

#include <soci/soci.h>

#if defined(WARMPOOL_SOCI_SQLITE3)
#if (0 - WARMPOOL_SOCI_SQLITE3 - 1) == 1 // defined with no value: taken as =1
#define WARMPOOL_SOCI_SQLITE3_NATIVE 1
#elif WARMPOOL_SOCI_SQLITE3
#define WARMPOOL_SOCI_SQLITE3_NATIVE 1
#else
#define WARMPOOL_SOCI_SQLITE3_NATIVE 0
#endif
#elif __has_include(<soci/sqlite3/soci-sqlite3.h>) && __has_include(<sqlite3.h>) &&               \
    __has_include(<dlfcn.h>)
#define WARMPOOL_SOCI_SQLITE3_NATIVE 2
#else
#define WARMPOOL_SOCI_SQLITE3_NATIVE 0
#define WARMPOOL_DETAIL_SOCI_SQLITE3_MISSING 1
#endif

#if WARMPOOL_SOCI_SQLITE3_NATIVE
#include <soci/sqlite3/soci-sqlite3.h> // declares SQLite's API in namespace sqlite_api

#include <string>
#include <utility>
#include <vector>
#endif

#include <chrono>

#define WARMPOOL_DETAIL_SOCI_LITE_MODE                                                             \
    WARMPOOL_DETAIL_CAT(soci_lite_mode_, WARMPOOL_SOCI_SQLITE3_NATIVE)

namespace warmpool {
namespace detail {
// How this translation unit reaches the client library is part of the names (see
// "One program, one mode" in warmpool/soci.hpp).
inline namespace WARMPOOL_DETAIL_SOCI_LITE_MODE {
namespace soci_lite {

#if defined(WARMPOOL_DETAIL_SOCI_SQLITE3_MISSING)
/// Why the checks are not compiled in, for soci_config's error.
inline constexpr const char* missing =
#if !__has_include(<soci/sqlite3/soci-sqlite3.h>)
    "SOCI's header <soci/sqlite3/soci-sqlite3.h> was not found (install SOCI's SQLite "
    "backend; Debian: libsoci-dev)";
#elif !__has_include(<sqlite3.h>)
    "SQLite's header <sqlite3.h> was not found: add its directory to the include path "
    "(`pkg-config --cflags sqlite3`; Debian: package libsqlite3-dev)";
#else
    "this platform has no <dlfcn.h> to find libsqlite3 at run time: define "
    "WARMPOOL_SOCI_SQLITE3=1 and link sqlite3 and soci_sqlite3";
#endif
#endif

#if WARMPOOL_SOCI_SQLITE3_NATIVE

/// The SQLite functions the checks call: linked directly (=1) or found at run time.
struct functions {
    decltype(&sqlite_api::sqlite3_get_autocommit) get_autocommit = nullptr;
    decltype(&sqlite_api::sqlite3_exec) exec = nullptr;
};

#if WARMPOOL_SOCI_SQLITE3_NATIVE == 2
/// Fills the table from one scope; false when a function is missing there.
inline bool fill(functions& f, void* scope) noexcept {
    void* const autocommit = loaded_library::find(scope, "sqlite3_get_autocommit");
    void* const exec = loaded_library::find(scope, "sqlite3_exec");
    if (autocommit == nullptr || exec == nullptr) {
        return false;
    }
    loaded_library::assign(f.get_autocommit, autocommit);
    loaded_library::assign(f.exec, exec);
    return true;
}
#endif

/// The table, or nullptr when SQLite's functions cannot be found in this process. Resolved
/// once, on first use, which is always with an SQLite session open.
inline const functions* api() noexcept {
#if WARMPOOL_SOCI_SQLITE3_NATIVE == 1
    static const functions linked{&sqlite_api::sqlite3_get_autocommit, &sqlite_api::sqlite3_exec};
    return &linked;
#else
    return loaded_library::resolve_once<functions>({"libsoci_sqlite3", "libsqlite3.so"}, &fill);
#endif
}

/// What the connect error says when api() is nullptr.
inline constexpr const char* unresolved =
    "SQLite's functions (sqlite3_get_autocommit, sqlite3_exec) were not found in this process, "
    "so the native checks cannot run (looked in the global scope, SOCI's libsoci_sqlite3 and "
    "libsqlite3.so*). Link sqlite3 and soci_sqlite3 and define WARMPOOL_SOCI_SQLITE3=1, or "
    "define WARMPOOL_SOCI_SQLITE3=0 for the portable fallback";

inline sqlite_api::sqlite3* handle(soci::session& s) noexcept {
    return static_cast<soci::sqlite3_session_backend*>(s.get_backend())->conn_;
}

inline bool is_broken(soci::session& s) noexcept {
    return api() == nullptr || handle(s) == nullptr;
}

inline bool in_transaction(soci::session& s) noexcept {
    const functions* const lite = api();
    sqlite_api::sqlite3* const db = handle(s);
    return lite == nullptr || db == nullptr || lite->get_autocommit(db) == 0;
}

/// Runs `sql`; SQLITE_OK (0) or SQLite's error code.
inline int exec(const functions& lite, sqlite_api::sqlite3* db, const char* sql) noexcept {
    return lite.exec(db, sql, nullptr, nullptr, nullptr);
}

inline bool ping(soci::session& s, std::chrono::milliseconds) noexcept {
    const functions* const lite = api();
    sqlite_api::sqlite3* const db = handle(s);
    return lite != nullptr && db != nullptr && exec(*lite, db, "SELECT 1") == 0;
}

/// In process, so there is nothing for `timeout` to bound. True when autocommit is back on:
/// ROLLBACK fails with nothing open, and with statements still running it may leave the
/// transaction open, which is what counts.
inline bool rollback(soci::session& s, std::chrono::milliseconds) noexcept {
    const functions* const lite = api();
    sqlite_api::sqlite3* const db = handle(s);
    if (lite == nullptr || db == nullptr) {
        return false;
    }
    (void)exec(*lite, db, "ROLLBACK");
    return lite->get_autocommit(db) != 0;
}

/// `name` as a quoted identifier.
inline std::string quoted(const std::string& name) {
    std::string out = "\"";
    for (const char c : name) {
        out += c;
        if (c == '"') {
            out += '"';
        }
    }
    return out + "\"";
}

/// The temp schema emptied and attached databases detached (see the top of this file).
inline bool reset(soci::session& s, std::chrono::milliseconds) noexcept {
    const functions* const lite = api();
    sqlite_api::sqlite3* const db = handle(s);
    if (lite == nullptr || db == nullptr) {
        return false;
    }
    try {
        using rows = std::vector<std::pair<std::string, std::string>>;
        // Triggers first (a TEMP trigger may sit on a main table), then views, then tables
        // (their indexes and triggers go with them).
        rows temp;
        const auto collect = [](void* out, int columns, char** values, char**) -> int {
            if (columns >= 2 && values[0] != nullptr && values[1] != nullptr) {
                static_cast<rows*>(out)->emplace_back(values[0], values[1]);
            }
            return 0;
        };
        if (lite->exec(db,
                       "SELECT type, name FROM sqlite_temp_master WHERE type IN "
                       "('trigger', 'view', 'table') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                       "ORDER BY CASE type WHEN 'trigger' THEN 0 WHEN 'view' THEN 1 ELSE 2 END",
                       collect, &temp, nullptr) != 0) {
            return false;
        }
        for (const auto& [type, name] : temp) {
            const std::string drop = "DROP " + type + " IF EXISTS temp." + quoted(name);
            if (exec(*lite, db, drop.c_str()) != 0) {
                return false;
            }
        }
        // PRAGMA database_list: seq, name, file; main and temp stay.
        rows attached;
        const auto collect_attached = [](void* out, int columns, char** values, char**) -> int {
            if (columns >= 3 && values[1] != nullptr) {
                const std::string name = values[1];
                if (name != "main" && name != "temp") {
                    static_cast<rows*>(out)->emplace_back(name, "");
                }
            }
            return 0;
        };
        if (lite->exec(db, "PRAGMA database_list", collect_attached, &attached, nullptr) != 0) {
            return false;
        }
        for (const auto& entry : attached) {
            const std::string detach = "DETACH DATABASE " + quoted(entry.first);
            if (exec(*lite, db, detach.c_str()) != 0) {
                return false;
            }
        }
        return lite->get_autocommit(db) != 0;
    } catch (...) {
        return false;
    }
}

#endif // WARMPOOL_SOCI_SQLITE3_NATIVE

} // namespace soci_lite
} // namespace WARMPOOL_DETAIL_SOCI_LITE_MODE
} // namespace detail
} // namespace warmpool
// ---- end warmpool/soci/sqlite3.hpp ----

#include <soci/soci.h>

#include <algorithm>
#include <cerrno> // program_invocation_short_name (glibc)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>

// The modes of the three backends are part of every name below (an inline namespace such as
// soci_mode_2_2_2, invisible in source). Two translation units that found different headers
// then use different functions and types instead of breaking the one-definition rule, where the
// linker would silently keep one of them for the whole program.
#define WARMPOOL_DETAIL_SOCI_MODE                                                                  \
    WARMPOOL_DETAIL_CAT(                                                                           \
        WARMPOOL_DETAIL_CAT(WARMPOOL_DETAIL_CAT(soci_mode_, WARMPOOL_SOCI_POSTGRESQL_NATIVE),      \
                            WARMPOOL_DETAIL_CAT(_, WARMPOOL_SOCI_MYSQL_NATIVE)),                   \
        WARMPOOL_DETAIL_CAT(_, WARMPOOL_SOCI_SQLITE3_NATIVE))

namespace warmpool {
inline namespace WARMPOOL_DETAIL_SOCI_MODE {

// Implementation details of the adapter. Not inside a namespace named detail: one here would
// hide warmpool::detail, where the shared helpers (soci_cs, soci_pg, …) live.
namespace soci_impl {

inline bool contains(const std::string& haystack, std::string_view needle) {
    return haystack.find(needle) != std::string::npos;
}

/// libpq names the word of a malformed conninfo that lacks its "=", and that word may be a
/// piece of a password written unquoted (password=a b): such a message is replaced whole.
inline bool names_a_bare_word(const std::string& text) {
    return contains(text, "missing \"=\" after");
}
inline constexpr const char* bare_word_message =
    "a word is not followed by \"=\" (not shown: it may be part of a password; quote values "
    "that hold spaces: password='a b')";

/// libpq's messages about a URI's query part or its percent-encoding quote the part they could
/// not parse: a mistyped `?password:secret` or `?password%3Dsecret` holds a password that no
/// `password=` marks, so the message is replaced as a whole.
inline const char* hidden_parse_error(const std::string& text) {
    if (names_a_bare_word(text)) {
        return bare_word_message;
    }
    if (contains(text, "URI query parameter") || contains(text, "percent-encoded")) {
        return "libpq cannot parse the URI's query part or a percent-encoded value (not shown: "
               "it may hold a password); write each parameter as key=value, joined by '&'";
    }
    return nullptr;
}

/// True when `type` (a std::type_info name) names soci::<name>_backend_factory, mangled
/// (Itanium: "N4soci26postgresql_backend_factoryE") or not ("struct soci::…"). Naming a
/// factory this way needs neither its backend's headers nor a link to its library.
inline bool names_factory(std::string_view type, std::string_view name) {
    const std::string wanted = std::string(name) + "_backend_factory";
    const std::size_t at = type.find(wanted);
    if (at == std::string_view::npos || at == 0 || type.find("soci") > at) {
        return false;
    }
    const char before = type[at - 1];
    const std::size_t end = at + wanted.size();
    const bool whole_before = before == ':' || (before >= '0' && before <= '9');
    const bool whole_after = end == type.size() || type[end] == 'E';
    return whole_before && whole_after;
}

/// soci_config::application_name's default: the Lambda function's name when the process runs
/// in AWS Lambda, else the program's name; "" when neither is known.
inline std::string default_application_name() {
    const char* const lambda = std::getenv("AWS_LAMBDA_FUNCTION_NAME");
    if (lambda != nullptr && *lambda != '\0') {
        return lambda;
    }
#if defined(__GLIBC__)
    if (program_invocation_short_name != nullptr && *program_invocation_short_name != '\0') {
        return program_invocation_short_name;
    }
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__)
    if (const char* const name = ::getprogname(); name != nullptr && *name != '\0') {
        return name;
    }
#endif
    std::string name;
    if (std::FILE* const comm = std::fopen("/proc/self/comm", "r")) {
        char buf[64] = {};
        if (std::fgets(buf, sizeof buf, comm) != nullptr) {
            name = buf;
        }
        std::fclose(comm);
    }
    while (!name.empty() && (name.back() == '\n' || name.back() == '\r')) {
        name.pop_back();
    }
    return name;
}

/// What PostgreSQL keeps of an application_name: printable ASCII (other bytes become '?', as
/// the server itself would do), at most 63 bytes (NAMEDATALEN - 1; the server would cut it).
/// Blanks become '_': SOCI 4.0.3 splits a keyword=value connect string at every blank, even
/// inside quotes, and a URI would carry them, so the same name would name two fleets.
inline std::string sanitized_application_name(std::string_view name) {
    std::string out;
    for (const char c : name.substr(0, 63)) {
        out += c == ' ' ? '_' : c > 0x20 && c <= 0x7e ? c : '?';
    }
    return out;
}

} // namespace soci_impl

/// Where and how soci_traits connects: a SOCI backend, its parameters and two hooks.
///
///   soci_config cfg = "postgresql://dbname=app user=app password=secret";
///   soci_config cfg{soci::postgresql, "dbname=app"};  // a backend factory (static linking)
///   cfg.on_connect = [](soci::session& s) { s << "set search_path to app"; };
///
/// A malformed connect string throws std::invalid_argument from the constructor, so a pool
/// built from it fails at once instead of after a retry loop. So does one naming postgresql,
/// mysql or sqlite3 whose native checks are not compiled in (see the top of this file).
class soci_config {
public:
    /// "backend://parameters", e.g. "postgresql://dbname=app", "mysql://db=app user=u",
    /// "sqlite3://db=app.db". For PostgreSQL the parameters may also be a URI without its
    /// scheme ("postgresql://user@host:5432/app"); "postgres://" is accepted for "postgresql://".
    /// With WARMPOOL_SOCI_POSTGRESQL=1 libpq's own parser checks PostgreSQL parameters here;
    /// otherwise libpq is not loaded yet, and it reports them at the first connect, which then
    /// fails permanently.
    soci_config(std::string connect_string) { // NOLINT: implicit on purpose
        const std::size_t sep = connect_string.find("://");
        if (sep == std::string::npos) {
            throw std::invalid_argument(
                "warmpool::soci_config: the connect string has no \"://\"; expected "
                "\"backend://parameters\", e.g. \"postgresql://dbname=app\" or "
                "\"sqlite3://db=app.db\"");
        }
        std::string backend = connect_string.substr(0, sep);
        if (backend.empty()) {
            throw std::invalid_argument("warmpool::soci_config: the connect string has an empty "
                                        "backend name before \"://\"; expected e.g. "
                                        "\"postgresql://…\", \"mysql://…\" or \"sqlite3://…\"");
        }
        if (!detail::soci_cs::valid_backend_name(backend)) {
            throw std::invalid_argument(
                "warmpool::soci_config: the backend name before \"://\" (" +
                std::to_string(backend.size()) +
                " characters) is not a SOCI backend name: use lower-case letters, digits and "
                "'_', e.g. \"postgresql\", \"mysql\" or \"sqlite3\"");
        }
        if (backend == "postgres") {
            backend = "postgresql";
        }
        backend_ = std::move(backend);
        params_ = connect_string.substr(sep + 3);
        if (params_.empty() && backend_ == "sqlite3") {
            throw std::invalid_argument("warmpool::soci_config: the sqlite3 connect string names "
                                        "no database; use \"sqlite3://db=FILE\" (or "
                                        "\"sqlite3://db=:memory:\")");
        }
        require_native_checks();
        factory_ = static_factory(backend_);
        check_params();
    }

    soci_config(const char* connect_string) // NOLINT: implicit on purpose
        : soci_config(std::string(connect_string != nullptr ? connect_string : "")) {}

    /// A SOCI backend factory (soci::postgresql, soci::mysql, soci::sqlite3, or your own) and
    /// its parameters; no dynamic loading. SOCI's three are recognised by their type, and named
    /// in messages; any other backend is named "soci" and gets the portable fallback unless its
    /// sessions report one of the three names.
    soci_config(const soci::backend_factory& factory, std::string params)
        : backend_(backend_name_of(factory)), params_(std::move(params)), factory_(&factory) {
        if (params_.empty() && backend_ == "sqlite3") {
            throw std::invalid_argument("warmpool::soci_config: the sqlite3 parameters name no "
                                        "database; use \"db=FILE\" (or \"db=:memory:\")");
        }
        require_native_checks();
        check_params();
    }

    /// Runs on every new connection before the pool hands it out, and again after every reset
    /// (options::reset_on_release): SET statements, search_path, PRAGMAs. If it throws, the
    /// connection is closed and the connect fails: permanently (never retried), unless it threw
    /// warmpool::connect_error, whose transient() is kept, or a SOCI error that shows the
    /// connection itself was lost (retried like any lost connect). After a reset, a throw
    /// closes the connection. Its statements are yours: no timeout of the pool bounds them.
    std::function<void(soci::session&)> on_connect;

    /// Called before every connection opens, on the connecting thread, with the configured
    /// parameters (what follows "://"); returns the parameters to open it with. For credentials
    /// that change: an RDS IAM authentication token (valid 15 minutes), a secret rotated by a
    /// secrets manager. Its result is a secret: it never appears in messages, events or
    /// target(), which keep showing the configured parameters, redacted. If it throws, the
    /// connect fails: permanently (never retried), unless it threw warmpool::connect_error,
    /// whose transient() is kept. It runs inside the acquire's deadline: keep it fast, or cache
    /// the token and refresh it ahead of its expiry.
    std::function<std::string(const std::string& params)> connect_params;

    /// Asked at every give-back about a session the pool is about to keep (after any rollback
    /// and reset): return false to close it instead (close_reason::rejected_on_release), e.g.
    /// when the lease changed session state you cannot undo. An exception counts as false.
    /// Runs on the thread giving the lease back, outside the pool's lock; keep it cheap.
    std::function<bool(soci::session&)> on_release;

    /// The name PostgreSQL sessions report (application_name, shown in pg_stat_activity), used
    /// by the fleet policy (options::fleet, warmpool/fleet.hpp) to tell fleets apart: only
    /// idle connections of the same name, user and database are reaped. Default: the
    /// environment's AWS_LAMBDA_FUNCTION_NAME when set, else the program's name
    /// (program_invocation_short_name, /proc/self/comm). It is sent as libpq's
    /// fallback_application_name, so an application_name already in the connect string (or
    /// PGAPPNAME in the environment) wins. Blanks become '_' (SOCI 4.0.3 cannot pass them in a
    /// keyword=value connect string), other bytes outside printable ASCII '?', and it is cut to
    /// 63 bytes, PostgreSQL's limit (so two names alike in their first 63 bytes are one fleet).
    /// Empty: none added. Other backends ignore it.
    std::string application_name = soci_impl::default_application_name();

    /// The backend name, as SOCI knows it ("postgresql", "mysql", "sqlite3", …).
    const std::string& backend() const noexcept { return backend_; }

    /// The parameters after "://", exactly as given (password included: do not log them).
    const std::string& params() const noexcept { return params_; }

    /// The factory used to open sessions; nullptr means SOCI's dynamic loader, by backend().
    const soci::backend_factory* factory() const noexcept { return factory_; }

private:
    [[noreturn]] static void refuse(const char* backend, const char* macro, const char* why) {
        throw std::invalid_argument(
            std::string("warmpool::soci_config: the connect string names ") + backend +
            ", but the adapter's native checks for it are not compiled in: " + why +
            ". Without them a connection the server closed can be handed out and a hung "
            "server is not noticed. Fix that, or define " +
            macro +
            "=0 to accept the portable fallback (README: \"SOCI backends and the native "
            "checks\")");
    }

    // The backend's native checks must be there unless the program opted out with =0.
    void require_native_checks() const {
#if defined(WARMPOOL_DETAIL_SOCI_POSTGRESQL_MISSING)
        if (backend_ == "postgresql") {
            refuse("postgresql", "WARMPOOL_SOCI_POSTGRESQL", detail::soci_pg::missing);
        }
#endif
#if defined(WARMPOOL_DETAIL_SOCI_MYSQL_MISSING)
        if (backend_ == "mysql") {
            refuse("mysql", "WARMPOOL_SOCI_MYSQL", detail::soci_my::missing);
        }
#endif
#if defined(WARMPOOL_DETAIL_SOCI_SQLITE3_MISSING)
        if (backend_ == "sqlite3") {
            refuse("sqlite3", "WARMPOOL_SOCI_SQLITE3", detail::soci_lite::missing);
        }
#endif
    }

    // Syntax errors surface here, at pool construction, rather than as a connect failure.
    void check_params() const {
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE == 1
        if (backend_ != "postgresql" || params_.empty()) {
            return;
        }
        const bool keyword_form = detail::soci_cs::starts_with_keyword(params_);
        const std::string conninfo = keyword_form || params_.find("://") != std::string::npos
                                         ? params_
                                         : "postgresql://" + params_;
        std::string why = detail::soci_pg::parse_error(conninfo);
        if (why.empty()) {
            return;
        }
        const char* hidden = soci_impl::hidden_parse_error(why);
        why = hidden != nullptr ? std::string(hidden)
                                : detail::soci_cs::scrub(why, params_, !keyword_form);
        while (!why.empty() && detail::soci_cs::is_space(why.back())) {
            why.pop_back();
        }
        throw std::invalid_argument("warmpool::soci_config: libpq rejects the postgresql "
                                    "parameters: " +
                                    why);
#endif
    }

    // With a backend linked directly (=1), its static factory; otherwise SOCI's loader.
    static const soci::backend_factory* static_factory(const std::string& backend) noexcept {
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE == 1
        if (backend == "postgresql") {
            return &soci::postgresql;
        }
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE == 1
        if (backend == "mysql") {
            return &soci::mysql;
        }
#endif
#if WARMPOOL_SOCI_SQLITE3_NATIVE == 1
        if (backend == "sqlite3") {
            return &soci::sqlite3;
        }
#endif
        (void)backend;
        return nullptr;
    }

    static std::string backend_name_of(const soci::backend_factory& factory) {
        const std::string_view type = typeid(factory).name();
        for (const char* name : {"postgresql", "mysql", "sqlite3"}) {
            if (soci_impl::names_factory(type, name)) {
                return name;
            }
        }
        return "soci";
    }

    std::string backend_;
    std::string params_;
    const soci::backend_factory* factory_ = nullptr;
};

namespace soci_impl {

enum class backend_kind { none, other, sqlite3, postgresql, mysql };

/// Which backend a session uses. One virtual call returning a short (SSO) string: nanoseconds.
inline backend_kind kind_of(soci::session& s) noexcept {
    soci::details::session_backend* const backend = s.get_backend();
    if (backend == nullptr) {
        return backend_kind::none; // closed by its user
    }
    try {
        // Compared as string_views: the length first, then an inlined memcmp; std::string ==
        // const char* calls strlen and compare out of line, several times per checkout.
        const std::string name = backend->get_backend_name();
        const std::string_view n = name;
        if (n == std::string_view("postgresql")) {
            return backend_kind::postgresql;
        }
        if (n == std::string_view("mysql")) {
            return backend_kind::mysql;
        }
        if (n == std::string_view("sqlite3")) {
            return backend_kind::sqlite3;
        }
    } catch (...) {
    }
    return backend_kind::other;
}

/// For a session whose backend has native checks compiled in: why they cannot run (the client
/// library's functions were not found in this process), or nullptr when they can.
inline const char* unresolved(soci::session& s) noexcept {
    switch (kind_of(s)) {
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
    case backend_kind::postgresql:
        return detail::soci_pg::api() == nullptr ? detail::soci_pg::unresolved : nullptr;
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE
    case backend_kind::mysql:
        return detail::soci_my::api() == nullptr ? detail::soci_my::unresolved : nullptr;
#endif
#if WARMPOOL_SOCI_SQLITE3_NATIVE
    case backend_kind::sqlite3:
        return detail::soci_lite::api() == nullptr ? detail::soci_lite::unresolved : nullptr;
#endif
    default:
        return nullptr;
    }
}

/// Why a connect failed, read from the backend's error text (and MySQL's error number).
struct failure_class {
    bool transient = false;
    const char* hint = "check the connect string";
};

inline failure_class classify(const std::string& backend, const std::string& text,
                              unsigned mysql_errno) {
    const std::string t = detail::soci_cs::to_lower(text);
    if (backend == "sqlite3") {
        return {false, "check the db= path: its directory must exist and be writable"};
    }
    if (contains(t, "failed to find shared library for backend") ||
        contains(t, "failed to resolve dynamic symbol")) {
        return {false, "SOCI has no such backend: check the name before \"://\", or install "
                       "SOCI's backend library (libsoci_<backend>.so) where SOCI's loader finds "
                       "it (its install directory, or LD_LIBRARY_PATH)"};
    }
    // A per-user limit is not the server's max_connections: say which knob it is. The MySQL
    // resource name is inserted verbatim even in translated messages.
    if (mysql_errno == 1203 || contains(t, "max_user_connections") ||
        contains(t, "too many connections for role")) {
        return {true, "the server refused: this user's connection limit is reached; raise it "
                      "(PostgreSQL: ALTER ROLE ... CONNECTION LIMIT; MySQL: "
                      "MAX_USER_CONNECTIONS) or lower max_size across your processes"};
    }
    if (mysql_errno == 1040 || contains(t, "too many clients") ||
        contains(t, "too many connections") || contains(t, "53300") ||
        contains(t, "remaining connection slots are reserved")) {
        return {true, "the server refused: too many connections; raise the server's "
                      "max_connections or lower max_size across your processes"};
    }
    if (contains(t, "starting up") || contains(t, "shutting down") ||
        contains(t, "in recovery mode") || contains(t, "57p03")) {
        return {true, "the server is starting or stopping; retrying"};
    }
    if (mysql_errno == 2002 || mysql_errno == 2003 || mysql_errno == 2006 || mysql_errno == 2013 ||
        contains(t, "connection refused") || contains(t, "could not connect") ||
        contains(t, "can't connect") || contains(t, "timeout expired") ||
        contains(t, "timed out") || contains(t, "lost connection") ||
        contains(t, "server has gone away") || contains(t, "server closed the connection") ||
        contains(t, "connection reset") || contains(t, "no route to host") ||
        contains(t, "network is unreachable") ||
        contains(t, "temporary failure in name resolution") ||
        // A Unix-domain socket whose server is down or restarting has no socket file: libpq
        // says "No such file or directory ... Is the server running locally ...".
        contains(t, "is the server running")) {
        return {true, "is the server running and reachable at this host and port (or socket)?"};
    }
    if (contains(t, "password authentication failed") || contains(t, "access denied") ||
        contains(t, "authentication failed") || contains(t, "no password supplied") ||
        contains(t, "no pg_hba.conf entry")) {
        return {false, "check the user and password (and the server's access rules)"};
    }
    if ((contains(t, "database") || contains(t, "role")) && contains(t, "does not exist")) {
        return {false, "check the database and user names in the connect string"};
    }
    if (mysql_errno == 1049 || contains(t, "unknown database")) {
        return {false, "check the database name in the connect string"};
    }
    if (contains(t, "invalid connection option") || contains(t, "malformed") ||
        contains(t, "invalid uri") || contains(t, "missing \"=\"") ||
        contains(t, "unterminated quoted string")) {
        return {false, "the backend rejected the connect string's syntax or an option name"};
    }
    return {};
}

inline unsigned mysql_error_number(const std::exception& e) noexcept {
#if WARMPOOL_SOCI_MYSQL_NATIVE
    return detail::soci_my::error_number(e);
#else
    (void)e;
    return 0;
#endif
}

/// Appends soci_config::application_name to PostgreSQL parameters as
/// fallback_application_name, quoted for the keyword form or percent-encoded for a URI, unless
/// the parameters name an application already.
inline void add_application_name(std::string& p, bool keyword_form, const std::string& name) {
    const std::string app = sanitized_application_name(name);
    if (app.empty() || detail::soci_cs::has_keyword(p, "application_name") ||
        detail::soci_cs::has_keyword(p, "fallback_application_name")) {
        return;
    }
    if (keyword_form) {
        std::string quoted = "'";
        for (const char c : app) {
            if (c == '\'' || c == '\\') {
                quoted += '\\';
            }
            quoted += c;
        }
        p += (p.empty() ? "" : " ") + std::string("fallback_application_name=") + quoted + "'";
        return;
    }
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string encoded;
    for (const char c : app) {
        const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
                                c == '~';
        if (unreserved) {
            encoded += c;
        } else {
            encoded += '%';
            encoded += hex[(static_cast<unsigned char>(c) >> 4) & 0xf];
            encoded += hex[static_cast<unsigned char>(c) & 0xf];
        }
    }
    p += (p.find('?') == std::string::npos ? "?" : "&") +
         std::string("fallback_application_name=") + encoded;
}

/// The parameters handed to SOCI: the user's, plus a connect timeout where the backend takes
/// one and the user set none, plus a scheme for a bare PostgreSQL URI and, for PostgreSQL,
/// soci_config::application_name.
inline std::string effective_params(const soci_config& cfg, std::string p,
                                    std::chrono::milliseconds timeout) {
    // Whole seconds, rounded up; libpq treats 1 as 2, so 2 is the floor there. The ceiling, about
    // 24 days, keeps "no limit" (options::forever) within what libpq and MariaDB parse (an int)
    // and within any conversion of theirs to milliseconds.
    constexpr long long most = 2'147'483;
    const long long seconds =
        std::clamp<long long>(timeout.count() / 1000 + (timeout.count() % 1000 != 0), 2, most);
    if (cfg.backend() == "postgresql") {
        const bool keyword_form = p.empty() || detail::soci_cs::starts_with_keyword(p);
        if (!keyword_form && p.rfind("postgresql://", 0) != 0 && p.rfind("postgres://", 0) != 0) {
            p = "postgresql://" + p;
        }
        if (!detail::soci_cs::has_keyword(p, "connect_timeout")) {
            if (keyword_form) {
                p += (p.empty() ? "" : " ") + std::string("connect_timeout=") +
                     std::to_string(seconds);
            } else {
                p += (p.find('?') == std::string::npos ? "?" : "&") +
                     std::string("connect_timeout=") + std::to_string(seconds);
            }
        }
        add_application_name(p, keyword_form, cfg.application_name);
    } else if (cfg.backend() == "mysql") {
        if (!detail::soci_cs::has_keyword(p, "connect_timeout")) {
            p += (p.empty() ? "" : " ") + std::string("connect_timeout=") + std::to_string(seconds);
        }
    }
    return p;
}

inline bool bare_uri(const soci_config& cfg) {
    return cfg.backend() == "postgresql" && !cfg.params().empty() &&
           !detail::soci_cs::starts_with_keyword(cfg.params());
}

} // namespace soci_impl

/// The warmpool traits for SOCI (see warmpool/traits.hpp for the contract, and the top of this
/// file for what each member costs with and without native checks). Every member but connect
/// and describe is noexcept.
struct soci_traits {
    using connection = soci::session;
    using config = soci_config;

    /// Opens a session and runs config.on_connect on it. Failures become connect_error:
    /// transient for too many connections, a server starting or stopping, a refused, timed-out
    /// or lost connection; permanent for everything else (bad credentials, unknown database or
    /// backend, any SQLite error, a client library whose functions cannot be found). `timeout`
    /// becomes PostgreSQL's and MySQL's connect_timeout (whole seconds, at least 2) unless the
    /// connect string sets one.
    static std::unique_ptr<soci::session> connect(const soci_config& cfg,
                                                  std::chrono::milliseconds timeout) {
        namespace impl = soci_impl;
        auto session = std::make_unique<soci::session>();
        const std::string chosen = chosen_params(cfg);
        try {
            const std::string params = impl::effective_params(cfg, chosen, timeout);
            if (cfg.factory() != nullptr) {
                session->open(*cfg.factory(), params);
            } else {
                session->open(cfg.backend(), params);
            }
        } catch (const std::exception& e) {
            throw failure(cfg, "cannot connect to ", e, chosen);
        }
        // The client library is loaded now: find its functions once, or fail for good.
        if (const char* why = impl::unresolved(*session)) {
            throw connect_error(describe(cfg) + ": " + why, false);
        }
        if (cfg.on_connect) {
            try {
                cfg.on_connect(*session);
            } catch (const connect_error&) {
                throw;
            } catch (const soci::soci_error& e) {
                const connect_error lost = failure(cfg, "", e);
                throw connect_error(describe(cfg) +
                                        ": the on_connect hook failed: " + scrub(cfg, e.what()),
                                    lost.transient() && is_broken_or_closed(*session));
            } catch (const std::exception& e) {
                throw connect_error(describe(cfg) +
                                    ": the on_connect hook failed: " + scrub(cfg, e.what()));
            } catch (...) {
                throw connect_error(describe(cfg) +
                                    ": the on_connect hook threw a non-standard exception");
            }
        }
        return session;
    }

    /// Local: the session was closed by its user, or the backend knows it is dead.
    static bool is_broken(soci::session& s) noexcept {
        namespace impl = soci_impl;
        switch (impl::kind_of(s)) {
        case impl::backend_kind::none:
            return true;
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
        case impl::backend_kind::postgresql:
            return detail::soci_pg::is_broken(s);
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE
        case impl::backend_kind::mysql:
            return detail::soci_my::is_broken(s);
#endif
#if WARMPOOL_SOCI_SQLITE3_NATIVE
        case impl::backend_kind::sqlite3:
            return detail::soci_lite::is_broken(s);
#endif
        default:
            return false;
        }
    }

    /// At most one zero-timeout poll() of the socket; open for SQLite and in the fallback.
    static peer_state peer_closed(soci::session& s) noexcept {
        namespace impl = soci_impl;
        switch (impl::kind_of(s)) {
        case impl::backend_kind::none:
            return peer_state::closed;
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
        case impl::backend_kind::postgresql:
            return detail::to_peer_state(detail::soci_pg::peer_closed(s));
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE
        case impl::backend_kind::mysql:
            return detail::to_peer_state(detail::soci_my::peer_closed(s));
#endif
        default:
            return peer_state::open;
        }
    }

    /// Before the pool destroys a session it abandons (a snapshot restore): its socket is
    /// pointed at /dev/null, so SOCI's close sends nothing (the kernel closes the socket). In
    /// the fallback, and for SQLite, the session closes as usual.
    static void abandon(soci::session& s) noexcept {
        namespace impl = soci_impl;
        switch (impl::kind_of(s)) {
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
        case impl::backend_kind::postgresql:
            detail::soci_pg::abandon(s);
            break;
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE
        case impl::backend_kind::mysql:
            detail::soci_my::abandon(s);
            break;
#endif
        default:
            break;
        }
    }

    /// One round trip bounded by `timeout`. In the fallback no round trip at all: true unless
    /// SOCI knows the session is closed.
    static bool ping(soci::session& s, std::chrono::milliseconds timeout) noexcept {
        namespace impl = soci_impl;
        switch (impl::kind_of(s)) {
        case impl::backend_kind::none:
            return false;
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
        case impl::backend_kind::postgresql:
            return detail::soci_pg::ping(s, timeout);
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE
        case impl::backend_kind::mysql:
            return detail::soci_my::ping(s, timeout);
#endif
#if WARMPOOL_SOCI_SQLITE3_NATIVE
        case impl::backend_kind::sqlite3:
            return detail::soci_lite::ping(s, timeout);
#endif
        default:
            (void)timeout;
            return true;
        }
    }

    /// Local. True when a transaction is open, or when the backend cannot tell (fallback).
    static bool in_transaction(soci::session& s) noexcept {
        namespace impl = soci_impl;
        switch (impl::kind_of(s)) {
        case impl::backend_kind::none:
            return false;
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
        case impl::backend_kind::postgresql:
            return detail::soci_pg::in_transaction(s);
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE
        case impl::backend_kind::mysql:
            return detail::soci_my::in_transaction(s);
#endif
#if WARMPOOL_SOCI_SQLITE3_NATIVE
        case impl::backend_kind::sqlite3:
            return detail::soci_lite::in_transaction(s);
#endif
        default:
            return true;
        }
    }

    /// ROLLBACK, one round trip bounded by `timeout`; true when no transaction is left open.
    /// In the fallback session::rollback(), which no timeout bounds.
    static bool rollback(soci::session& s, std::chrono::milliseconds timeout) noexcept {
        namespace impl = soci_impl;
        const impl::backend_kind kind = impl::kind_of(s);
        switch (kind) {
        case impl::backend_kind::none:
            return false;
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
        case impl::backend_kind::postgresql:
            return detail::soci_pg::rollback(s, timeout);
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE
        case impl::backend_kind::mysql:
            return detail::soci_my::rollback(s, timeout);
#endif
#if WARMPOOL_SOCI_SQLITE3_NATIVE
        case impl::backend_kind::sqlite3:
            return detail::soci_lite::rollback(s, timeout);
#endif
        default:
            (void)timeout;
            return fallback_rollback(s, kind);
        }
    }

    /// For options::reset_on_release: the backend's reset (PostgreSQL DISCARD ALL, MariaDB
    /// mysql_reset_connection and the role, SQLite the temp schema and attached databases),
    /// bounded by `timeout`, then config.on_connect again. False when either failed (the pool
    /// closes the connection), and always in the fallback, where a reset cannot be bounded.
    static bool reset(soci::session& s, const soci_config& cfg,
                      std::chrono::milliseconds timeout) noexcept {
        namespace impl = soci_impl;
        bool done = false;
        switch (impl::kind_of(s)) {
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
        case impl::backend_kind::postgresql:
            done = detail::soci_pg::reset(s, timeout);
            break;
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE
        case impl::backend_kind::mysql:
            done = detail::soci_my::reset(s, timeout);
            break;
#endif
#if WARMPOOL_SOCI_SQLITE3_NATIVE
        case impl::backend_kind::sqlite3:
            done = detail::soci_lite::reset(s, timeout);
            break;
#endif
        default:
            (void)timeout;
            return false;
        }
        if (!done || !reset_client_state(s)) {
            return false;
        }
        if (!cfg.on_connect) {
            return true;
        }
        try {
            cfg.on_connect(s);
            return true;
        } catch (...) {
            return false;
        }
    }

    /// config.on_release's verdict (true without one); an exception counts as false.
    static bool reusable(soci::session& s, const soci_config& cfg) noexcept {
        if (!cfg.on_release) {
            return true;
        }
        try {
            return cfg.on_release(s);
        } catch (...) {
            return false;
        }
    }

    /// options::fleet (warmpool/fleet.hpp): the server's connection counts and limits, and
    /// zombies of the same application reaped when asked, all within `timeout`. PostgreSQL: one
    /// round trip (warmpool/soci/postgresql.hpp); MariaDB 10.3+: one; MySQL: one, plus one KILL
    /// per zombie and one lock release when reaping (warmpool/soci/mysql.hpp). Counts leave out
    /// the zombies the sample ended. Elsewhere ok = false: the pool refuses such a config first
    /// (fleet_unsupported). The error texts are the server's or the client library's words
    /// about the statement and the socket (no connect string, so no secret, is in them), and
    /// end by saying whether the connection can be reused.
    static fleet_reading fleet_sample(soci::session& s, const soci_config& cfg,
                                      const fleet_request& req,
                                      std::chrono::milliseconds timeout) noexcept {
        namespace impl = soci_impl;
        switch (impl::kind_of(s)) {
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
        case impl::backend_kind::postgresql:
            return detail::soci_pg::fleet_sample(s, req, timeout);
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE
        case impl::backend_kind::mysql:
            return detail::soci_my::fleet_sample(s, req, timeout);
#endif
        default:
            break;
        }
        (void)req;
        (void)timeout;
        fleet_reading r;
        try {
            r.error = fleet_unsupported(cfg);
            if (r.error.empty()) {
                r.error = "the session's backend has no fleet sample";
            }
            r.error += "; the connection can be reused";
        } catch (...) {
            // Out of memory: the reading says !ok without words.
        }
        return r;
    }

    /// "" when `cfg`'s backend can take part in the fleet policy (PostgreSQL, MariaDB/MySQL with
    /// native checks compiled in); otherwise why not.
    static std::string fleet_unsupported(const soci_config& cfg) {
        const std::string& b = cfg.backend();
        if (b == "sqlite3") {
            return "the fleet policy manages connections to a server shared by many processes, "
                   "and SQLite has none (its database is a file opened in process): turn "
                   "options::fleet off for sqlite3";
        }
        if ((b == "postgresql" && WARMPOOL_SOCI_POSTGRESQL_NATIVE) ||
            (b == "mysql" && WARMPOOL_SOCI_MYSQL_NATIVE)) {
            return {};
        }
        if (b == "postgresql" || b == "mysql") {
            return "the fleet policy needs the adapter's native checks for " + b +
                   ", which this program compiled out (WARMPOOL_SOCI_" +
                   (b == "postgresql" ? std::string("POSTGRESQL") : std::string("MYSQL")) +
                   "=0, the portable fallback): compile them in (README: \"SOCI backends and "
                   "the native checks\") or turn options::fleet off";
        }
        return "the fleet policy needs native checks, which only the postgresql and mysql "
               "backends have; backend \"" +
               b + "\" has the portable fallback only: turn options::fleet off";
    }

    /// "backend://parameters" with every password value replaced by "***".
    static std::string describe(const soci_config& cfg) {
        return cfg.backend() + "://" +
               detail::soci_cs::redact(cfg.params(), soci_impl::bare_uri(cfg));
    }

private:
    static std::string scrub(const soci_config& cfg, const std::string& text) {
        if (const char* hidden = soci_impl::hidden_parse_error(text)) {
            return hidden; // see hidden_parse_error
        }
        const std::string scrubbed =
            detail::soci_cs::scrub(text, cfg.params(), soci_impl::bare_uri(cfg));
        // One line: libpq's messages span several, with tabs.
        std::string out;
        for (const char c : scrubbed) {
            if (!detail::soci_cs::is_space(c)) {
                out += c;
            } else if (!out.empty() && out.back() != ' ') {
                out += ' ';
            }
        }
        if (!out.empty() && out.back() == ' ') {
            out.pop_back();
        }
        return out;
    }

    // With `chosen` (what connect_params returned), its secrets are scrubbed too.
    static connect_error failure(const soci_config& cfg, const char* what, const std::exception& e,
                                 const std::string& chosen = {}) {
        const soci_impl::failure_class c =
            soci_impl::classify(cfg.backend(), e.what(), soci_impl::mysql_error_number(e));
        std::string text = e.what();
        if (!chosen.empty() && chosen != cfg.params()) {
            text = detail::soci_cs::scrub(text, chosen,
                                          cfg.backend() == "postgresql" &&
                                              !detail::soci_cs::starts_with_keyword(chosen));
        }
        return connect_error(what + describe(cfg) + ": " + scrub(cfg, text) + " (" + c.hint + ")",
                             c.transient);
    }

    // The parameters to open a connection with: the configured ones, or connect_params' answer.
    static std::string chosen_params(const soci_config& cfg) {
        if (!cfg.connect_params) {
            return cfg.params();
        }
        std::string chosen;
        try {
            chosen = cfg.connect_params(cfg.params());
        } catch (const connect_error& e) {
            throw connect_error(describe(cfg) +
                                    ": the connect_params hook failed: " + scrub(cfg, e.what()),
                                e.transient());
        } catch (const std::exception& e) {
            throw connect_error(describe(cfg) +
                                ": the connect_params hook failed: " + scrub(cfg, e.what()));
        } catch (...) {
            throw connect_error(describe(cfg) +
                                ": the connect_params hook threw a non-standard exception");
        }
        if (chosen.empty() && cfg.backend() == "sqlite3") {
            throw connect_error(describe(cfg) + ": the connect_params hook returned no "
                                                "parameters; sqlite3 needs at least \"db=FILE\"");
        }
        return chosen;
    }

    static bool is_broken_or_closed(soci::session& s) noexcept {
        return is_broken(s) || peer_closed(s) == peer_state::closed;
    }

    // What soci::session itself keeps between statements, back to a new session's defaults: the
    // log stream, upper-casing of column names and the query transformation (replaced by the
    // identity: SOCI offers no way to remove one). A logger installed with set_logger() stays;
    // install it in on_connect, which runs again after this.
    static bool reset_client_state(soci::session& s) noexcept {
        try {
            s.uppercase_column_names(false);
            s.set_query_transformation([](const std::string& query) { return query; });
        } catch (...) {
            return false;
        }
        try {
            s.set_log_stream(nullptr);
        } catch (...) {
            // A logger of the user's own that takes no stream: left as it is (see above).
        }
        return true;
    }

    // The fallback's rollback: SOCI's, unbounded (see the top of this file).
    static bool fallback_rollback(soci::session& s, soci_impl::backend_kind kind) noexcept {
        try {
            s.rollback();
            return true;
        } catch (const std::exception& e) {
            // Without native access the pool rolls back blindly, and SQLite, unlike the
            // servers, refuses a ROLLBACK with nothing to roll back.
            return kind == soci_impl::backend_kind::sqlite3 &&
                   soci_impl::contains(detail::soci_cs::to_lower(e.what()),
                                       "no transaction is active");
        } catch (...) {
            return false;
        }
    }
};

/// A pool of SOCI sessions.
using soci_pool = basic_pool<soci_traits>;

} // namespace WARMPOOL_DETAIL_SOCI_MODE
} // namespace warmpool
// ---- end warmpool/soci.hpp ----

#endif // WARMPOOL_WITH_SOCI
