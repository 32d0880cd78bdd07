// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Each real server the fault tests run against, described once: its environment variables, how
// a session's server-side id is asked for, how one session is ended from another and seen gone,
// how the server is made to time idle sessions out, and the bits of SQL that differ. The
// scenarios both servers share (support/fault_scenarios.hpp, test_servers_fork.cpp) take one of
// these; what only one server can show stays in its own test file.

#include "real_server.hpp"

#include <warmpool/soci.hpp>

#include <chrono>
#include <string>

namespace servers {

struct server_kind {
    const char* var = "";     // the connect string's variable: pg, mysql
    const char* ctl_var = ""; // the control command's: pg_ctl, mysql_ctl

    /// The server's id for the session: PostgreSQL's backend pid, MariaDB's connection id.
    long long (*id_of)(soci::session&) = nullptr;
    /// True while the server still lists the session with that id.
    bool (*exists)(soci::session& admin, long long id) = nullptr;
    /// Ends the session with that id from another one.
    void (*terminate)(soci::session& admin, long long id) = nullptr;
    /// The connect string as a config whose sessions the server closes after one idle second.
    warmpool::soci_config (*with_idle_timeout)(const std::string& cs) = nullptr;

    /// Appended to "create table …" by the tests that need transactions to work.
    const char* transactional_table = "";

    /// Creates an account limited to two connections (dropping a leftover one first) and
    /// returns its connect string; drop_limited_account() removes it again.
    std::string (*create_limited_account)(soci::session& admin, const std::string& cs) = nullptr;
    void (*drop_limited_account)(soci::session& admin) = nullptr;
    /// What the server's error says when that account opens a third connection.
    const char* too_many_connections = "";

    /// Waits (bounded) until the server has forgotten the session: then its socket is closed too.
    bool gone(soci::session& admin, long long id,
              std::chrono::milliseconds timeout = std::chrono::milliseconds{10'000}) const {
        return eventually([&] { return !exists(admin, id); }, timeout);
    }
};

inline const server_kind postgresql = [] {
    server_kind k;
    k.var = pg;
    k.ctl_var = pg_ctl;
    k.id_of = pg_backend_pid;
    k.exists = pg_backend_exists;
    k.terminate = pg_terminate;
    k.with_idle_timeout = [](const std::string& cs) {
        return warmpool::soci_config(with_param(cs, "options", "'-c idle_session_timeout=1000'"));
    };
    k.create_limited_account = [](soci::session& admin, const std::string& cs) {
        admin << "drop role if exists warmpool_limited";
        admin << "create role warmpool_limited login connection limit 2";
        return with_param(cs, "user", "warmpool_limited");
    };
    k.drop_limited_account = [](soci::session& admin) {
        admin << "drop role if exists warmpool_limited";
    };
    k.too_many_connections = "too many connections for role";
    return k;
}();

inline const server_kind mariadb = [] {
    server_kind k;
    k.var = mysql;
    k.ctl_var = mysql_ctl;
    k.id_of = mysql_connection_id;
    k.exists = mysql_connection_exists;
    k.terminate = [](soci::session& admin, long long id) {
        admin << "kill " + std::to_string(id);
    };
    k.with_idle_timeout = [](const std::string& cs) {
        warmpool::soci_config cfg(cs);
        cfg.on_connect = [](soci::session& s) {
            s << "set session wait_timeout = 1";
        };
        return cfg;
    };
    k.transactional_table = " engine = InnoDB";
    // The user gets no privilege on the test database (granting one needs GRANT OPTION, which
    // the test account lacks), so it connects without a default database.
    k.create_limited_account = [](soci::session& admin, const std::string& cs) {
        admin << "drop user if exists 'warmpool_limited'@'127.0.0.1'";
        admin << "create user 'warmpool_limited'@'127.0.0.1' identified by 'limited-pw-7' with "
                 "max_user_connections 2";
        return with_param(with_param(without_param(cs, "db"), "user", "warmpool_limited"),
                          "password", "limited-pw-7");
    };
    k.drop_limited_account = [](soci::session& admin) {
        admin << "drop user if exists 'warmpool_limited'@'127.0.0.1'";
    };
    k.too_many_connections = "max_user_connections";
    return k;
}();

} // namespace servers
