// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

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

#include <warmpool/detail/soci_connect_string.hpp>
#include <warmpool/soci/mysql.hpp>
#include <warmpool/soci/postgresql.hpp>
#include <warmpool/soci/sqlite3.hpp>
#include <warmpool/warmpool.hpp>

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
