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
//   fleet_sample    one SELECT, the same way: one round trip, counting, reading limits and
//                   terminating zombies (see fleet_sample() below).
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
