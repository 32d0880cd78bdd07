// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

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

#include <warmpool/detail/loaded_library.hpp>
#include <warmpool/detail/socket_wait.hpp>
#include <warmpool/traits.hpp>

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

#include <cerrno>
#include <cstring>
#include <exception>
#include <string>

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

/// The first row of a result, two columns: values and whether each is NULL.
struct two_values {
    std::string value[2];
    bool null[2] = {true, true};
};

/// One statement through the non-blocking API, bounded by `deadline`. With `row` it must
/// return a row, whose first two columns land there; without, it must return no result set.
inline bool query_async(const functions& my, MYSQL* c, int fd, const std::string& sql,
                        steady::time_point deadline, two_values* row = nullptr) {
    int ret = 1;
    if (!drive(
            fd, deadline,
            [&] {
                return my.query_start(&ret, c, sql.data(), static_cast<unsigned long>(sql.size()));
            },
            [&](int ready) { return my.query_cont(&ret, c, ready); }) ||
        ret != 0) {
        return false;
    }
    MYSQL_RES* result = nullptr;
    if (!drive(
            fd, deadline, [&] { return my.store_start(&result, c); },
            [&](int ready) { return my.store_cont(&result, c, ready); })) {
        return false;
    }
    if (result == nullptr) {
        return row == nullptr;
    }
    bool ok = false;
    if (MYSQL_ROW r = my.fetch_row(result)) {
        ok = row != nullptr;
        for (int i = 0; ok && i < 2; ++i) {
            row->null[i] = r[i] == nullptr;
            row->value[i] = r[i] != nullptr ? r[i] : "";
        }
    }
    my.free_result(result); // a stored result: no I/O
    return ok;
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
        my_bool has_context = 0;
        if (my->get_option(c, MYSQL_OPT_NONBLOCK, &has_context) != 0 || has_context == 0) {
            if (my->options(c, MYSQL_OPT_NONBLOCK, nullptr) != 0) {
                return false;
            }
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
        two_values roles; // the active one, and the user's default, which a new connection has
        if (!query_async(*my, c, fd,
                         "SELECT CURRENT_ROLE(), (SELECT ROLE_NAME FROM "
                         "information_schema.APPLICABLE_ROLES WHERE IS_DEFAULT = 'YES' LIMIT 1)",
                         deadline, &roles)) {
            return false;
        }
        if (roles.null[0] != roles.null[1] || roles.value[0] != roles.value[1]) {
            const std::string set =
                roles.null[1] ? "SET ROLE NONE" : "SET ROLE " + quoted_identifier(roles.value[1]);
            if (!query_async(*my, c, fd, set, deadline)) {
                return false;
            }
        }
        return !in_transaction(s);
    } catch (...) {
        return false;
    }
}
#endif // WARMPOOL_SOCI_MYSQL_NATIVE

} // namespace soci_my
} // namespace WARMPOOL_DETAIL_SOCI_MY_MODE
} // namespace detail
} // namespace warmpool
