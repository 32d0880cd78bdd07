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
