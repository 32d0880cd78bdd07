// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

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
