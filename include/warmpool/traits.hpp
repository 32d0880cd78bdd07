// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

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

#include <warmpool/fleet.hpp>

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
