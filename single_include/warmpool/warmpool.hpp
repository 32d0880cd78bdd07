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
// Compiling the adapter needs no SOCI library at link time until soci_pool is used. As with the
// multi-header layout, define WARMPOOL_SOCI_SQLITE3 / _POSTGRESQL / _MYSQL to 1 for the backends
// you link, which enables their native connection checks.

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
    broken,            ///< the backend reported it unusable, or a rollback on give-back failed
    invalidated,       ///< the lease holder called lease::invalidate()
    pool_closed,       ///< the pool was closed
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
    }
    return "unknown";
}

enum class event_type : std::uint8_t {
    connected,         ///< a new connection opened; elapsed = connect time (retries included)
    connect_failed,    ///< one connect attempt failed; message = the backend's error
    acquired,          ///< a lease was handed out; elapsed = time the caller waited
    released,          ///< a lease came back; elapsed = how long it was held
    rolled_back,       ///< a transaction left open was rolled back on give-back
    validation_failed, ///< an idle connection failed its socket check or ping
    closed,            ///< a connection closed; reason says why
    leak_suspected,    ///< a lease has been held longer than options::leak_threshold
    leak_returned,     ///< a lease reported as leak_suspected came back; elapsed = time held
    forked,            ///< a fork() was noticed; the child abandoned the parent's connections
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

#include <chrono>
#include <cstddef>
#include <functional>
#include <stdexcept>
#include <string>

namespace warmpool {

/// How a pool behaves. A plain aggregate: set the fields you care about, leave the rest.
/// Every duration is in milliseconds; the pool's constructor rejects invalid values with
/// std::invalid_argument naming the field (see validate()).
struct options {
    using duration = std::chrono::milliseconds;

    /// Upper bound on open connections, in use and idle together. Must be >= 1.
    std::size_t max_size = 10;

    /// Connections housekeeping keeps open even when idle; warm_up() opens them at once.
    /// Must be <= max_size.
    std::size_t min_idle = 0;

    /// How long acquire() may take in total: waiting for a free connection, validating it and
    /// connecting (with retries) together. A ping or connect attempt under way at the deadline
    /// is bounded by its own limit (validation_timeout; the connect timeout handed to the
    /// backend). 0 = do not wait for another user at all.
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

    /// Upper bound on one ping. A ping that takes longer counts as failed: the connection is
    /// closed and replaced. Must be > 0.
    duration validation_timeout{5'000};

    /// An idle connection is checked for a closed socket (a local poll, no round trip) only
    /// once it has been idle at least this long. 0 = on every checkout of an idle connection.
    duration socket_check_after{0};

    /// An idle connection unused for this long is closed (down to min_idle). 0 = never.
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
    /// allows; 1 = no retry.
    unsigned connect_attempts = 0;

    /// A lease held longer than this raises one leak_suspected event (and a leak_returned
    /// event when it comes back). 0 = off.
    duration leak_threshold{0};

    /// Run housekeep() on a background thread every housekeeping_interval. Off by default: with
    /// it off the pool starts no thread and does its housekeeping during acquire and release.
    bool background_housekeeping = false;
    duration housekeeping_interval{30'000};

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
        if (background_housekeeping && housekeeping_interval.count() <= 0) {
            fail("housekeeping_interval",
                 "is " + std::to_string(housekeeping_interval.count()) +
                     " ms; it must be > 0 when background_housekeeping is on");
        }
    }
};

} // namespace warmpool
// ---- end warmpool/options.hpp ----
// ---- begin warmpool/stats.hpp ----

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
    std::uint64_t leaks_suspected = 0;     ///< leases held past options::leak_threshold
    std::uint64_t forks = 0;               ///< fork()s noticed (in the child)

    // Closes by reason (see close_reason).
    std::uint64_t closed_idle_timeout = 0;
    std::uint64_t closed_max_lifetime = 0;
    std::uint64_t closed_validation_failed = 0;
    std::uint64_t closed_broken = 0;
    std::uint64_t closed_invalidated = 0;
    std::uint64_t closed_pool_closed = 0;

    // Waiting: only acquire() calls that had to queue for another user count here.
    std::uint64_t waits = 0;                      ///< acquires that queued
    std::chrono::microseconds wait_time_total{0}; ///< summed over those
    std::chrono::microseconds wait_time_max{0};   ///< the longest one
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
//       // One round trip: roll the open transaction back. False when it failed or left a
//       // transaction open (where the backend can tell); the pool then closes the connection
//       // instead of pooling it.
//       static bool rollback(connection&) noexcept;
//
//       // The target for messages and events, without secrets (no password).
//       static std::string describe(const config&);
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
namespace detail {

template <class T, class = void>
struct has_connect : std::false_type {};
template <class T>
struct has_connect<T, std::void_t<decltype(T::connect(std::declval<const typename T::config&>(),
                                                      std::chrono::milliseconds{}))>>
    : std::is_same<decltype(T::connect(std::declval<const typename T::config&>(),
                                       std::chrono::milliseconds{})),
                   std::unique_ptr<typename T::connection>> {};

#define WARMPOOL_DETAIL_HAS_BOOL_MEMBER(name, ...)                                                 \
    template <class T, class = void>                                                               \
    struct has_##name : std::false_type {};                                                        \
    template <class T>                                                                             \
    struct has_##name<T, std::void_t<decltype(T::name(__VA_ARGS__))>>                              \
        : std::is_convertible<decltype(T::name(__VA_ARGS__)), bool> {};

WARMPOOL_DETAIL_HAS_BOOL_MEMBER(is_broken, std::declval<typename T::connection&>())
WARMPOOL_DETAIL_HAS_BOOL_MEMBER(peer_closed, std::declval<typename T::connection&>())
WARMPOOL_DETAIL_HAS_BOOL_MEMBER(ping, std::declval<typename T::connection&>(),
                                std::chrono::milliseconds{})
WARMPOOL_DETAIL_HAS_BOOL_MEMBER(in_transaction, std::declval<typename T::connection&>())
WARMPOOL_DETAIL_HAS_BOOL_MEMBER(rollback, std::declval<typename T::connection&>())
#undef WARMPOOL_DETAIL_HAS_BOOL_MEMBER

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
    static_assert(has_peer_closed<T>::value,
                  "warmpool traits: needs `static bool peer_closed(connection&) noexcept`");
    static_assert(has_ping<T>::value, "warmpool traits: needs `static bool ping(connection&, "
                                      "std::chrono::milliseconds) noexcept`");
    static_assert(has_in_transaction<T>::value,
                  "warmpool traits: needs `static bool in_transaction(connection&) noexcept`");
    static_assert(has_rollback<T>::value,
                  "warmpool traits: needs `static bool rollback(connection&) noexcept`");
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
        const auto left = deadline - C::now();
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
// ---- end warmpool/detail/fork.hpp ----

#include <algorithm>
#include <cassert>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
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

    class lease;

    /// Validates `opts` (std::invalid_argument naming the field) and connects nothing: the first
    /// connection opens on the first acquire() or warm_up().
    explicit basic_pool(config_type config, options opts = {})
        : config_(std::move(config)), opts_(validated(std::move(opts))),
          target_(Traits::describe(config_)), rng_(seed()) {
        // Reserved up front so bookkeeping under the lock never allocates.
        all_.reserve(opts_.max_size);
        idle_.reserve(opts_.max_size);
        detail::watch_forks();
        fork_epoch_ = detail::fork_epoch.load(std::memory_order_relaxed);
        if (opts_.background_housekeeping) {
            housekeeper_ = std::make_unique<std::thread>([this] { housekeeping_loop(); });
        }
    }

    /// Closes the pool. Every lease must have been given back before.
    ~basic_pool() {
        close();
        assert(in_use_count() == 0 && "warmpool: a lease outlived its pool");
    }

    basic_pool(const basic_pool&) = delete;
    basic_pool& operator=(const basic_pool&) = delete;

    /// A working connection, waiting up to options::acquire_timeout.
    /// Throws acquire_timeout, connect_error (permanent failure, or retries exhausted) or
    /// pool_closed.
    [[nodiscard]] lease acquire() { return acquire(opts_.acquire_timeout); }

    /// As acquire(), waiting up to `timeout`. The deadline bounds waiting for other users and
    /// connect retries; a ping or connect attempt under way at the deadline is bounded by its
    /// own limit (validation_timeout; the connect timeout handed to the traits).
    [[nodiscard]] lease acquire(std::chrono::milliseconds timeout) {
        if (timeout.count() < 0) {
            throw std::invalid_argument("warmpool: acquire timeout is " +
                                        std::to_string(timeout.count()) + " ms; it must be >= 0");
        }
        return *checkout(timeout, /*may_wait=*/true);
    }

    /// A working connection if one is idle or may be opened now; std::nullopt when every
    /// connection is in use. Never waits for another user; it may connect (with retries bounded
    /// by options::acquire_timeout) or ping.
    [[nodiscard]] std::optional<lease> try_acquire() {
        return checkout(opts_.acquire_timeout, /*may_wait=*/false);
    }

    /// Opens connections until options::min_idle are open, now. Throws connect_error if one
    /// cannot be opened within options::acquire_timeout.
    void warm_up() { top_up(/*rethrow=*/true); }

    /// Applies idle_timeout, max_lifetime, leak detection and min_idle now. Connect failures
    /// while topping up are counted and reported as events, not thrown.
    void housekeep() noexcept {
        std::vector<std::unique_ptr<slot>> doomed;
        std::vector<event> leaks;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            notice_fork_locked();
            if (closed_) {
                return;
            }
            const auto now = detail::cheap_now<Clock>();
            const auto wall = detail::cheap_now<wall_clock>();
            scan_leaks_locked(now, leaks);
            // Oldest idle first; keep min_idle open.
            for (std::size_t i = 0; i < idle_.size();) {
                slot* s = idle_[i];
                close_reason why = close_reason::none;
                if (now >= s->expires) {
                    why = close_reason::max_lifetime;
                } else if (opts_.idle_timeout.count() > 0 && all_.size() > opts_.min_idle &&
                           idle_for(*s, now, wall) >= opts_.idle_timeout) {
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
        flush(leaks);
        destroy(std::move(doomed));
        top_up(/*rethrow=*/false);
    }

    /// Closes the pool: every waiter wakes with pool_closed, idle connections close now, leases
    /// given back later close then, and any later acquire throws pool_closed. Idempotent.
    void close() noexcept {
        std::vector<std::unique_ptr<slot>> doomed;
        std::unique_ptr<std::thread> housekeeper;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            notice_fork_locked();
            if (!closed_) {
                closed_ = true;
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
            housekeeper = std::move(housekeeper_);
        }
        if (housekeeper && housekeeper->get_id() != std::this_thread::get_id()) {
            housekeeper->join();
        } else if (housekeeper) {
            housekeeper->detach();
        }
        destroy(std::move(doomed));
    }

    /// A consistent snapshot of gauges and counters.
    [[nodiscard]] pool_stats stats() const {
        std::lock_guard<std::mutex> lock(mutex_);
        pool_stats s = stats_;
        s.open = all_.size();
        s.idle = idle_.size();
        s.in_use = all_.size() - idle_.size();
        s.waiting = waiters_.size();
        s.connecting = connecting_;
        s.max_size = opts_.max_size;
        return s;
    }

    [[nodiscard]] const options& get_options() const noexcept { return opts_; }

    /// The target as Traits::describe() gave it: for logs, without secrets.
    [[nodiscard]] const std::string& target() const noexcept { return target_; }

private:
    using time_point = typename Clock::time_point;
    using wall_clock = typename detail::wall_clock_of<Clock>::type;
    using wall_time_point = typename wall_clock::time_point;
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
        bool idle = false;                // in idle_
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

    // When acquire() started needing the clock; read lazily so the warm path reads none.
    struct deadline {
        ms timeout;
        bool started = false;
        time_point start{};
        time_point at{};

        time_point get() {
            if (!started) {
                started = true;
                start = Clock::now();
                at = saturating_add(start, timeout);
            }
            return at;
        }
    };

    static options validated(options o) {
        o.validate();
        return o;
    }

    static std::uint_fast32_t seed() noexcept {
        try {
            return std::random_device{}();
        } catch (...) {
            return static_cast<std::uint_fast32_t>(
                std::chrono::system_clock::now().time_since_epoch().count());
        }
    }

    static time_point saturating_add(time_point t, ms d) noexcept {
        const auto dd = std::chrono::duration_cast<typename Clock::duration>(d);
        return (time_point::max() - t < dd) ? time_point::max() : t + dd;
    }

    template <class D>
    static std::chrono::microseconds micros(D d) noexcept {
        return std::chrono::duration_cast<std::chrono::microseconds>(d);
    }

    template <class D>
    static long long millis(D d) noexcept {
        return static_cast<long long>(std::chrono::duration_cast<ms>(d).count());
    }

    // The larger of monotonic and wall-clock idle time: a process frozen while the monotonic clock
    // stood still (a paused VM, a suspended laptop) still shows its real idle time on the wall
    // clock, and a wall clock stepped backwards still leaves the monotonic one.
    ms idle_for(const slot& s, time_point now, wall_time_point wall) const noexcept {
        const auto mono = std::chrono::duration_cast<ms>(now - s.last_used);
        const auto walled = std::chrono::duration_cast<ms>(wall - s.last_used_wall);
        return std::max(mono, walled);
    }

    // --- checkout ----------------------------------------------------------------------------

    std::optional<lease> checkout(ms timeout, bool may_wait) {
        deadline dl{timeout};
        std::unique_lock<std::mutex> lock(mutex_);
        notice_fork_locked();
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
        if (s != nullptr) {
            now = detail::cheap_now<Clock>();
            s->leased_at = now;
            s->idle = false;
            ++stats_.acquired;
        }
        const bool fork_event = pending_fork_event_;
        pending_fork_event_ = false;
        lock.unlock();
        if (fork_event) {
            emit({event_type::forked, 0, close_reason::none, {}, {}});
        }

        if (s != nullptr) {
            const close_reason bad = check(*s, now, dl);
            if (bad == close_reason::none) {
                acquired(*s, dl, waited);
                return lease(this, s);
            }
            // The caller never sees a dead connection: close it and connect a replacement
            // with the same unit of capacity, so no one queued behind can take it.
            discard_and_reconnect(s, bad);
        }
        slot* fresh = connect_with_retry(dl);
        acquired(*fresh, dl, waited);
        return lease(this, fresh);
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
                break;
            }
            if (Clock::now() >= until) {
                std::string message = timeout_message_locked(dl.timeout); // counts this waiter
                remove_waiter_locked(&w);
                if (!idle_.empty() && !waiters_.empty()) {
                    waiters_.front()->cv.notify_one(); // the next in line may take it now
                }
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
    }

    // Runs outside the lock on a connection taken from the idle list. Cheap checks first: the
    // expiry and the backend's local state cost nothing, the socket poll one system call, the
    // ping a round trip.
    close_reason check(slot& s, time_point now, deadline& dl) noexcept {
        const auto wall = detail::cheap_now<wall_clock>();
        s.leased_at_wall = wall;
        if (now >= s.expires) {
            return close_reason::max_lifetime;
        }
        const ms idle = idle_for(s, now, wall);
        if (opts_.idle_timeout.count() > 0 && idle >= opts_.idle_timeout) {
            return close_reason::idle_timeout;
        }
        connection_type& c = *s.conn;
        bool dead = Traits::is_broken(c);
        const char* what = "the backend reported the connection broken";
        if (!dead && idle >= opts_.socket_check_after && Traits::peer_closed(c)) {
            dead = true;
            what = "the server closed the connection while it was idle";
        }
        if (!dead && idle >= opts_.validation_window) {
            // The acquire deadline runs from here at the latest: a replacement connect after a
            // failed ping gets only what is left of it.
            (void)dl.get();
            count([](pool_stats& st) { ++st.pings; });
            if (!Traits::ping(c, opts_.validation_timeout)) {
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

    void acquired(slot& s, deadline& dl, bool waited) noexcept {
        if (opts_.on_event) {
            const auto w = (waited || dl.started) ? micros(Clock::now() - dl.start)
                                                  : std::chrono::microseconds{0};
            emit({event_type::acquired, s.id, close_reason::none, w, {}});
        }
    }

    // A connection that failed its checkout check is closed; its capacity turns into a connect
    // for the same caller.
    void discard_and_reconnect(slot* s, close_reason why) {
        std::unique_ptr<slot> doomed;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            --stats_.acquired; // it was never handed out
            s->close_why = why;
            doomed = remove_locked(s);
            --closing_; // the unit passes straight to this caller's connect
            ++connecting_;
        }
        destroy_one(std::move(doomed), /*free_capacity=*/false);
    }

    // Called holding one unit of capacity (counted in connecting_). Opens a connection with
    // full-jitter backoff on transient failures; on giving up, frees the capacity for the next
    // waiter and throws.
    slot* connect_with_retry(deadline& dl) {
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
        for (;;) {
            ++attempts;
            bool transient = false;
            const auto attempt_start = Clock::now();
            try {
                const auto left = std::chrono::duration_cast<ms>(until - attempt_start);
                conn = Traits::connect(config_, std::max(left, ms{1}));
                if (!conn) {
                    throw connect_error("the backend returned no connection", false);
                }
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

            const bool out_of_attempts =
                opts_.connect_attempts != 0 && attempts >= opts_.connect_attempts;
            if (!transient || out_of_attempts) {
                give_up_connect(connect_failure_message(last_error, transient, attempts, dl),
                                transient);
            }
            const auto pause = backoff(attempts);
            if (saturating_add(Clock::now(), pause) >= until) {
                give_up_connect(connect_failure_message(last_error, transient, attempts, dl) +
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
                throw pool_closed("warmpool: the pool was closed while connecting to " + target_);
            }
        }

        fresh->conn = std::move(conn);
        const auto now = detail::cheap_now<Clock>();
        slot* s = fresh.get();
        bool closed_meanwhile = false;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            --connecting_;
            if (closed_) {
                closed_meanwhile = true;
                wake_next_for_capacity_locked();
            } else {
                s->id = ++last_id_;
                s->fork_epoch = fork_epoch_;
                s->expires = expiry_locked(now);
                s->last_used = now;
                s->last_used_wall = detail::cheap_now<wall_clock>();
                s->leased_at = now;
                s->leased_at_wall = s->last_used_wall;
                s->index = all_.size();
                all_.push_back(std::move(fresh));
                ++stats_.created;
                ++stats_.acquired;
            }
        }
        if (closed_meanwhile) {
            fresh.reset(); // the connection closes outside the lock
            throw pool_closed("warmpool: the pool was closed while connecting to " + target_);
        }
        emit({event_type::connected,
              s->id,
              close_reason::none,
              micros(Clock::now() - dl.start),
              {}});
        return s;
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
                                        deadline& dl) const {
        std::string m = "warmpool: could not connect to " + target_ + ": " + last + " (";
        m += std::to_string(attempts) + (attempts == 1 ? " attempt" : " attempts");
        m += " in " + std::to_string(millis(Clock::now() - dl.start)) + " ms).";
        if (!transient) {
            m += " The failure is permanent, so it was not retried: check the connect string, "
                 "credentials and database name.";
        } else if (opts_.connect_attempts != 0 && attempts >= opts_.connect_attempts) {
            m += " options::connect_attempts (" + std::to_string(opts_.connect_attempts) +
                 ") reached.";
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
        const auto life = std::chrono::duration_cast<typename Clock::duration>(opts_.max_lifetime);
        std::uniform_int_distribution<long long> pick(0, 250);
        const auto shave = life * pick(rng_) / 10'000;
        return saturating_add(now, std::chrono::duration_cast<ms>(life - shave));
    }

    // --- give back ---------------------------------------------------------------------------

    void give_back(slot* s, bool invalidate) noexcept {
        const std::uint64_t id = s->id; // s may be freed or handed on once the lock is released
        close_reason why = invalidate ? close_reason::invalidated : close_reason::none;
        bool rolled_back = false;
        if (why == close_reason::none && s->fork_epoch == fork_epoch_seen()) {
            connection_type& c = *s->conn;
            if (Traits::is_broken(c)) {
                why = close_reason::broken;
            } else if (Traits::in_transaction(c)) {
                // One user's unfinished transaction must never reach the next user.
                rolled_back = true;
                if (!Traits::rollback(c)) {
                    why = close_reason::broken;
                }
            }
        }
        std::unique_ptr<slot> doomed;
        std::chrono::microseconds held{0};
        bool leak_returned = false;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            notice_fork_locked();
            const auto now = detail::cheap_now<Clock>();
            held = micros(now - s->leased_at);
            leak_returned = s->leak_reported;
            s->leak_reported = false;
            if (rolled_back) {
                ++stats_.rollbacks;
            }
            if (s->fork_epoch != fork_epoch_) {
                abandon_locked(s); // a parent's connection, given back in the child
                wake_next_for_capacity_locked();
            } else {
                if (why == close_reason::none && closed_) {
                    why = close_reason::pool_closed;
                } else if (why == close_reason::none && now >= s->expires) {
                    why = close_reason::max_lifetime;
                }
                if (why != close_reason::none) {
                    s->close_why = why;
                    doomed = remove_locked(s);
                } else {
                    s->last_used = now;
                    // The wall clock read at checkout plus the monotonic time held saves a clock
                    // read. A freeze during the lease can only make the next idle time look
                    // longer than it is: one ping more, never a dead connection missed.
                    s->last_used_wall = s->leased_at_wall +
                                        std::chrono::duration_cast<typename wall_clock::duration>(
                                            now - s->leased_at);
                    hand_over_locked(s, now);
                }
            }
        }
        if (opts_.on_event) {
            if (rolled_back) {
                emit({event_type::rolled_back, id, why, held, {}});
            }
            if (leak_returned) {
                emit({event_type::leak_returned, id, close_reason::none, held, {}});
            }
            emit({event_type::released, id, close_reason::none, held, {}});
        }
        destroy_one(std::move(doomed));
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
                return;
            }
            w->cv.notify_one();
        }
        s->idle = true;
        idle_.push_back(s);
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
        case close_reason::pool_closed:
        case close_reason::none:
            ++stats_.closed_pool_closed;
            break;
        }
        ++closing_;
        return out;
    }

    // Forgets a slot whose connection belongs to the parent process: the connection object is
    // leaked on purpose, since destroying it would send a goodbye on the parent's socket.
    void abandon_locked(slot* s) { (void)take_locked(s)->conn.release(); }

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

    // In a child process after fork(): abandon every inherited idle connection, forget the
    // parent's waiters and connects (those threads do not exist here), and let leases the child
    // still holds be abandoned when given back. The housekeeping thread did not survive the fork
    // either; its std::thread object is leaked so its destructor never runs.
    void notice_fork_locked() {
        const auto epoch = fork_epoch_seen();
        if (epoch == fork_epoch_) {
            return;
        }
        fork_epoch_ = epoch;
        for (slot* s : idle_) {
            abandon_locked(s);
        }
        idle_.clear();
        waiters_.clear();
        connecting_ = 0;
        closing_ = 0;
        ++stats_.forks;
        (void)housekeeper_.release();
        if (opts_.background_housekeeping && !closed_) {
            housekeeper_ = std::make_unique<std::thread>([this] { housekeeping_loop(); });
        }
        pending_fork_event_ = true;
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
            {
                std::lock_guard<std::mutex> lock(mutex_);
                notice_fork_locked();
                if (closed_ && rethrow) {
                    throw pool_closed("warmpool: warm_up on a closed pool (" + target_ + ")");
                }
                if (closed_ || all_.size() + connecting_ >= opts_.min_idle ||
                    capacity_used_locked() >= opts_.max_size) {
                    return;
                }
                ++connecting_;
            }
            deadline dl{opts_.acquire_timeout};
            slot* s = nullptr;
            try {
                s = connect_with_retry(dl);
            } catch (...) {
                if (rethrow) {
                    throw;
                }
                return;
            }
            // The new connection counted as acquired; undo that and pool it.
            std::lock_guard<std::mutex> lock(mutex_);
            --stats_.acquired;
            hand_over_locked(s, detail::cheap_now<Clock>());
        }
    }

    template <class F>
    void count(F&& f) noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        f(stats_);
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
        s->conn.reset();
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

    // After close(): what is left in all_ is held by leases (those inherited from a parent
    // process aside).
    std::size_t in_use_count() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return static_cast<std::size_t>(std::count_if(all_.begin(), all_.end(), [&](const auto& p) {
            return p->fork_epoch == fork_epoch_ && !p->idle;
        }));
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
    std::condition_variable wakeup_;         // close() and backoff/housekeeping waits
    std::vector<std::unique_ptr<slot>> all_; // every open connection, idle or leased
    std::vector<slot*> idle_;                // least recently used first
    std::deque<waiter*> waiters_;            // first come, first served
    std::size_t connecting_ = 0;             // capacity held by connects in progress
    std::size_t closing_ = 0;                // capacity held by closes in progress
    bool closed_ = false;
    bool pending_fork_event_ = false;
    std::uint64_t last_id_ = 0;
    std::uint64_t fork_epoch_ = 0;
    std::string last_connect_error_;
    std::minstd_rand rng_;
    pool_stats stats_;
    std::unique_ptr<std::thread> housekeeper_;
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
// Native checks are opt-in, one macro per backend
// -----------------------------------------------
// Looking inside a session (libpq's PGconn, MariaDB's MYSQL, SQLite's sqlite3) calls functions of
// those libraries, so the program must link them. Define the macro of each backend you link
// (the CMake target warmpool::soci does it for the backends it found):
//
//   WARMPOOL_SOCI_POSTGRESQL  link soci_postgresql + pq        (include dir: libpq-fe.h)
//   WARMPOOL_SOCI_MYSQL       link soci_mysql + mariadb/mysql  (include dir: mysql.h)
//   WARMPOOL_SOCI_SQLITE3     link soci_sqlite3 + sqlite3
//
// With a backend's macro defined, its name in a connect string selects SOCI's static factory
// (soci::postgresql, …) instead of SOCI's dynamic loader, and the pool's checks cost:
//
//   is_broken       PostgreSQL: PQstatus, local.       MySQL: socket handle, local.
//                   SQLite: false.
//   in_transaction  PostgreSQL: PQtransactionStatus.   MySQL: the server-status flag.
//                   SQLite: sqlite3_get_autocommit.    All local, no round trip.
//   peer_closed     PostgreSQL: one poll(), plus a peek and a read only when readable.
//                   MySQL: one poll().                 SQLite: false (no socket).
//   ping            PostgreSQL: one round trip (the empty query), non-blocking, bounded by the
//                   timeout even when the server is stopped or unreachable.
//                   MySQL: one round trip ("DO 0"), its reply awaited with poll(), bounded.
//                   SQLite: SELECT 1, in process.
//   rollback        PostgreSQL, MySQL: one round trip. SQLite: in process.
//
// Without a backend's macro the session is opened through SOCI's dynamic loader and only portable
// SOCI calls are used: is_broken and peer_closed report false (unless the session was closed),
// ping is session::is_connected(), which is NOT bounded by the timeout (PostgreSQL runs a
// blocking empty query, MySQL a blocking mysql_ping), and in_transaction reports true because
// it cannot tell: the pool then rolls back on every give-back. That is safe (never another
// caller's transaction) and costs one statement per give-back.
//
// fork(): a child process never uses nor closes a session inherited from its parent (the pool
// releases it unclosed, see warmpool/traits.hpp), so nothing is sent on the parent's socket and
// no SQLite handle is shared across processes. The child opens its own connections.
//
// POSIX only where a socket is polled (PostgreSQL, MySQL).

// ---- begin warmpool/detail/soci_connect_string.hpp ----

// Reading and redacting SOCI connect strings ("backend://parameters"), for warmpool/soci.hpp.
// Plain string work, no SOCI types, so it is testable on its own.
//
// Passwords are found in three spellings:
//   keyword form   password=secret  pass='a b'  pwd = "x y"  PWD={a;b}   (any letter case)
//   URI userinfo   postgresql://user:secret@host/db            (also bare: user:secret@host/db)
//   URI query      postgresql://host/db?user=u&password=secret
// Redaction errs on the side of hiding too much: an unquoted keyword value runs to the next
// whitespace, so "PWD=secret;UID=u" loses ";UID=u" too rather than risk showing part of a secret.

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

inline bool is_space(char c) noexcept {
    return std::isspace(static_cast<unsigned char>(c)) != 0;
}

inline char lower(char c) noexcept {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
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
        return std::string_view::npos;
    }
    std::size_t i = at + key.size();
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    if (i >= s.size() || s[i] != '=') {
        return std::string_view::npos;
    }
    ++i;
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    return i;
}

/// End of the value starting at `v`: a quoted value ('..', "..", {..}) up to and including its
/// closing quote (backslash escapes honoured), an unquoted one up to whitespace (or `&`/`#` in a
/// URI query, where `in_query`).
inline std::size_t value_end(std::string_view s, std::size_t v, bool in_query) noexcept {
    if (v >= s.size()) {
        return v;
    }
    const char open = s[v];
    if (open == '\'' || open == '"' || open == '{') {
        const char close = open == '{' ? '}' : open;
        std::size_t k = v + 1;
        while (k < s.size() && s[k] != close) {
            k += (s[k] == '\\') ? 2 : 1;
        }
        return std::min(k + 1, s.size());
    }
    std::size_t k = v;
    while (k < s.size() && !is_space(s[k]) && !(in_query && (s[k] == '&' || s[k] == '#'))) {
        k += (s[k] == '\\') ? 2 : 1;
    }
    return std::min(k, s.size());
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

/// The password in a URI's userinfo: "user:secret@" starting at `authority`. The last `@` before
/// the next whitespace ends it, so a password holding an unescaped `@` is still hidden whole.
inline void find_userinfo_secret(std::string_view s, std::size_t authority,
                                 std::vector<span>& out) {
    std::size_t end = authority;
    while (end < s.size() && !is_space(s[end])) {
        ++end;
    }
    const std::string_view auth = s.substr(authority, end - authority);
    const std::size_t at = auth.rfind('@');
    if (at == std::string_view::npos) {
        return;
    }
    const std::size_t colon = auth.substr(0, at).find(':');
    if (colon == std::string_view::npos) {
        return;
    }
    out.emplace_back(authority + colon + 1, authority + at);
}

/// Every password value in `s`, in order, not overlapping. `bare_uri`: treat `s` itself as a
/// URI without its scheme (the parameters of "postgresql://user:secret@host/db").
inline std::vector<span> find_secrets(std::string_view s, bool bare_uri) {
    std::vector<span> out;
    if (bare_uri && s.find("://") == std::string_view::npos) {
        find_userinfo_secret(s, 0, out);
    }
    for (std::size_t scheme = s.find("://"); scheme != std::string_view::npos;
         scheme = s.find("://", scheme + 3)) {
        find_userinfo_secret(s, scheme + 3, out);
    }
    static constexpr std::string_view keys[] = {"password", "pwd", "pass"};
    for (std::size_t i = 0; i < s.size(); ++i) {
        for (const std::string_view key : keys) {
            const std::size_t v = keyword_value_at(s, i, key);
            if (v != std::string_view::npos) {
                const bool in_query = i > 0 && (s[i - 1] == '?' || s[i - 1] == '&');
                const std::size_t end = value_end(s, v, in_query);
                out.emplace_back(v, end);
                i = std::max(end, v + 1) - 1; // resume after the value
                break;
            }
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

/// `s` with every password value replaced by "***".
inline std::string redact(std::string_view s, bool bare_uri) {
    std::string out;
    out.reserve(s.size());
    std::size_t pos = 0;
    for (const span& sp : find_secrets(s, bare_uri)) {
        out.append(s.substr(pos, sp.first - pos));
        out.append("***");
        pos = sp.second;
    }
    out.append(s.substr(pos));
    return out;
}

/// A backend's error text made safe to show: password spellings in it redacted, and every
/// occurrence of a password taken from `params` (whole, and each blank-separated piece of it, in
/// case a parser split a quoted value) replaced by "***".
inline std::string scrub(std::string message, std::string_view params, bool bare_uri) {
    std::vector<std::string> secrets;
    for (const span& sp : find_secrets(params, bare_uri)) {
        std::string_view value = params.substr(sp.first, sp.second - sp.first);
        if (value.size() >= 2 &&
            (value.front() == '\'' || value.front() == '"' || value.front() == '{')) {
            value = value.substr(1, value.size() - 2);
        }
        if (!value.empty()) {
            secrets.emplace_back(value);
        }
        std::size_t i = 0;
        while (i < value.size()) {
            while (i < value.size() && is_space(value[i])) {
                ++i;
            }
            std::size_t j = i;
            while (j < value.size() && !is_space(value[j])) {
                ++j;
            }
            if (j - i >= 2 && j - i < value.size()) {
                secrets.emplace_back(value.substr(i, j - i));
            }
            i = j;
        }
    }
    // Longest first, so a piece never leaves the rest of a longer secret behind.
    std::sort(secrets.begin(), secrets.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    for (const std::string& secret : secrets) {
        for (std::size_t at = message.find(secret); at != std::string::npos;
             at = message.find(secret, at + 3)) {
            message.replace(at, secret.size(), "***");
        }
    }
    return redact(message, false);
}

/// True when `key` appears as a keyword (`key=`) in `s`, in keyword or URI query form.
inline bool has_keyword(std::string_view s, std::string_view key) noexcept {
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (keyword_value_at(s, i, key) != std::string_view::npos) {
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

/// Lower-case copy, for matching error texts.
inline std::string to_lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), lower);
    return out;
}

} // namespace soci_cs
} // namespace detail
} // namespace warmpool
// ---- end warmpool/detail/soci_connect_string.hpp ----

#include <soci/soci.h>

#if defined(WARMPOOL_SOCI_SQLITE3)
#include <soci/sqlite3/soci-sqlite3.h>
#endif
#if defined(WARMPOOL_SOCI_POSTGRESQL)
#include <soci/postgresql/soci-postgresql.h>
#endif
#if defined(WARMPOOL_SOCI_MYSQL)
#include <soci/mysql/soci-mysql.h>
#endif
#if defined(WARMPOOL_SOCI_POSTGRESQL) || defined(WARMPOOL_SOCI_MYSQL)
#include <cerrno>
#include <climits>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#endif

#include <algorithm>
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace warmpool {

/// Where and how soci_traits connects: a SOCI backend, its parameters and a setup hook.
///
///   soci_config cfg = "postgresql://dbname=app user=app password=secret";
///   soci_config cfg{soci::postgresql, "dbname=app"};  // a backend factory (static linking)
///   cfg.on_connect = [](soci::session& s) { s << "set search_path to app"; };
///
/// A malformed connect string throws std::invalid_argument from the constructor, so a pool
/// built from it fails at once instead of after a retry loop.
class soci_config {
public:
    /// "backend://parameters", e.g. "postgresql://dbname=app", "mysql://db=app user=u",
    /// "sqlite3://db=app.db". For PostgreSQL the parameters may also be a URI without its
    /// scheme ("postgresql://user@host:5432/app"); "postgres://" is accepted for "postgresql://".
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
        factory_ = static_factory(backend_);
        check_params();
    }

    soci_config(const char* connect_string) // NOLINT: implicit on purpose
        : soci_config(std::string(connect_string != nullptr ? connect_string : "")) {}

    /// A SOCI backend factory (soci::postgresql, soci::mysql, soci::sqlite3, or your own) and
    /// its parameters; no dynamic loading. The backend is named in messages when it is one of
    /// the three enabled by the WARMPOOL_SOCI_* macros, "soci" otherwise.
    soci_config(const soci::backend_factory& factory, std::string params)
        : backend_(backend_name_of(factory)), params_(std::move(params)), factory_(&factory) {
        if (params_.empty() && backend_ == "sqlite3") {
            throw std::invalid_argument("warmpool::soci_config: the sqlite3 parameters name no "
                                        "database; use \"db=FILE\" (or \"db=:memory:\")");
        }
        check_params();
    }

    /// Runs on every new connection before the pool hands it out: SET statements, search_path,
    /// PRAGMAs. If it throws, the connection is closed and the connect fails: permanently
    /// (never retried), unless it threw warmpool::connect_error, whose transient() is kept, or a
    /// SOCI error that shows the connection itself was lost (retried like any lost connect).
    std::function<void(soci::session&)> on_connect;

    /// The backend name, as SOCI knows it ("postgresql", "mysql", "sqlite3", …).
    const std::string& backend() const noexcept { return backend_; }

    /// The parameters after "://", exactly as given (password included: do not log them).
    const std::string& params() const noexcept { return params_; }

    /// The factory used to open sessions; nullptr means SOCI's dynamic loader, by backend().
    const soci::backend_factory* factory() const noexcept { return factory_; }

private:
    // Syntax errors surface here, at pool construction, rather than as a connect failure.
    void check_params() const {
#if defined(WARMPOOL_SOCI_POSTGRESQL)
        if (backend_ != "postgresql" || params_.empty()) {
            return;
        }
        const bool keyword_form = detail::soci_cs::starts_with_keyword(params_);
        const std::string conninfo = keyword_form || params_.find("://") != std::string::npos
                                         ? params_
                                         : "postgresql://" + params_;
        char* error = nullptr;
        PQconninfoOption* const parsed = PQconninfoParse(conninfo.c_str(), &error);
        if (parsed != nullptr) {
            PQconninfoFree(parsed);
            return;
        }
        std::string why = error != nullptr ? error : "out of memory";
        PQfreemem(error);
        // libpq quotes the offending word, which may be a piece of a password written unquoted.
        if (why.find("missing \"=\" after") != std::string::npos) {
            why = "a word is not followed by \"=\" (not shown: it may be part of a password; "
                  "quote values that hold spaces: password='a b')";
        } else {
            why = detail::soci_cs::scrub(why, params_, !keyword_form);
        }
        while (!why.empty() && detail::soci_cs::is_space(why.back())) {
            why.pop_back();
        }
        throw std::invalid_argument("warmpool::soci_config: libpq rejects the postgresql "
                                    "parameters: " +
                                    why);
#endif
    }

    static const soci::backend_factory* static_factory(const std::string& backend) noexcept {
#if defined(WARMPOOL_SOCI_POSTGRESQL)
        if (backend == "postgresql") {
            return &soci::postgresql;
        }
#endif
#if defined(WARMPOOL_SOCI_MYSQL)
        if (backend == "mysql") {
            return &soci::mysql;
        }
#endif
#if defined(WARMPOOL_SOCI_SQLITE3)
        if (backend == "sqlite3") {
            return &soci::sqlite3;
        }
#endif
        (void)backend;
        return nullptr;
    }

    static std::string backend_name_of(const soci::backend_factory& factory) {
#if defined(WARMPOOL_SOCI_POSTGRESQL)
        if (&factory == &soci::postgresql) {
            return "postgresql";
        }
#endif
#if defined(WARMPOOL_SOCI_MYSQL)
        if (&factory == &soci::mysql) {
            return "mysql";
        }
#endif
#if defined(WARMPOOL_SOCI_SQLITE3)
        if (&factory == &soci::sqlite3) {
            return "sqlite3";
        }
#endif
        (void)factory;
        return "soci";
    }

    std::string backend_;
    std::string params_;
    const soci::backend_factory* factory_ = nullptr;
};

namespace detail {
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

using steady = std::chrono::steady_clock;

#if defined(WARMPOOL_SOCI_POSTGRESQL) || defined(WARMPOOL_SOCI_MYSQL)
/// Waits until `fd` shows one of `events` or the deadline passes. True when it showed.
inline bool wait_socket(int fd, short events, steady::time_point deadline) noexcept {
    if (fd < 0) {
        return false;
    }
    for (;;) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - steady::now());
        if (left.count() <= 0) {
            return false;
        }
        pollfd p{fd, events, 0};
        const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), INT_MAX)));
        if (r > 0) {
            return true;
        }
        if (r == 0 || errno != EINTR) {
            return false;
        }
    }
}

/// One zero-timeout poll for readability; returns the revents (0 when nothing is pending).
inline short poll_now(int fd) noexcept {
    short events = POLLIN;
#if defined(POLLRDHUP)
    events |= POLLRDHUP; // the peer shut its side: a server never does that to a live session
#endif
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, 0) > 0 ? p.revents : 0;
}

inline constexpr short hangup_events = POLLHUP | POLLERR | POLLNVAL
#if defined(POLLRDHUP)
                                       | POLLRDHUP
#endif
    ;
#endif

#if defined(WARMPOOL_SOCI_POSTGRESQL)
inline PGconn* pg(soci::session& s) noexcept {
    return static_cast<soci::postgresql_session_backend*>(s.get_backend())->conn_;
}

/// True when the bytes waiting on the socket hold an ErrorResponse. While a session is idle the
/// server sends one only right before closing it (idle_session_timeout, pg_terminate_backend,
/// shutdown), but libpq takes it for a notice and reports the death only once the end of the
/// stream arrives, which can be milliseconds later than the check. So peek at the raw messages
/// (type byte, then a big-endian length that counts itself). Not over TLS: the bytes are
/// encrypted there, and the check falls back to waiting for the end of the stream.
inline bool pg_error_pending(PGconn* c, int fd) noexcept {
    if (PQsslInUse(c) != 0) {
        return false;
    }
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

inline bool pg_peer_closed(PGconn* c) noexcept {
    if (c == nullptr || PQstatus(c) == CONNECTION_BAD) {
        return true;
    }
    const int fd = PQsocket(c);
    if (fd < 0) {
        return true;
    }
    // A FATAL message and the end of the stream may arrive apart: look a few times.
    for (int round = 0; round < 3; ++round) {
        const short revents = poll_now(fd);
        if (revents == 0) {
            return false;
        }
        if ((revents & hangup_events) != 0 || pg_error_pending(c, fd)) {
            return true;
        }
        // Readable while idle: a NOTIFY or a ParameterStatus is not death; let libpq read it
        // and judge. PQisBusy() makes it parse what arrived.
        if (PQconsumeInput(c) == 0) {
            return true;
        }
        (void)PQisBusy(c);
        if (PQstatus(c) == CONNECTION_BAD) {
            return true;
        }
    }
    return false;
}

/// The empty query, sent and awaited without ever blocking past `deadline`.
inline bool pg_ping_nonblocking(PGconn* c, steady::time_point deadline) noexcept {
    const int fd = PQsocket(c);
    if (PQsendQuery(c, "") == 0) {
        return false;
    }
    for (;;) {
        const int flushed = PQflush(c);
        if (flushed < 0) {
            return false;
        }
        if (flushed == 0) {
            break;
        }
        if (!wait_socket(fd, POLLOUT | POLLIN, deadline) || PQconsumeInput(c) == 0) {
            return false;
        }
    }
    bool answered = true;
    for (;;) {
        while (PQisBusy(c) != 0) {
            if (!wait_socket(fd, POLLIN, deadline) || PQconsumeInput(c) == 0) {
                return false;
            }
        }
        PGresult* const result = PQgetResult(c);
        if (result == nullptr) {
            break;
        }
        const ExecStatusType status = PQresultStatus(result);
        if (status != PGRES_EMPTY_QUERY && status != PGRES_COMMAND_OK &&
            status != PGRES_TUPLES_OK) {
            answered = false;
        }
        PQclear(result);
    }
    return answered;
}

inline bool pg_ping(PGconn* c, std::chrono::milliseconds timeout) noexcept {
    if (c == nullptr || PQstatus(c) != CONNECTION_OK || PQisBusy(c) != 0) {
        return false;
    }
    const auto deadline = steady::now() + timeout;
    const bool was_nonblocking = PQisnonblocking(c) != 0;
    if (!was_nonblocking && PQsetnonblocking(c, 1) != 0) {
        return false;
    }
    if (!pg_ping_nonblocking(c, deadline)) {
        // Left non-blocking: the connection is about to be destroyed, and PQfinish must not
        // block on a server that stopped answering.
        return false;
    }
    if (!was_nonblocking && PQsetnonblocking(c, 0) != 0) {
        return false;
    }
    return PQstatus(c) == CONNECTION_OK;
}
#endif

#if defined(WARMPOOL_SOCI_MYSQL)
inline MYSQL* my(soci::session& s) noexcept {
    return static_cast<soci::mysql_session_backend*>(s.get_backend())->conn_;
}

inline bool my_peer_closed(MYSQL* c) noexcept {
    if (c == nullptr) {
        return true;
    }
    const int fd = static_cast<int>(mysql_get_socket(c));
    if (fd < 0) {
        return true;
    }
    const short revents = poll_now(fd);
    if ((revents & hangup_events) != 0) {
        return true;
    }
    // MySQL sends nothing unprompted to an idle session except the error packet that precedes
    // a server-side close, so readable means closed. Over TLS a session ticket can arrive after
    // the handshake and sit unread: there only a hang-up counts.
    return (revents & POLLIN) != 0 && mysql_get_ssl_cipher(c) == nullptr;
}

/// "DO 0" sent, then its reply awaited with poll() so a stopped server cannot hold us past
/// the deadline (mysql_ping would block for as long as read_timeout allows: by default forever).
inline bool my_ping(MYSQL* c, std::chrono::milliseconds timeout) noexcept {
    if (c == nullptr) {
        return false;
    }
    const auto deadline = steady::now() + timeout;
    const int fd = static_cast<int>(mysql_get_socket(c));
    if (fd < 0) {
        return false;
    }
    static constexpr char query[] = "DO 0";
    if (mysql_send_query(c, query, sizeof query - 1) != 0) {
        return false;
    }
    if (!wait_socket(fd, POLLIN, deadline)) {
        return false; // the connection is mid-command now; the pool destroys it
    }
    return mysql_read_query_result(c) == 0;
}
#endif

#if defined(WARMPOOL_SOCI_SQLITE3)
inline sqlite_api::sqlite3* lite(soci::session& s) noexcept {
    return static_cast<soci::sqlite3_session_backend*>(s.get_backend())->conn_;
}
#endif

/// Why a connect failed, read from the backend's error text (and MySQL's error number).
struct failure_class {
    bool transient = false;
    const char* hint = "check the connect string";
};

inline bool contains(const std::string& haystack, std::string_view needle) {
    return haystack.find(needle) != std::string::npos;
}

inline failure_class classify(const std::string& backend, const std::string& text,
                              unsigned mysql_errno) {
    const std::string t = soci_cs::to_lower(text);
    if (backend == "sqlite3") {
        return {false, "check the db= path: its directory must exist and be writable"};
    }
    if (contains(t, "failed to find shared library for backend") ||
        contains(t, "failed to resolve dynamic symbol")) {
        return {false, "SOCI has no such backend: check the name before \"://\", or install and "
                       "link libsoci_<backend> and define WARMPOOL_SOCI_<BACKEND>"};
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
        contains(t, "temporary failure in name resolution")) {
        return {true, "is the server running and reachable at this host and port?"};
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
#if defined(WARMPOOL_SOCI_MYSQL)
    if (const auto* m = dynamic_cast<const soci::mysql_soci_error*>(&e)) {
        return m->err_num_;
    }
#else
    (void)e;
#endif
    return 0;
}

/// The parameters handed to SOCI: the user's, plus a connect timeout where the backend takes
/// one and the user set none, plus a scheme for a bare PostgreSQL URI.
inline std::string effective_params(const soci_config& cfg, std::chrono::milliseconds timeout) {
    std::string p = cfg.params();
    // Whole seconds, rounded up; libpq treats 1 as 2, so 2 is the floor there.
    const long long seconds = std::max<long long>(2, (timeout.count() + 999) / 1000);
    if (cfg.backend() == "postgresql") {
        const bool keyword_form = p.empty() || soci_cs::starts_with_keyword(p);
        if (!keyword_form && p.rfind("postgresql://", 0) != 0 && p.rfind("postgres://", 0) != 0) {
            p = "postgresql://" + p;
        }
        if (!soci_cs::has_keyword(p, "connect_timeout")) {
            if (keyword_form) {
                p += (p.empty() ? "" : " ") + std::string("connect_timeout=") +
                     std::to_string(seconds);
            } else {
                p += (p.find('?') == std::string::npos ? "?" : "&") +
                     std::string("connect_timeout=") + std::to_string(seconds);
            }
        }
    } else if (cfg.backend() == "mysql") {
        if (!soci_cs::has_keyword(p, "connect_timeout")) {
            p += (p.empty() ? "" : " ") + std::string("connect_timeout=") + std::to_string(seconds);
        }
    }
    return p;
}

inline bool bare_uri(const soci_config& cfg) {
    return cfg.backend() == "postgresql" && !cfg.params().empty() &&
           !soci_cs::starts_with_keyword(cfg.params());
}

} // namespace soci_impl
} // namespace detail

/// The warmpool traits for SOCI (see warmpool/traits.hpp for the contract).
struct soci_traits {
    using connection = soci::session;
    using config = soci_config;

    /// Opens a session and runs config.on_connect on it. Failures become connect_error:
    /// transient for too many connections, a server starting or stopping, a refused, timed-out
    /// or lost connection; permanent for everything else (bad credentials, unknown database or
    /// backend, any SQLite error). `timeout` becomes PostgreSQL's and MySQL's connect_timeout
    /// (whole seconds, at least 2) unless the connect string sets one.
    static std::unique_ptr<soci::session> connect(const soci_config& cfg,
                                                  std::chrono::milliseconds timeout) {
        namespace impl = detail::soci_impl;
        auto session = std::make_unique<soci::session>();
        try {
            const std::string params = impl::effective_params(cfg, timeout);
            if (cfg.factory() != nullptr) {
                session->open(*cfg.factory(), params);
            } else {
                session->open(cfg.backend(), params);
            }
        } catch (const std::exception& e) {
            throw failure(cfg, "cannot connect to ", e);
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
        namespace impl = detail::soci_impl;
        switch (impl::kind_of(s)) {
        case impl::backend_kind::none:
            return true;
#if defined(WARMPOOL_SOCI_POSTGRESQL)
        case impl::backend_kind::postgresql: {
            PGconn* const c = impl::pg(s);
            return c == nullptr || PQstatus(c) == CONNECTION_BAD;
        }
#endif
#if defined(WARMPOOL_SOCI_MYSQL)
        case impl::backend_kind::mysql: {
            MYSQL* const c = impl::my(s);
            return c == nullptr || static_cast<int>(mysql_get_socket(c)) < 0;
        }
#endif
#if defined(WARMPOOL_SOCI_SQLITE3)
        case impl::backend_kind::sqlite3:
            return impl::lite(s) == nullptr;
#endif
        default:
            return false;
        }
    }

    /// One zero-timeout poll() of the socket (PostgreSQL, MySQL); false for SQLite and for
    /// backends without their WARMPOOL_SOCI_* macro.
    static bool peer_closed(soci::session& s) noexcept {
        namespace impl = detail::soci_impl;
        switch (impl::kind_of(s)) {
        case impl::backend_kind::none:
            return true;
#if defined(WARMPOOL_SOCI_POSTGRESQL)
        case impl::backend_kind::postgresql:
            return impl::pg_peer_closed(impl::pg(s));
#endif
#if defined(WARMPOOL_SOCI_MYSQL)
        case impl::backend_kind::mysql:
            return impl::my_peer_closed(impl::my(s));
#endif
        default:
            return false;
        }
    }

    /// One round trip. Bounded by `timeout` for PostgreSQL and MySQL with their macros; see the
    /// top of this file for the portable fallback, which is not.
    static bool ping(soci::session& s, std::chrono::milliseconds timeout) noexcept {
        namespace impl = detail::soci_impl;
        switch (impl::kind_of(s)) {
        case impl::backend_kind::none:
            return false;
#if defined(WARMPOOL_SOCI_POSTGRESQL)
        case impl::backend_kind::postgresql:
            return impl::pg_ping(impl::pg(s), timeout);
#endif
#if defined(WARMPOOL_SOCI_MYSQL)
        case impl::backend_kind::mysql:
            return impl::my_ping(impl::my(s), timeout);
#endif
#if defined(WARMPOOL_SOCI_SQLITE3)
        case impl::backend_kind::sqlite3: {
            sqlite_api::sqlite3* const db = impl::lite(s);
            return db != nullptr &&
                   sqlite_api::sqlite3_exec(db, "SELECT 1", nullptr, nullptr, nullptr) == SQLITE_OK;
        }
#endif
        default:
            (void)timeout;
            return s.is_connected();
        }
    }

    /// Local. True when a transaction is open, or when the backend cannot tell (no macro).
    static bool in_transaction(soci::session& s) noexcept {
        namespace impl = detail::soci_impl;
        switch (impl::kind_of(s)) {
        case impl::backend_kind::none:
            return false;
#if defined(WARMPOOL_SOCI_POSTGRESQL)
        case impl::backend_kind::postgresql: {
            PGconn* const c = impl::pg(s);
            return c == nullptr || PQtransactionStatus(c) != PQTRANS_IDLE;
        }
#endif
#if defined(WARMPOOL_SOCI_MYSQL)
        case impl::backend_kind::mysql: {
            MYSQL* const c = impl::my(s);
            return c == nullptr || (c->server_status & SERVER_STATUS_IN_TRANS) != 0;
        }
#endif
#if defined(WARMPOOL_SOCI_SQLITE3)
        case impl::backend_kind::sqlite3: {
            sqlite_api::sqlite3* const db = impl::lite(s);
            return db == nullptr || sqlite_api::sqlite3_get_autocommit(db) == 0;
        }
#endif
        default:
            return true;
        }
    }

    /// One round trip (ROLLBACK). True when no transaction is left open afterwards.
    static bool rollback(soci::session& s) noexcept {
        namespace impl = detail::soci_impl;
        const impl::backend_kind kind = impl::kind_of(s);
        if (kind == impl::backend_kind::none) {
            return false;
        }
        try {
            s.rollback();
        } catch (const std::exception& e) {
            // Without native access the pool rolls back blindly, and SQLite, unlike the
            // servers, refuses a ROLLBACK with nothing to roll back.
            const bool nothing_open =
                kind == impl::backend_kind::sqlite3 &&
                impl::contains(detail::soci_cs::to_lower(e.what()), "no transaction is active");
            if (!nothing_open) {
                return false;
            }
        } catch (...) {
            return false;
        }
        switch (kind) {
#if defined(WARMPOOL_SOCI_POSTGRESQL)
        case impl::backend_kind::postgresql:
#endif
#if defined(WARMPOOL_SOCI_MYSQL)
        case impl::backend_kind::mysql:
#endif
#if defined(WARMPOOL_SOCI_SQLITE3)
        case impl::backend_kind::sqlite3:
#endif
#if defined(WARMPOOL_SOCI_POSTGRESQL) || defined(WARMPOOL_SOCI_MYSQL) ||                           \
    defined(WARMPOOL_SOCI_SQLITE3)
            return !in_transaction(s);
#endif
        default:
            return true;
        }
    }

    /// "backend://parameters" with every password value replaced by "***".
    static std::string describe(const soci_config& cfg) {
        return cfg.backend() + "://" +
               detail::soci_cs::redact(cfg.params(), detail::soci_impl::bare_uri(cfg));
    }

private:
    static std::string scrub(const soci_config& cfg, const std::string& text) {
        const std::string scrubbed =
            detail::soci_cs::scrub(text, cfg.params(), detail::soci_impl::bare_uri(cfg));
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

    static connect_error failure(const soci_config& cfg, const char* what,
                                 const std::exception& e) {
        const detail::soci_impl::failure_class c = detail::soci_impl::classify(
            cfg.backend(), e.what(), detail::soci_impl::mysql_error_number(e));
        return connect_error(
            what + describe(cfg) + ": " + scrub(cfg, e.what()) + " (" + c.hint + ")", c.transient);
    }

    static bool is_broken_or_closed(soci::session& s) noexcept {
        return is_broken(s) || peer_closed(s);
    }
};

/// A pool of SOCI sessions.
using soci_pool = basic_pool<soci_traits>;

} // namespace warmpool
// ---- end warmpool/soci.hpp ----

#endif // WARMPOOL_WITH_SOCI
