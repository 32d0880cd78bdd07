// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

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

#include <warmpool/detail/soci_connect_string.hpp>
#include <warmpool/warmpool.hpp>

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
