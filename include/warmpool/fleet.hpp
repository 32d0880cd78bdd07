// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

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
