// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// What options::reset_on_release and soci_config::on_release do to real sessions, written once
// and run by two programs: the integration tests (backends linked, WARMPOOL_SOCI_<BACKEND>=1)
// and the auto-detection tests (no macro, client libraries found at run time), so both ways of
// reaching the client library are held to the same results.
//
// A lease leaves behind everything a session can carry (a role, a session variable, a temporary
// table, a lock, a prepared statement, a user variable); with reset_on_release the next lease on
// the same connection sees none of it, and sees on_connect's setup again. Without it the state
// leaks, which shows the tests would notice.

#include "real_server.hpp"
#include "servers.hpp"

#include <warmpool/soci.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>

namespace servers::reset_scenarios {

/// A text value that may be NULL ("NULL" then).
inline std::string text(soci::session& s, const std::string& query) {
    std::string v;
    soci::indicator ind = soci::i_null;
    s << query, soci::into(v, ind);
    return ind == soci::i_ok ? v : std::string("NULL");
}

inline long long number(soci::session& s, const std::string& query) {
    long long v = -1;
    s << query, soci::into(v);
    return v;
}

/// True when running `statement` throws (e.g. a table that is gone).
inline bool fails(soci::session& s, const std::string& statement) {
    try {
        s << statement;
        return false;
    } catch (const soci::soci_error&) {
        return true;
    }
}

/// PostgreSQL: SET ROLE, search_path, a temporary table, an advisory lock, a prepared
/// statement, a custom setting; on_connect sets warmpool.setup.
inline void postgresql_state_does_not_reach_the_next_lease(bool reset) {
    const std::string cs = need(pg);
    auto admin = admin_session(cs);
    *admin << "drop role if exists warmpool_reset_role";
    *admin << "create role warmpool_reset_role nologin";
    warmpool::soci_config cfg(cs);
    cfg.on_connect = [](soci::session& s) {
        s << "set warmpool.setup to 'done'";
    };
    warmpool::options o = pool_of(1);
    o.reset_on_release = reset;
    {
        warmpool::soci_pool pool(cfg, o);
        long long first = 0;
        std::string user;
        std::string search_path;
        {
            auto sql = pool.acquire();
            first = pg_backend_pid(*sql);
            user = text(*sql, "select current_user");
            search_path = text(*sql, "show search_path");
            *sql << "set role warmpool_reset_role";
            *sql << "set search_path to pg_catalog";
            *sql << "set warmpool.setup to 'changed'";
            *sql << "create temporary table warmpool_reset_tmp (i integer)";
            *sql << "select pg_advisory_lock(424242)";
            *sql << "prepare warmpool_reset_stmt as select 1";
            CHECK(text(*sql, "select current_user") == "warmpool_reset_role");
        }
        auto sql = pool.acquire();
        CHECK(pg_backend_pid(*sql) == first); // the same connection: reset, not replaced
        const bool clean =
            text(*sql, "select current_user") == user &&
            text(*sql, "show search_path") == search_path &&
            text(*sql, "select to_regclass('pg_temp.warmpool_reset_tmp')::text") == "NULL" &&
            number(*sql, "select count(*) from pg_locks where locktype = 'advisory' and pid = "
                         "pg_backend_pid()") == 0 &&
            number(*sql, "select count(*) from pg_prepared_statements") == 0;
        if (reset) {
            CHECK(text(*sql, "select current_user") == user);
            CHECK(text(*sql, "show search_path") == search_path);
            CHECK(text(*sql, "select to_regclass('pg_temp.warmpool_reset_tmp')::text") == "NULL");
            CHECK(number(*sql, "select count(*) from pg_locks where locktype = 'advisory' and "
                               "pid = pg_backend_pid()") == 0);
            CHECK(number(*sql, "select count(*) from pg_prepared_statements") == 0);
            CHECK(text(*sql, "select current_setting('warmpool.setup')") == "done");
            const auto st = pool.stats();
            CHECK(st.resets == 1);
            CHECK(st.created == 1);
            CHECK(st.closed == 0);
        } else {
            CHECK_FALSE(clean);    // without the reset the lease's state leaks: the test can tell
            *sql << "discard all"; // the temporary table must not hold up the role's drop
        }
    }
    *admin << "drop role if exists warmpool_reset_role";
}

/// Sets the user's default role for its lifetime (a new connection starts with it), and puts
/// "none" back at the end whatever happens.
class default_role {
public:
    default_role(soci::session& admin, const std::string& role) : admin_(admin) {
        admin_ << "set default role " + role;
    }
    ~default_role() {
        try {
            admin_ << "set default role none";
        } catch (...) {
        }
    }
    default_role(const default_role&) = delete;
    default_role& operator=(const default_role&) = delete;

private:
    soci::session& admin_;
};

/// MariaDB: SET ROLE, a session variable, a user variable, a temporary table, a GET_LOCK lock;
/// on_connect sets @warmpool_setup. mysql_reset_connection leaves the role active, which the
/// adapter puts back: to none, or to the user's default role.
inline void mariadb_state_does_not_reach_the_next_lease(bool reset) {
    const std::string cs = need(mysql);
    auto admin = admin_session(cs);
    *admin << "drop role if exists warmpool_reset_role";
    *admin << "create role warmpool_reset_role";
    *admin << "grant warmpool_reset_role to current_user";
    warmpool::soci_config cfg(cs);
    cfg.on_connect = [](soci::session& s) {
        s << "set @warmpool_setup = 'done'";
    };
    warmpool::options o = pool_of(1);
    o.reset_on_release = reset;
    {
        warmpool::soci_pool pool(cfg, o);
        long long first = 0;
        std::string sql_mode;
        {
            auto sql = pool.acquire();
            first = mysql_connection_id(*sql);
            sql_mode = text(*sql, "select @@session.sql_mode");
            CHECK(text(*sql, "select current_role()") == "NULL");
            *sql << "set role warmpool_reset_role";
            *sql << "set session sql_mode = 'ANSI_QUOTES'";
            *sql << "set @warmpool_setup = 'changed'";
            *sql << "set @warmpool_left = 1";
            *sql << "create temporary table warmpool_reset_tmp (i integer)";
            CHECK(number(*sql, "select get_lock('warmpool_reset', 0)") == 1);
            CHECK(text(*sql, "select current_role()") == "warmpool_reset_role");
        }
        auto sql = pool.acquire();
        CHECK(mysql_connection_id(*sql) == first);
        if (reset) {
            CHECK(text(*sql, "select current_role()") == "NULL");
            CHECK(text(*sql, "select @@session.sql_mode") == sql_mode);
            CHECK(text(*sql, "select @warmpool_left") == "NULL");
            CHECK(text(*sql, "select @warmpool_setup") == "done");
            CHECK(fails(*sql, "select count(*) from warmpool_reset_tmp"));
            CHECK(text(*sql, "select is_used_lock('warmpool_reset')") == "NULL");
            const auto st = pool.stats();
            CHECK(st.resets == 1);
            CHECK(st.created == 1);
            CHECK(st.closed == 0);
        } else {
            CHECK(text(*sql, "select current_role()") == "warmpool_reset_role");
            CHECK(text(*sql, "select @warmpool_left") == "1");
            *sql << "set role none";
            *sql << "select release_all_locks()";
            *sql << "drop temporary table warmpool_reset_tmp";
        }
    }
    if (reset) {
        // A user with a default role: a new connection starts with it, and so does every
        // lease after a reset, whatever role the previous lease left active.
        const default_role role(*admin, "warmpool_reset_role");
        warmpool::soci_pool pool(cfg, o);
        {
            auto sql = pool.acquire();
            CHECK(text(*sql, "select current_role()") == "warmpool_reset_role");
            *sql << "set role none";
        }
        auto sql = pool.acquire();
        CHECK(text(*sql, "select current_role()") == "warmpool_reset_role");
        CHECK(pool.stats().created == 1);
    }
    *admin << "drop role if exists warmpool_reset_role";
}

/// on_release returning false (or throwing) closes the connection instead of pooling it.
inline void on_release_veto_closes(const std::string& cs, long long (*id_of)(soci::session&)) {
    int asked = 0;
    bool keep = true;
    bool throw_instead = false;
    warmpool::soci_config cfg(cs);
    cfg.on_release = [&](soci::session& s) {
        ++asked;
        (void)id_of(s); // the session is usable here
        if (throw_instead) {
            throw std::runtime_error("veto by exception");
        }
        return keep;
    };
    warmpool::soci_pool pool(cfg, pool_of(1));
    long long first = 0;
    {
        auto sql = pool.acquire();
        first = id_of(*sql);
    }
    long long second = 0;
    {
        auto sql = pool.acquire();
        second = id_of(*sql);
        keep = false;
    }
    CHECK(second == first); // kept while on_release said true
    long long third = 0;
    {
        auto sql = pool.acquire();
        third = id_of(*sql);
        keep = true;
        throw_instead = true;
    }
    CHECK(third != first); // closed after the veto
    long long fourth = 0;
    {
        auto sql = pool.acquire();
        fourth = id_of(*sql);
        throw_instead = false;
    }
    CHECK(fourth != third); // closed after the exception
    CHECK(asked == 4);
    const auto st = pool.stats();
    CHECK(st.closed_rejected_on_release == 2);
    CHECK(st.created == 3);
    CHECK(st.open == 1);
}

/// An SQLite file in the temp directory, removed at the end, with its attachable neighbour.
class sqlite_files {
public:
    sqlite_files() {
        std::random_device rd;
        const std::string tag = std::to_string(rd()) + "-" + std::to_string(rd());
        main_ = std::filesystem::temp_directory_path() / ("warmpool-reset-" + tag + ".db");
        other_ = std::filesystem::temp_directory_path() / ("warmpool-reset-" + tag + "-b.db");
    }
    ~sqlite_files() {
        std::error_code ec;
        std::filesystem::remove(main_, ec);
        std::filesystem::remove(other_, ec);
    }
    sqlite_files(const sqlite_files&) = delete;
    sqlite_files& operator=(const sqlite_files&) = delete;

    std::string connect_string() const { return "sqlite3://db=" + main_.string(); }
    std::string other() const { return other_.string(); }

private:
    std::filesystem::path main_;
    std::filesystem::path other_;
};

/// SQLite: TEMP tables, views and triggers are dropped and ATTACHed databases detached;
/// on_connect's PRAGMA is applied again, while a PRAGMA on_connect does not set persists (as
/// documented: no generic way to reset it).
inline void sqlite_state_does_not_reach_the_next_lease() {
    const sqlite_files files;
    warmpool::soci_config cfg(files.connect_string());
    cfg.on_connect = [](soci::session& s) {
        s << "pragma cache_size = -1234";
    };
    warmpool::options o = pool_of(1);
    o.reset_on_release = true;
    warmpool::soci_pool pool(cfg, o);
    {
        auto sql = pool.acquire();
        *sql << "create table if not exists t (i integer)";
        *sql << "create temporary table warmpool_tmp (i integer)";
        *sql << "create temporary view warmpool_tmp_view as select i from warmpool_tmp";
        *sql << "create temporary trigger warmpool_tmp_trigger after insert on t begin "
                "insert into warmpool_tmp values (new.i); end";
        *sql << "attach database '" + files.other() + "' as warmpool_other";
        *sql << "pragma cache_size = -99";
        *sql << "pragma recursive_triggers = on";
        CHECK(number(*sql, "select count(*) from sqlite_temp_master") == 3);
    }
    auto sql = pool.acquire();
    CHECK(number(*sql, "select count(*) from sqlite_temp_master") == 0);
    CHECK(number(*sql, "select count(*) from pragma_database_list where name = "
                       "'warmpool_other'") == 0);
    CHECK(number(*sql, "pragma cache_size") == -1234);     // on_connect again
    CHECK(number(*sql, "pragma recursive_triggers") == 1); // persists: set it in on_connect
    *sql << "insert into t values (1)"; // the temp trigger is gone with its table
    const auto st = pool.stats();
    CHECK(st.resets == 1);
    CHECK(st.created == 1);
    CHECK(st.closed == 0);
}

} // namespace servers::reset_scenarios
