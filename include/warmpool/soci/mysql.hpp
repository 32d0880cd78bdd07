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
//   fleet_sample    one SELECT through the non-blocking API; when reaping on MariaDB 10.3+,
//                   one compound statement instead (still one round trip), elsewhere the
//                   SELECT plus one KILL per zombie and one lock release (see fleet_sample()).
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

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

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
    decltype(&::mysql_errno) error_number = nullptr;
    decltype(&::mysql_error) error_text = nullptr;
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
    decltype(&::mysql_num_fields) num_fields = nullptr;
    decltype(&::mysql_next_result_start) next_result_start = nullptr;
    decltype(&::mysql_next_result_cont) next_result_cont = nullptr;
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
    get(f.error_number, "mysql_errno");
    get(f.error_text, "mysql_error");
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
    get(f.num_fields, "mysql_num_fields");
    get(f.next_result_start, "mysql_next_result_start");
    get(f.next_result_cont, "mysql_next_result_cont");
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
        f.error_number = &::mysql_errno;
        f.error_text = &::mysql_error;
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
        f.num_fields = &::mysql_num_fields;
        f.next_result_start = &::mysql_next_result_start;
        f.next_result_cont = &::mysql_next_result_cont;
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

/// The first row of a result: each column's text ("" for NULL) and whether it is NULL.
struct row_values {
    std::vector<std::string> value;
    std::vector<bool> null;

    bool is_null(std::size_t i) const noexcept { return i >= null.size() || null[i]; }
    const std::string& text(std::size_t i) const noexcept {
        static const std::string none;
        return i < value.size() ? value[i] : none;
    }
    long long number(std::size_t i, long long otherwise = 0) const noexcept {
        if (is_null(i) || value[i].empty()) {
            return otherwise;
        }
        char* end = nullptr;
        const long long n = std::strtoll(value[i].c_str(), &end, 10);
        return end != nullptr && *end == '\0' ? n : otherwise;
    }
};

/// How a statement sent through the non-blocking API ended.
enum class query_end {
    done,         // answered as asked
    server_error, // the server refused it, cleanly (mysql_errno tells why): the connection is
                  // usable
    lost,         // the deadline passed or the connection failed: it may be mid-command
};

/// query_outcome() up to its first result.
inline query_end first_outcome(const functions& my, MYSQL* c, int fd, const std::string& sql,
                               steady::time_point deadline, row_values* row) {
    int ret = 1;
    if (!drive(
            fd, deadline,
            [&] {
                return my.query_start(&ret, c, sql.data(), static_cast<unsigned long>(sql.size()));
            },
            [&](int ready) { return my.query_cont(&ret, c, ready); })) {
        return query_end::lost;
    }
    // Client-side errors (CR_*, 2000 to 2999: server gone, connection lost, out of sync) leave
    // the connection unusable; the server's own are clean refusals.
    const auto failed = [&] {
        const unsigned number = my.error_number(c);
        return number >= 2000 && number < 3000 ? query_end::lost : query_end::server_error;
    };
    if (ret != 0) {
        return failed();
    }
    MYSQL_RES* result = nullptr;
    if (!drive(
            fd, deadline, [&] { return my.store_start(&result, c); },
            [&](int ready) { return my.store_cont(&result, c, ready); })) {
        return query_end::lost;
    }
    if (result == nullptr) {
        if (my.error_number(c) != 0) {
            return failed(); // the result set was cut off, or the server ended it with an error
        }
        return row == nullptr ? query_end::done : query_end::server_error;
    }
    query_end end = query_end::server_error;
    if (MYSQL_ROW r = my.fetch_row(result)) {
        if (row != nullptr) {
            const unsigned n = my.num_fields(result);
            row->value.assign(n, std::string());
            row->null.assign(n, true);
            for (unsigned i = 0; i < n; ++i) {
                row->null[i] = r[i] == nullptr;
                if (r[i] != nullptr) {
                    row->value[i] = r[i];
                }
            }
            end = query_end::done;
        }
    }
    my.free_result(result); // a stored result: no I/O
    return end;
}

/// One statement through the non-blocking API, bounded by `deadline`. With `row` its first
/// result must be a row, all of whose columns land there (a statement returning none is a
/// server_error with mysql_errno 0); without, it must return no result set. The results that
/// follow (a compound statement's closing status) are read and dropped, so the connection is
/// ready for the next statement; an error among them is the statement's.
inline query_end query_outcome(const functions& my, MYSQL* c, int fd, const std::string& sql,
                               steady::time_point deadline, row_values* row = nullptr) {
    const query_end end = first_outcome(my, c, fd, sql, deadline, row);
    if (end == query_end::lost) {
        return end;
    }
    while ((c->server_status & SERVER_MORE_RESULTS_EXIST) != 0) {
        int ret = 0;
        if (!drive(
                fd, deadline, [&] { return my.next_result_start(&ret, c); },
                [&](int ready) { return my.next_result_cont(&ret, c, ready); })) {
            return query_end::lost;
        }
        if (ret > 0) {
            const unsigned number = my.error_number(c);
            return number >= 2000 && number < 3000 ? query_end::lost : query_end::server_error;
        }
        if (ret < 0) {
            break;
        }
        MYSQL_RES* more = nullptr;
        if (!drive(
                fd, deadline, [&] { return my.store_start(&more, c); },
                [&](int ready) { return my.store_cont(&more, c, ready); })) {
            return query_end::lost;
        }
        if (more != nullptr) {
            my.free_result(more);
        } else if (my.error_number(c) != 0) {
            const unsigned number = my.error_number(c);
            return number >= 2000 && number < 3000 ? query_end::lost : query_end::server_error;
        }
    }
    return end;
}

/// query_outcome(), answered as asked or not.
inline bool query_async(const functions& my, MYSQL* c, int fd, const std::string& sql,
                        steady::time_point deadline, row_values* row = nullptr) {
    return query_outcome(my, c, fd, sql, deadline, row) == query_end::done;
}

/// Gives the connection the context Connector/C's non-blocking calls run on (see the top of
/// this file); false when it cannot.
inline bool make_nonblocking(const functions& my, MYSQL* c) noexcept {
    my_bool has_context = 0;
    if (my.get_option(c, MYSQL_OPT_NONBLOCK, &has_context) != 0 || has_context == 0) {
        return my.options(c, MYSQL_OPT_NONBLOCK, nullptr) == 0;
    }
    return true;
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
        if (!make_nonblocking(*my, c)) {
            return false;
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
        row_values roles; // the active one, and the user's default, which a new connection has
        if (!query_async(*my, c, fd,
                         "SELECT CURRENT_ROLE(), (SELECT ROLE_NAME FROM "
                         "information_schema.APPLICABLE_ROLES WHERE IS_DEFAULT = 'YES' LIMIT 1)",
                         deadline, &roles)) {
            return false;
        }
        if (roles.is_null(0) != roles.is_null(1) || roles.text(0) != roles.text(1)) {
            const std::string set =
                roles.is_null(1) ? "SET ROLE NONE" : "SET ROLE " + quoted_identifier(roles.text(1));
            if (!query_async(*my, c, fd, set, deadline)) {
                return false;
            }
        }
        return !in_transaction(s);
    } catch (...) {
        return false;
    }
}
// --- The fleet policy (warmpool/fleet.hpp) ------------------------------------------------

/// The named-lock prefix a reaper marks its victims with (GET_LOCK): with the connection id
/// appended, at most 64 characters.
inline constexpr const char* fleet_lock_prefix = "warmpool.fleet.reap.";

/// The longest idle time compared with: about 100 years (options::forever); nothing has been
/// idle longer, and the number stays far from any overflow.
inline constexpr long long fleet_idle_most_ms = 3'155'760'000'000;

/// How the sample reaps. `block`: one compound statement (MariaDB 10.3 and later: BEGIN NOT
/// ATOMIC and FOR loops) that re-checks each zombie and kills it on the server. `statement`:
/// one SELECT, then one KILL per zombie and one lock release (MySQL, older MariaDB). `detect`
/// picks by the server; the integration tests force `statement` to run it on MariaDB too.
enum class fleet_dialect { detect, block, statement };

/// True for a MariaDB server that runs compound statements with FOR loops (10.3 and later).
/// Connector/C reports "10.11.19-MariaDB-..."; a server that sends the old "5.5.5-" prefix
/// has it removed first.
inline bool mariadb_with_blocks(const char* server) noexcept {
    if (server == nullptr || std::strstr(server, "MariaDB") == nullptr) {
        return false;
    }
    const char* v = std::strncmp(server, "5.5.5-", 6) == 0 ? server + 6 : server;
    char* end = nullptr;
    const long major = std::strtol(v, &end, 10);
    const long minor = end != nullptr && *end == '.' ? std::strtol(end + 1, nullptr, 10) : 0;
    return major > 10 || (major == 10 && minor >= 3);
}

/// The user name part of USER(): PROCESSLIST.USER is the name the session logged in with.
/// Compared byte for byte (CAST AS BINARY): account names are case-sensitive, but
/// PROCESSLIST.USER's collation is not, so 'app' would otherwise count (and reap) 'APP'.
inline constexpr const char* fleet_same_user =
    "CAST(USER AS BINARY) = CAST(LEFT(USER(), CHAR_LENGTH(USER()) - "
    "CHAR_LENGTH(SUBSTRING_INDEX(USER(), '@', -1)) - 1) AS BINARY)";

/// The counts and limits, shared by every form. Columns: 0 client connections on the server,
/// 1 those of this user, 2 max_connections, 3 max_user_connections (the session's value is the
/// account's MAX_USER_CONNECTIONS when it has one, else the global one; checked on MariaDB
/// 10.11).
inline std::string fleet_counts_sql(bool mariadb) {
    // MySQL 5.7 moved the status tables to performance_schema (readable by every user).
    return std::string("(SELECT VARIABLE_VALUE FROM ") +
           (mariadb ? "information_schema.GLOBAL_STATUS" : "performance_schema.global_status") +
           " WHERE VARIABLE_NAME = 'THREADS_CONNECTED'),"
           " (SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE " +
           fleet_same_user + ")";
}

/// Reaping needs INNODB_TRX, which needs PROCESS; without it nothing is killed.
inline constexpr const char* fleet_may_read_trx =
    "EXISTS(SELECT 1 FROM information_schema.USER_PRIVILEGES WHERE PRIVILEGE_TYPE = 'PROCESS')";

inline long long fleet_idle_ms(const fleet_request& req) {
    return std::min(std::max(0LL, static_cast<long long>(req.reap_idle_after.count())),
                    fleet_idle_most_ms);
}

/// The counting SELECT (no reaping): the four columns of fleet_counts_sql() and the limits.
inline std::string fleet_sql(bool mariadb) {
    return "SELECT " + fleet_counts_sql(mariadb) +
           ", @@max_connections, @@session.max_user_connections";
}

/// The MariaDB compound statement (fleet_dialect::block), from constant text and the request's
/// numbers. Counts first, into variables (so every zombie it kills is in them once); then, for
/// each of at most reap_max candidates (this user, COMMAND 'Sleep' for reap_idle_after or
/// longer by TIME_MS, not this connection, not in INNODB_TRX, oldest first): its named lock,
/// no wait (held by another reaper: skipped); PROCESSLIST read again for it alone, still
/// 'Sleep' and idle that long (any command since resets TIME_MS, and a KILL already made shows
/// 'Killed'); KILL CONNECTION; the lock released. Its one row: the four counting columns,
/// 4 the zombies killed (NULL without PROCESS), 5 the first KILL error other than "no such
/// thread" / "not owner" (NULL for none). An error anywhere else ends the statement, after
/// releasing the lock it holds, with that error.
inline std::string fleet_block_sql(const fleet_request& req) {
    const std::string idle = std::to_string(fleet_idle_ms(req));
    return std::string("BEGIN NOT ATOMIC"
                       " DECLARE server_n, user_n BIGINT DEFAULT 0;"
                       " DECLARE reaped, gone INT DEFAULT 0;"
                       " DECLARE kill_error VARCHAR(600) DEFAULT NULL;"
                       " DECLARE held VARCHAR(64) DEFAULT NULL;"
                       " DECLARE may_read INT DEFAULT ") +
           fleet_may_read_trx +
           ";"
           " DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN DO RELEASE_LOCK(held); RESIGNAL; END;"
           " SELECT " +
           fleet_counts_sql(true) +
           " INTO server_n, user_n;"
           " IF may_read THEN"
           " FOR z IN (SELECT ID FROM information_schema.PROCESSLIST WHERE " +
           fleet_same_user + " AND COMMAND = 'Sleep' AND TIME_MS >= " + idle +
           " AND ID <> CONNECTION_ID()"
           " AND ID NOT IN (SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX"
           " WHERE trx_mysql_thread_id IS NOT NULL)"
           " ORDER BY TIME_MS DESC, ID LIMIT " +
           std::to_string(req.reap_max) +
           ") DO"
           " SET held = CONCAT('" +
           fleet_lock_prefix +
           "', z.ID);"
           " IF GET_LOCK(held, 0) = 1 THEN"
           " IF EXISTS(SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = z.ID"
           " AND COMMAND = 'Sleep' AND TIME_MS >= " +
           idle +
           ") THEN"
           " BEGIN"
           " DECLARE e_number INT DEFAULT 0;"
           " DECLARE e_text VARCHAR(512) DEFAULT '';"
           " DECLARE CONTINUE HANDLER FOR 1094, 1095 SET gone = 1;"
           " DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN"
           " GET DIAGNOSTICS CONDITION 1 e_number = MYSQL_ERRNO, e_text = MESSAGE_TEXT;"
           " SET gone = 1;"
           " IF kill_error IS NULL THEN SET kill_error = CONCAT(e_number, ' ', e_text); END IF;"
           " END;"
           " SET gone = 0;"
           " KILL CONNECTION z.ID;"
           " END;"
           " IF gone = 0 THEN SET reaped = reaped + 1; END IF;"
           " END IF;"
           " DO RELEASE_LOCK(held);"
           " END IF;"
           " SET held = NULL;"
           " END FOR;"
           " END IF;"
           " SELECT server_n, user_n, @@max_connections, @@session.max_user_connections,"
           " IF(may_read, reaped, NULL), kill_error;"
           " END";
}

/// The longest list of ids GROUP_CONCAT may need for `reap_max` of them: 20 digits each (an
/// unsigned 64-bit id) and a separator.
inline unsigned long long fleet_list_most(unsigned reap_max) {
    return 21ULL * reap_max;
}

/// The SELECT of fleet_dialect::statement, from constant text and the request's numbers: the
/// four counting columns, then 4: "k:id,id,..." (the k zombies locked for this reaper; "0:"
/// for none), "-" when group_concat_max_len is too short for reap_max ids (then no lock is
/// taken: IF evaluates one branch), NULL without PROCESS; 5 group_concat_max_len. The
/// candidates are those of fleet_block_sql() with TIME in whole seconds (rounded up); each
/// gets GET_LOCK once, in a derived table that LIMIT keeps from being merged, so the count
/// and the list read the same locks. MySQL 8 raises group_concat_max_len for this statement
/// alone (SET_VAR); elsewhere the hint is a comment.
inline std::string fleet_statement_sql(const fleet_request& req) {
    const long long ms = fleet_idle_ms(req);
    const long long seconds = ms / 1000 + (ms % 1000 != 0 ? 1 : 0);
    const std::string most = std::to_string(fleet_list_most(req.reap_max));
    const std::string limit = std::to_string(req.reap_max);
    return "SELECT /*+ SET_VAR(group_concat_max_len = " + most + ") */ " + fleet_counts_sql(false) +
           ", @@max_connections, @@session.max_user_connections, IF(" + fleet_may_read_trx +
           ", IF(@@session.group_concat_max_len >= " + most +
           ", (SELECT CONCAT(COALESCE(SUM(got = 1), 0), ':', COALESCE(GROUP_CONCAT(IF(got = 1,"
           " ID, NULL) ORDER BY TIME DESC, ID SEPARATOR ','), ''))"
           " FROM (SELECT ID, TIME, GET_LOCK(CONCAT('" +
           fleet_lock_prefix +
           "', ID), 0) AS got FROM (SELECT ID, TIME FROM information_schema.PROCESSLIST"
           " WHERE " +
           fleet_same_user + " AND COMMAND = 'Sleep' AND TIME >= " + std::to_string(seconds) +
           " AND ID <> CONNECTION_ID()"
           " AND ID NOT IN (SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX"
           " WHERE trx_mysql_thread_id IS NOT NULL)"
           " ORDER BY TIME DESC, ID LIMIT " +
           limit + ") AS candidates LIMIT " + limit +
           ") AS locked), '-'), NULL), @@session.group_concat_max_len";
}

/// The ids in "k:id,id,...": exactly k of them, each all digits (1 to 20), k <= most. False
/// for anything else: a list cut short must never be read as ids.
inline bool fleet_ids(const std::string& text, unsigned most,
                      std::vector<unsigned long long>& ids) {
    ids.clear();
    const std::size_t colon = text.find(':');
    if (colon == 0 || colon == std::string::npos || colon > 4) {
        return false;
    }
    unsigned long long k = 0;
    for (std::size_t i = 0; i < colon; ++i) {
        if (text[i] < '0' || text[i] > '9') {
            return false;
        }
        k = k * 10 + static_cast<unsigned>(text[i] - '0');
    }
    std::size_t at = colon + 1;
    while (at < text.size()) {
        std::size_t next = text.find(',', at);
        if (next == std::string::npos) {
            next = text.size();
        }
        if (next == at || next - at > 20) {
            return false;
        }
        unsigned long long id = 0;
        for (std::size_t i = at; i < next; ++i) {
            const char ch = text[i];
            const unsigned digit = static_cast<unsigned>(ch - '0');
            if (ch < '0' || ch > '9' || id > (~0ULL - digit) / 10) {
                return false;
            }
            id = id * 10 + digit;
        }
        ids.push_back(id);
        if (next == text.size()) {
            break;
        }
        at = next + 1;
        if (at == text.size()) {
            return false; // a trailing separator: cut after it
        }
    }
    return ids.size() == k && k <= most;
}

/// `what` with the statement the pool needs about the connection after a failure.
inline std::string fleet_failure(const fleet_reading& r, std::string what) {
    return what +
           (r.usable ? "; the connection can be reused" : "; the connection cannot be reused");
}

/// What fleet_sample() does, bounded by `timeout` as a whole, through Connector/C's
/// non-blocking API (see warmpool/fleet.hpp for the policy):
///
///   counts    Threads_connected (GLOBAL_STATUS: the server's client connections, readable
///             without privileges; PROCESSLIST shows a user without PROCESS only its own
///             connections, so it cannot count the server's), and this user's connections in
///             PROCESSLIST, the user name compared byte for byte (account names are
///             case-sensitive; PROCESSLIST.USER's collation is not). Read before any KILL, and
///             the zombies killed are subtracted.
///   capacity  @@max_connections (MariaDB and MySQL admit one connection more, for an
///             administrator); @@session.max_user_connections, the account's own limit or the
///             global one (0: none).
///   reap      at most reap_max connections of this user (PROCESSLIST.USER, byte for byte) in
///             COMMAND 'Sleep' for reap_idle_after or longer, not this one and not inside an
///             InnoDB transaction (INNODB_TRX), oldest first, each under a named lock (GET_LOCK,
///             no wait; one another reaper holds is skipped).
///             MariaDB 10.3 and later (fleet_block_sql()): one compound statement, one round
///             trip. Counts first; then for each candidate in turn: the lock, PROCESSLIST read
///             again for that connection alone (still 'Sleep', TIME_MS still at least
///             reap_idle_after: any command it sent since resets TIME_MS), KILL CONNECTION at
///             once, the lock released. Exactly once under concurrent reapers: the next reaper
///             to take the lock reads the victim as COMMAND 'Killed' (set by the KILL itself)
///             or gone, and skips it.
///             MySQL and older MariaDB (fleet_statement_sql()): the SELECT locks the candidates
///             and returns their ids; then one KILL CONNECTION per zombie and one DO
///             RELEASE_LOCK(...) for all of them: reap_max + 2 round trips. Another reaper that
///             read a zombie before our lock skips it; one that reads it after our KILL sees
///             'Killed'. The ids come back through GROUP_CONCAT: when group_concat_max_len
///             (raised for the statement on MySQL 8) is below 21 * reap_max nothing is locked
///             and reap_error says so, and a list that does not parse to exactly the count the
///             server gives is not used (the connection, which may hold locks, is not reused).
///             A zombie already gone or killed by another reaper meanwhile (ER_NO_SUCH_THREAD
///             1094, ER_KILL_DENIED_ERROR 1095) is not counted and is no error; other KILL
///             errors go to reap_error.
///
/// What remains, and what it costs: a connection idle for reap_idle_after that sends a
/// command between the moment it is last read as idle and its KILL is killed as that command
/// starts or runs: its client gets an error (the connection was lost), the command and any
/// transaction it opened are not committed (InnoDB rolls them back), nothing is silently lost.
/// On MariaDB 10.3+ that moment is microseconds before the KILL, in the same statement on the
/// server; with fleet_dialect::statement it is the SELECT, one round trip (plus one per KILL
/// before it) earlier. A connection that sends nothing for reap_idle_after is never at risk.
///
/// The scope is the user. SOCI's MySQL backend opens the connection itself, so no connection
/// attribute (program_name) can be set, and performance_schema, where attributes are read, is
/// off by default: give each application its own database user, or reaping ends the idle
/// connections of every application that shares it.
///
/// Reaping needs the PROCESS privilege, to read INNODB_TRX: without it nothing is killed (never
/// without the transaction check) and reap_error says what to grant; the counts are still read.
///
/// A connection that ran BEGIN (or START TRANSACTION) and has not touched an InnoDB table yet
/// has no InnoDB transaction, so INNODB_TRX does not list it, and it can be reaped once idle
/// that long. That loses nothing: it has written nothing, holds no row lock and no snapshot
/// (START TRANSACTION WITH CONSISTENT SNAPSHOT, a read or a write registers the transaction,
/// and then it is listed and kept), so ending it undoes nothing; its next statement fails on the
/// lost connection, as after any server-side close, and a warmpool pool replaces it. What
/// reaping cannot see either way is session state outside transactions: GET_LOCK named locks,
/// LOCK TABLES, temporary tables, user variables of an idle connection of the same user. A
/// zombie's owner is gone, so nothing waits for them; a live instance idle that long
/// (reap_idle_after too short) loses them with its connection.
///
/// A timeout or a lost connection leaves it mid-command (ok = false, usable = false: the pool
/// closes it). An error the server reported leaves it usable (ok = false for the SELECT or the
/// compound statement; a KILL's other errors go to reap_error). Each error text ends by saying
/// whether the connection can be reused.
inline fleet_reading fleet_sample(soci::session& s, const fleet_request& req,
                                  std::chrono::milliseconds timeout,
                                  fleet_dialect dialect = fleet_dialect::detect) noexcept {
    fleet_reading r;
    const auto start = steady::now();
    const auto deadline = start + timeout;
    try {
        const functions* const my = api();
        MYSQL* const c = conn(s);
        const int fd = my != nullptr && c != nullptr ? socket_of(*my, c) : -1;
        if (fd < 0) {
            r.usable = false;
            r.error = fleet_failure(r, "the fleet sample was not sent: the connection is broken");
            return r;
        }
        if (!my->nonblocking) {
            r.error = fleet_failure(r, "the fleet sample needs MariaDB Connector/C 3.0 or later "
                                       "(its non-blocking API was not found)");
            return r;
        }
        if (in_transaction(s)) {
            // The named locks are session-level, but the counts would be taken mid-transaction
            // by a caller that should have rolled back first.
            r.error = fleet_failure(r, "the fleet sample was not sent: the connection is inside "
                                       "a transaction (sample only after the rollback at "
                                       "give-back)");
            return r;
        }
        if (!make_nonblocking(*my, c)) {
            r.error = fleet_failure(r, "the fleet sample was not sent: Connector/C cannot "
                                       "allocate its non-blocking context");
            return r;
        }
        const char* const server = my->server_info(c);
        const bool mariadb = server != nullptr && std::strstr(server, "MariaDB") != nullptr;
        if (dialect == fleet_dialect::detect) {
            dialect = mariadb_with_blocks(server) ? fleet_dialect::block : fleet_dialect::statement;
        }
        const auto lost = [&](const char* what) {
            r.ok = false;
            r.usable = false;
            if (steady::now() >= deadline) {
                r.error = fleet_failure(r, std::string("the fleet sample's ") + what +
                                               " got no answer within " +
                                               std::to_string(timeout.count()) +
                                               " ms (the server or the network is stalled)");
            } else {
                r.error = fleet_failure(
                    r, std::string("the fleet sample's ") + what + " lost the connection (" +
                           std::to_string(my->error_number(c)) + " " + my->error_text(c) + ")");
            }
            return r;
        };

        const bool block = req.reap && dialect == fleet_dialect::block;
        const std::string sql = !req.reap ? fleet_sql(mariadb)
                                : block   ? fleet_block_sql(req)
                                          : fleet_statement_sql(req);
        const char* const what = block ? "statement" : "SELECT";
        row_values row;
        switch (query_outcome(*my, c, fd, sql, deadline, &row)) {
        case query_end::lost:
            return lost(what);
        case query_end::server_error:
            r.error = fleet_failure(
                r, std::string("the fleet sample's ") + what + " failed on the server: " +
                       (my->error_number(c) != 0
                            ? std::to_string(my->error_number(c)) + " " + my->error_text(c)
                            : std::string("no row came back")));
            return r;
        case query_end::done:
            break;
        }
        const auto count = [](long long n) {
            return static_cast<std::size_t>(std::max(0LL, n));
        };
        if (req.with_capacity) {
            r.server_capacity = count(row.number(2));
            r.user_capacity = count(row.number(3)); // -1 (MariaDB: only administrators) too
        }
        const char* const no_process =
            "not reaping: telling idle connections from those inside a transaction needs "
            "information_schema.INNODB_TRX, which needs the PROCESS privilege: GRANT PROCESS ON "
            "*.* TO this account";
        std::vector<unsigned long long> locked;
        if (req.reap && block) {
            if (row.is_null(4)) {
                r.reap_error = no_process;
            } else {
                r.reaped = static_cast<unsigned>(std::max(0LL, row.number(4)));
                if (!row.is_null(5)) {
                    r.reap_error = "KILL CONNECTION failed: " + row.text(5);
                }
            }
        } else if (req.reap) {
            if (row.is_null(4)) {
                r.reap_error = no_process;
            } else if (row.text(4) == "-") {
                r.reap_error =
                    "not reaping: group_concat_max_len is " + row.text(5) +
                    ", too short for the ids of reap_max = " + std::to_string(req.reap_max) +
                    " zombies (" + std::to_string(fleet_list_most(req.reap_max)) +
                    " needed): raise it (SET GLOBAL group_concat_max_len = " +
                    std::to_string(fleet_list_most(req.reap_max)) + " or more) or lower reap_max";
            } else if (!fleet_ids(row.text(4), req.reap_max, locked)) {
                // Which named locks it holds is unknown: closing the connection releases them.
                r.usable = false;
                r.error = fleet_failure(r, "the fleet sample's list of zombies came back "
                                           "malformed (\"" +
                                               row.text(4).substr(0, 60) +
                                               "\"), so nothing was killed; it may hold their "
                                               "named locks");
                return r;
            }
        }
        for (const unsigned long long id : locked) {
            const query_end end =
                query_outcome(*my, c, fd, "KILL CONNECTION " + std::to_string(id), deadline);
            if (end == query_end::lost) {
                return lost("KILL");
            }
            if (end == query_end::done) {
                ++r.reaped;
                continue;
            }
            const unsigned number = my->error_number(c);
            if (number != 1094 && number != 1095 && r.reap_error.empty()) {
                r.reap_error =
                    "KILL CONNECTION failed: " + std::to_string(number) + " " + my->error_text(c);
            }
        }
        if (!locked.empty()) {
            std::string release = "DO ";
            for (const unsigned long long id : locked) {
                release += std::string(release.size() > 3 ? ", " : "") + "RELEASE_LOCK('" +
                           fleet_lock_prefix + std::to_string(id) + "')";
            }
            const query_end end = query_outcome(*my, c, fd, release, deadline);
            if (end == query_end::lost) {
                return lost("RELEASE_LOCK");
            }
            if (end != query_end::done) {
                // Left held, the locks would keep every other reaper off these ids: the pool
                // closes the connection, which releases them.
                r.usable = false;
                r.error = fleet_failure(r, "the fleet sample's RELEASE_LOCK failed: " +
                                               std::to_string(my->error_number(c)) + " " +
                                               my->error_text(c));
                return r;
            }
        }
        // Every zombie killed was in the counts, read before its KILL.
        r.server_in_use = count(row.number(0) - static_cast<long long>(r.reaped));
        r.user_in_use = count(row.number(1) - static_cast<long long>(r.reaped));
        r.ok = true;
        return r;
    } catch (...) {
        // Out of memory, perhaps mid-command.
        r.ok = false;
        r.usable = false;
        r.error = "the fleet sample failed: out of memory; the connection cannot be reused";
        return r;
    }
}

#endif // WARMPOOL_SOCI_MYSQL_NATIVE

} // namespace soci_my
} // namespace WARMPOOL_DETAIL_SOCI_MY_MODE
} // namespace detail
} // namespace warmpool
