// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

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
// A round trip that times out leaves the socket non-blocking, because the pool then closes the
// connection and PQfinish must not block on a server that stopped reading.

#include <warmpool/detail/loaded_library.hpp>
#include <warmpool/detail/socket_wait.hpp>
#include <warmpool/traits.hpp>

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

#include <cerrno>
#include <cstddef>
#include <string>

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
    return all;
}
#endif

/// The table, or nullptr when libpq's functions cannot be found in this process. Resolved once,
/// on first use, which is always with a PostgreSQL session open: libpq is loaded by then.
inline const functions* api() noexcept {
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE == 1
    static const functions linked{
        &::PQstatus,           &::PQsocket,    &::PQsslInUse,      &::PQconsumeInput,
        &::PQisBusy,           &::PQsendQuery, &::PQflush,         &::PQgetResult,
        &::PQresultStatus,     &::PQclear,     &::PQisnonblocking, &::PQsetnonblocking,
        &::PQtransactionStatus};
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

/// Sends `sql` and reads all its results, never blocking past `deadline`. True when every
/// result was a success. The connection must be non-blocking already.
inline bool send_and_await(const functions& pq, PGconn* c, const char* sql,
                           steady::time_point deadline) noexcept {
    const int fd = pq.socket(c);
    if (pq.send_query(c, sql) == 0) {
        return false;
    }
    for (;;) {
        const int flushed = pq.flush(c);
        if (flushed < 0) {
            return false;
        }
        if (flushed == 0) {
            break;
        }
        if (sock::until(fd, POLLOUT | POLLIN, deadline) == 0 || pq.consume_input(c) == 0) {
            return false;
        }
    }
    bool succeeded = true;
    for (;;) {
        while (pq.is_busy(c) != 0) {
            if (sock::until(fd, POLLIN, deadline) == 0 || pq.consume_input(c) == 0) {
                return false;
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
        pq.clear(result);
    }
    return succeeded;
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
