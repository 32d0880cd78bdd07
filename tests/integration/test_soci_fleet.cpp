// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// The SOCI adapter's fleet sample (soci_traits::fleet_sample, warmpool/fleet.hpp) against real
// servers: the limits it reads match the servers' settings, its counts follow sessions opened
// and closed, and reaping ends idle sessions of the same application and nothing else (never a
// transaction that did work, another application's session, a busy one, the sampler, more than
// reap_max), exactly once under concurrent reapers; a hung server costs the timeout and no
// more. Also soci_config::application_name, as PostgreSQL sees it. Then what the first version
// got wrong: PostgreSQL's database limit against every role's connections, reaping many in one
// quick round trip, a session that wakes while a reaper runs, idle times of a century;
// MariaDB's case-sensitive account names, group_concat_max_len, and the kill-while-waking race.

#include <warmpool/soci.hpp>

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE && WARMPOOL_SOCI_MYSQL_NATIVE

#include "support/fault_scenarios.hpp"
#include "support/real_server.hpp"
#include "support/server_kind.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

using std::chrono::milliseconds;
using namespace servers;
using session_ptr = std::unique_ptr<soci::session>;

warmpool::fleet_reading sample(soci::session& s, const warmpool::soci_config& cfg,
                               const warmpool::fleet_request& req,
                               milliseconds timeout = milliseconds{5'000}) {
    return warmpool::soci_traits::fleet_sample(s, cfg, req, timeout);
}

warmpool::fleet_request counts_only(bool with_capacity = true) {
    warmpool::fleet_request req;
    req.with_capacity = with_capacity;
    return req;
}

warmpool::fleet_request reaping(unsigned reap_max, milliseconds idle_after = milliseconds{1'000}) {
    warmpool::fleet_request req;
    req.with_capacity = false;
    req.reap = true;
    req.reap_idle_after = idle_after;
    req.reap_max = reap_max;
    return req;
}

/// A secret that must never show: every error and reap_error is checked against it.
void check_clean(const warmpool::fleet_reading& r, const std::string& secret) {
    INFO("error: " << r.error << "; reap_error: " << r.reap_error);
    CHECK(r.error.find(secret) == std::string::npos);
    CHECK(r.reap_error.find(secret) == std::string::npos);
}

/// True when the session's next statement fails, as it must on a reaped one.
bool next_statement_fails(soci::session& s) {
    try {
        int one = 0;
        s << "select 1", soci::into(one);
        return false;
    } catch (const std::exception&) {
        return true;
    }
}

/// The failure texts end by saying, once, whether the connection can be reused.
void check_says_reuse(const warmpool::fleet_reading& r) {
    INFO("error: " << r.error);
    const std::string yes = "; the connection can be reused";
    const std::string no = "; the connection cannot be reused";
    const std::string& end = r.usable ? yes : no;
    REQUIRE(r.error.size() > end.size());
    CHECK(r.error.compare(r.error.size() - end.size(), end.size(), end) == 0);
    CHECK(r.error.find("reused") == r.error.size() - std::string("reused").size());
    CHECK(r.error.find("connection is closed") == std::string::npos);
}

long long elapsed_us(steady::time_point start) {
    return std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - start).count();
}

// --- PostgreSQL ----------------------------------------------------------------------------

// trust on loopback ignores it; it is there to prove no error text carries it.
constexpr const char* pg_secret = "Qz7-Vx9-Kw2";

/// A non-superuser login role with a connection limit, the application the tests reap in, and a
/// table it may write. Dropped (with its sessions) at the end.
struct pg_fleet_role {
    session_ptr admin;
    std::string cs; // the role's connect string (with a password trust ignores)

    explicit pg_fleet_role(const std::string& base) : admin(admin_session(base)) {
        drop();
        *admin << "create role warmpool_fleet login connection limit 20";
        *admin << "create table fleet_t (x int)";
        *admin << "grant all on fleet_t to warmpool_fleet";
        cs = with_param(with_param(base, "user", "warmpool_fleet"), "password", pg_secret);
    }
    ~pg_fleet_role() {
        try {
            drop();
        } catch (...) {
        }
    }
    void drop() {
        *admin << "set client_min_messages = error"; // sessions ending meanwhile: no warnings
        long long n = 0;
        *admin << "select count(pg_terminate_backend(pid, 5000)) from pg_stat_activity where "
                  "usename = 'warmpool_fleet'",
            soci::into(n);
        *admin << "drop table if exists fleet_t";
        *admin << "drop role if exists warmpool_fleet";
    }

    warmpool::soci_config config(const std::string& app) const {
        warmpool::soci_config cfg(cs);
        cfg.application_name = app;
        return cfg;
    }
    session_ptr open(const std::string& app) const {
        return warmpool::soci_traits::connect(config(app), milliseconds{10'000});
    }
};

std::string pg_setting(soci::session& s, const std::string& name) {
    std::string v;
    s << "select current_setting('" + name + "')", soci::into(v);
    return v;
}

long long pg_client_backends(soci::session& admin, const char* user = nullptr) {
    long long n = 0;
    if (user == nullptr) {
        admin << "select count(*) from pg_stat_activity where backend_type = 'client backend'",
            soci::into(n);
    } else {
        const std::string u = user;
        admin << "select count(*) from pg_stat_activity where backend_type = 'client backend' "
                 "and usename = :u",
            soci::use(u), soci::into(n);
    }
    return n;
}

TEST_CASE("PostgreSQL: the fleet sample reads the server's limits and counts the sessions" *
          skip_without(pg)) {
    pg_fleet_role role(need(pg));
    const warmpool::soci_config cfg = role.config("fleet-counts");
    auto sampler = role.open("fleet-counts");

    const auto first = sample(*sampler, cfg, counts_only());
    check_clean(first, pg_secret);
    REQUIRE(first.ok);
    // PostgreSQL 15 has no reserved_connections; from 16 it is subtracted too.
    const long long max = std::stoll(pg_setting(*role.admin, "max_connections"));
    const long long su = std::stoll(pg_setting(*role.admin, "superuser_reserved_connections"));
    std::string reserved;
    soci::indicator ind = soci::i_null;
    *role.admin << "select current_setting('reserved_connections', true)",
        soci::into(reserved, ind);
    const long long rc = ind == soci::i_ok && !reserved.empty() ? std::stoll(reserved) : 0;
    CHECK(first.server_capacity == static_cast<std::size_t>(max - su - rc));
    CHECK(first.user_capacity == 20); // the role's CONNECTION LIMIT
    CHECK(first.user_in_use == 1);    // the sampler
    // Other roles' rows show no backend_type to this role: an autovacuum worker busy at that
    // moment counts too (see fleet_sql()).
    const auto clients = static_cast<std::size_t>(pg_client_backends(*role.admin));
    CHECK(first.server_in_use >= clients);
    CHECK(first.server_in_use <= clients + 3);
    CHECK(first.reaped == 0);
    CHECK(first.reap_error.empty());

    std::vector<session_ptr> more;
    for (int i = 0; i < 3; ++i) {
        more.push_back(role.open("fleet-counts"));
    }
    const auto grown = sample(*sampler, cfg, counts_only(false));
    REQUIRE(grown.ok);
    CHECK(grown.user_in_use == 4);
    CHECK(grown.server_in_use >= clients + 3);
    CHECK(grown.server_in_use <= clients + 3 + 3);
    // Filled even when not asked for: which user limit binds follows the counts (see below).
    CHECK(grown.server_capacity == first.server_capacity);
    CHECK(grown.user_capacity == 20);

    // A database limit lower than the role's wins; a superuser has neither.
    *role.admin << "alter database warmpool_test connection limit 10";
    const auto db_limited = sample(*sampler, cfg, counts_only());
    *role.admin << "alter database warmpool_test connection limit -1";
    REQUIRE(db_limited.ok);
    CHECK(db_limited.user_capacity == 10);
    // ... and is compared with every role's connections to the database, the admin's included.
    long long to_db = 0;
    *role.admin << "select count(*) from pg_stat_activity where backend_type = 'client backend' "
                   "and datname = current_database()",
        soci::into(to_db);
    CHECK(db_limited.user_in_use == static_cast<std::size_t>(to_db));
    const warmpool::soci_config admin_cfg(need(pg));
    const auto superuser = sample(*role.admin, admin_cfg, counts_only());
    REQUIRE(superuser.ok);
    CHECK(superuser.user_capacity == 0);
    CHECK(superuser.server_capacity == first.server_capacity);

    more.clear();
    CHECK(eventually(
        [&] {
            const auto r = sample(*sampler, cfg, counts_only(false));
            return r.ok && r.user_in_use == 1;
        },
        milliseconds{5'000}));
}

TEST_CASE("PostgreSQL: sessions report soci_config::application_name, quoted and cut as needed" *
          skip_without(pg)) {
    const std::string cs = need(pg);
    ::unsetenv("PGAPPNAME"); // it would win over the default, as libpq documents
    const auto name_seen = [](const warmpool::soci_config& cfg) {
        auto s = warmpool::soci_traits::connect(cfg, milliseconds{10'000});
        return pg_setting(*s, "application_name");
    };
    const std::string tricky = "fleet-app's\"x\"\\50%&=more?";

    SUBCASE("by default, the program's name") {
        const warmpool::soci_config cfg(cs);
        CHECK(!cfg.application_name.empty());
        CHECK(name_seen(cfg) == cfg.application_name);
        CHECK(cfg.application_name.find("warmpool_integration") == 0);
    }
    SUBCASE("a name with quotes, a backslash, '%', '&' and '=', keyword form") {
        warmpool::soci_config cfg(cs);
        cfg.application_name = tricky;
        CHECK(name_seen(cfg) == tricky);
    }
    SUBCASE("the same name in a URI") {
        const std::string port = std::to_string(std::atoi(std::getenv("WARMPOOL_TEST_PG_PORT")));
        warmpool::soci_config cfg("postgresql://warmpool@127.0.0.1:" + port +
                                  "/warmpool_test?sslmode=disable");
        cfg.application_name = tricky;
        CHECK(name_seen(cfg) == tricky);
        // And a URI with no query part yet.
        warmpool::soci_config bare("postgresql://warmpool@127.0.0.1:" + port + "/warmpool_test");
        bare.application_name = tricky;
        CHECK(name_seen(bare) == tricky);
    }
    SUBCASE("blanks become '_', keyword form and URI alike (SOCI 4.0.3 splits at blanks)") {
        warmpool::soci_config cfg(cs);
        cfg.application_name = "my fleet app";
        CHECK(name_seen(cfg) == "my_fleet_app");
        const std::string port = std::to_string(std::atoi(std::getenv("WARMPOOL_TEST_PG_PORT")));
        warmpool::soci_config uri("postgresql://warmpool@127.0.0.1:" + port + "/warmpool_test");
        uri.application_name = "my fleet app";
        CHECK(name_seen(uri) == "my_fleet_app");
    }
    SUBCASE("printable ASCII only, at most 63 bytes") {
        warmpool::soci_config cfg(cs);
        cfg.application_name = "caf\xc3\xa9\ttab-" + std::string(100, 'x');
        const std::string seen = name_seen(cfg);
        CHECK(seen.size() == 63);
        CHECK(seen.rfind("caf???tab-xxx", 0) == 0);
    }
    SUBCASE("an application_name in the connect string wins") {
        warmpool::soci_config cfg(with_param(cs, "application_name", "from-the-string"));
        cfg.application_name = "from-the-config";
        CHECK(name_seen(cfg) == "from-the-string");
    }
    SUBCASE("empty: none added") {
        warmpool::soci_config cfg(cs);
        cfg.application_name.clear();
        CHECK(name_seen(cfg) == "");
    }
}

TEST_CASE("PostgreSQL: reaping ends idle sessions of the same application, oldest first, and "
          "nothing else" *
          skip_without(pg)) {
    pg_fleet_role role(need(pg));
    const std::string app = "fleet-reap";
    const warmpool::soci_config cfg = role.config(app);

    std::vector<session_ptr> zombies;
    std::vector<long long> zombie_pids;
    for (int i = 0; i < 3; ++i) {
        zombies.push_back(role.open(app));
        zombie_pids.push_back(pg_backend_pid(*zombies.back()));
        std::this_thread::sleep_for(milliseconds{20}); // distinct state_change, oldest first
    }
    // Idle in a transaction that wrote: never.
    auto in_tx = role.open(app);
    *in_tx << "begin";
    *in_tx << "insert into fleet_t values (1)";
    // Another application of the same role: never.
    auto other_app = role.open("fleet-other-app");
    // Busy (state 'active'): never.
    auto busy = role.open(app);
    const long long busy_pid = pg_backend_pid(*busy);
    std::thread busy_thread([&] {
        try {
            *busy << "select pg_sleep(30)";
        } catch (...) {
            // cancelled below
        }
    });
    REQUIRE(eventually(
        [&] {
            std::string state;
            *role.admin << "select coalesce(max(state), '') from pg_stat_activity where pid = :p",
                soci::use(busy_pid), soci::into(state);
            return state == "active";
        },
        milliseconds{5'000}));
    auto sampler = role.open(app);
    const long long sampler_pid = pg_backend_pid(*sampler);

    std::this_thread::sleep_for(milliseconds{1'200}); // every idle one is now a zombie
    int one = 0;
    *sampler << "select 1", soci::into(one);
    const auto before = sample(*sampler, cfg, counts_only(false));
    REQUIRE(before.ok);
    CHECK(before.user_in_use == 7);

    const auto first = sample(*sampler, cfg, reaping(2));
    check_clean(first, pg_secret);
    REQUIRE(first.ok);
    CHECK(first.reaped == 2); // reap_max
    CHECK(first.reap_error.empty());
    CHECK(first.user_in_use == 5); // the two reaped are not counted
    CHECK_FALSE(pg_backend_exists(*role.admin, zombie_pids[0]));
    CHECK_FALSE(pg_backend_exists(*role.admin, zombie_pids[1]));
    CHECK(pg_backend_exists(*role.admin, zombie_pids[2]));

    const auto second = sample(*sampler, cfg, reaping(2));
    REQUIRE(second.ok);
    CHECK(second.reaped == 1);
    CHECK_FALSE(pg_backend_exists(*role.admin, zombie_pids[2]));
    const auto third = sample(*sampler, cfg, reaping(2));
    REQUIRE(third.ok);
    CHECK(third.reaped == 0);
    CHECK(third.user_in_use == 4);

    // The survivors: all there, and still working.
    CHECK(pg_backend_exists(*role.admin, pg_backend_pid(*in_tx)));
    CHECK(pg_backend_exists(*role.admin, pg_backend_pid(*other_app)));
    CHECK(pg_backend_exists(*role.admin, busy_pid));
    CHECK(pg_backend_exists(*role.admin, sampler_pid));
    *in_tx << "commit";
    long long rows = 0;
    *role.admin << "select count(*) from fleet_t", soci::into(rows);
    CHECK(rows == 1);

    // A reaped session's next statement fails, so a pool replaces it.
    for (auto& z : zombies) {
        CHECK(next_statement_fails(*z));
    }
    long long cancelled = 0;
    *role.admin << "select count(pg_cancel_backend(:p))", soci::use(busy_pid),
        soci::into(cancelled);
    busy_thread.join();
}

TEST_CASE("PostgreSQL: without an application_name nothing is reaped, and reap_error says why" *
          skip_without(pg)) {
    pg_fleet_role role(need(pg));
    auto zombie = role.open("");
    const long long zombie_pid = pg_backend_pid(*zombie);
    const warmpool::soci_config cfg = role.config("");
    auto sampler = role.open("");
    std::this_thread::sleep_for(milliseconds{1'200});
    const auto r = sample(*sampler, cfg, reaping(2));
    check_clean(r, pg_secret);
    CHECK(r.ok);
    CHECK(r.reaped == 0);
    CHECK(r.reap_error.find("application_name") != std::string::npos);
    CHECK(pg_backend_exists(*role.admin, zombie_pid));
}

/// Takes EXECUTE on pg_terminate_backend from PUBLIC, and gives it back whatever happens.
struct pg_terminate_revoked {
    soci::session& admin;
    std::string function;
    explicit pg_terminate_revoked(soci::session& a) : admin(a) {
        long long version = 0;
        admin << "select current_setting('server_version_num')::int", soci::into(version);
        // pg_terminate_backend(pid) is the (integer, bigint DEFAULT 0) one from 14 on.
        function = version >= 140000 ? "pg_terminate_backend(integer, bigint)"
                                     : "pg_terminate_backend(integer)";
        admin << "revoke execute on function " + function + " from public";
    }
    ~pg_terminate_revoked() {
        try {
            admin << "grant execute on function " + function + " to public";
        } catch (...) {
        }
    }
};

TEST_CASE("PostgreSQL: an error the server reports leaves the sampler usable" * skip_without(pg)) {
    pg_fleet_role role(need(pg));
    const std::string app = "fleet-error";
    auto sampler = role.open(app);
    warmpool::fleet_reading r;
    {
        // The role may not call pg_terminate_backend: the statement fails as a whole.
        pg_terminate_revoked revoked(*role.admin);
        r = sample(*sampler, role.config(app), reaping(2));
    }
    check_clean(r, pg_secret);
    CHECK_FALSE(r.ok);
    CHECK(r.usable);
    CHECK(r.error.find("permission denied") != std::string::npos);
    CHECK(r.error.find("42501") != std::string::npos);
    check_says_reuse(r);
    MESSAGE("the server's refusal: " << r.error);
    int one = 0;
    *sampler << "select 1", soci::into(one); // still in step with the server
    CHECK(one == 1);
    CHECK(sample(*sampler, role.config(app), reaping(2)).ok);
}

TEST_CASE("PostgreSQL: two samplers reaping at once end each zombie once" * skip_without(pg)) {
    pg_fleet_role role(need(pg));
    const std::string app = "fleet-race";
    const warmpool::soci_config cfg = role.config(app);
    constexpr int zombie_count = 6;
    std::vector<session_ptr> zombies;
    for (int i = 0; i < zombie_count; ++i) {
        zombies.push_back(role.open(app));
    }
    auto a = role.open(app);
    auto b = role.open(app);
    std::this_thread::sleep_for(milliseconds{1'200});

    std::atomic<int> ready{0};
    std::atomic<unsigned> reaped{0};
    std::atomic<int> failures{0};
    const auto reaper = [&](soci::session& s) {
        int one = 0;
        s << "select 1", soci::into(one); // not idle for a second: no zombie to the other
        ++ready;
        while (ready.load() < 2) {
        }
        for (int i = 0; i < 6; ++i) {
            const auto r = sample(s, cfg, reaping(2));
            failures += r.ok && r.reap_error.empty() ? 0 : 1;
            reaped += r.reaped;
        }
    };
    std::thread ta([&] { reaper(*a); });
    std::thread tb([&] { reaper(*b); });
    ta.join();
    tb.join();
    CHECK(failures.load() == 0);
    CHECK(reaped.load() == static_cast<unsigned>(zombie_count));
    CHECK(pg_backend_exists(*role.admin, pg_backend_pid(*a)));
    CHECK(pg_backend_exists(*role.admin, pg_backend_pid(*b)));
    const auto after = sample(*a, cfg, counts_only(false));
    CHECK(after.user_in_use == 2);
}

TEST_CASE("PostgreSQL: a hung backend costs the sample its timeout, and the connection" *
          skip_without(pg, sigstop)) {
    (void)need(sigstop);
    const std::string cs = with_param(need(pg), "password", pg_secret);
    const warmpool::soci_config cfg(cs);
    auto s = warmpool::soci_traits::connect(cfg, milliseconds{10'000});
    const long long pid = pg_backend_pid(*s);
    warmpool::fleet_reading r;
    long long took = 0;
    {
        stopped_process freeze(static_cast<pid_t>(pid));
        REQUIRE(freeze.stopped());
        const auto start = steady::now();
        r = sample(*s, cfg, reaping(2), milliseconds{500});
        took = elapsed_ms(start);
    }
    MESSAGE("hung backend: " << r.error << " after " << took << " ms");
    check_clean(r, pg_secret);
    CHECK_FALSE(r.ok);
    CHECK_FALSE(r.usable);
    check_says_reuse(r);
    CHECK(took >= 450);
    CHECK(took < 500 + 500);
    CHECK(r.error.find("500 ms") != std::string::npos);
}

TEST_CASE("PostgreSQL: reaping 15 zombies is one quick round trip that counts each" *
          skip_without(pg)) {
    pg_fleet_role role(need(pg));
    const std::string app = "fleet-many";
    const warmpool::soci_config cfg = role.config(app);
    constexpr unsigned zombie_count = 15;
    std::vector<session_ptr> zombies;
    for (unsigned i = 0; i < zombie_count; ++i) {
        zombies.push_back(role.open(app));
    }
    auto sampler = role.open(app);
    std::this_thread::sleep_for(milliseconds{1'200});
    int one = 0;
    *sampler << "select 1", soci::into(one);
    // A 2 s timeout: waiting for each exit (up to timeout / (2 * reap_max) each, polled every
    // 100 ms) would take about a second here and count none.
    const auto start = steady::now();
    const auto r = sample(*sampler, cfg, reaping(zombie_count), milliseconds{2'000});
    const long long took = elapsed_ms(start);
    MESSAGE("PostgreSQL: " << r.reaped << " zombies reaped in " << took << " ms");
    REQUIRE(r.ok);
    CHECK(r.reap_error.empty());
    CHECK(r.reaped == zombie_count);
    CHECK(took < 500);
    CHECK(r.user_in_use == 1); // the sampler: the reaped are left out, exactly
    for (auto& z : zombies) {
        CHECK(next_statement_fails(*z));
    }
    CHECK(eventually([&] { return pg_client_backends(*role.admin, "warmpool_fleet") == 1; },
                     milliseconds{5'000}));
}

TEST_CASE("PostgreSQL: a zombie that wakes while a reaper runs is ended before its first "
          "statement or not at all" *
          skip_without(pg, sigstop)) {
    (void)need(sigstop);
    pg_fleet_role role(need(pg));
    const std::string app = "fleet-wake";
    const warmpool::soci_config cfg = role.config(app);
    auto a = role.open(app); // the oldest victim, which will be slow to exit
    const long long pid_a = pg_backend_pid(*a);
    std::this_thread::sleep_for(milliseconds{50});
    auto b = role.open(app); // the one that wakes
    auto sampler = role.open(app);
    std::this_thread::sleep_for(milliseconds{1'200});
    int one = 0;
    *sampler << "select 1", soci::into(one);

    bool began = false;
    bool committed = false;
    warmpool::fleet_reading r;
    {
        stopped_process freeze(static_cast<pid_t>(pid_a));
        REQUIRE(freeze.stopped());
        std::atomic<bool> started{false};
        std::thread reaper([&] {
            started = true;
            r = sample(*sampler, cfg, reaping(2), milliseconds{5'000});
        });
        while (!started) {
            std::this_thread::yield();
        }
        // A reaper that waited for A's exit before signalling B would still be waiting now.
        std::this_thread::sleep_for(milliseconds{300});
        try {
            *b << "begin";
            *b << "insert into fleet_t values (2)";
            began = true;
        } catch (const std::exception&) {
            // ended before it began: nothing was written
        }
        reaper.join();
        if (began) {
            try {
                *b << "commit";
                committed = true;
            } catch (const std::exception&) {
            }
        }
    }
    INFO("B began a transaction: " << began << ", committed it: " << committed);
    REQUIRE(r.ok);
    // Never a transaction that did work ended under it.
    CHECK((!began || committed));
    long long rows = 0;
    *role.admin << "select count(*) from fleet_t", soci::into(rows);
    CHECK(rows == (committed ? 1 : 0));
}

TEST_CASE("PostgreSQL: the database's connection limit counts every role's connections to it, "
          "the role's every database's" *
          skip_without(pg)) {
    pg_fleet_role role(need(pg));
    const std::string db = "warmpool_fleet_db";
    struct database {
        soci::session& admin;
        std::string name;
        database(soci::session& a, std::string n) : admin(a), name(std::move(n)) {
            admin << "drop database if exists " + name + " with (force)";
            admin << "create database " + name + " connection limit 5";
        }
        ~database() {
            try {
                admin << "drop database if exists " + name + " with (force)";
            } catch (...) {
            }
        }
    } limited(*role.admin, db);
    const std::string app = "fleet-dblimit";
    warmpool::soci_config cfg(with_param(role.cs, "dbname", db));
    cfg.application_name = app;
    auto sampler = warmpool::soci_traits::connect(cfg, milliseconds{10'000});

    // Four of the database's five slots taken by another role: a new connection is refused
    // at the next one, whoever opens it.
    std::vector<session_ptr> others;
    for (int i = 0; i < 3; ++i) {
        others.push_back(admin_session(with_param(need(pg), "dbname", db)));
    }
    const auto db_full = sample(*sampler, cfg, counts_only());
    REQUIRE(db_full.ok);
    CHECK(db_full.user_capacity == 5);
    CHECK(db_full.user_in_use == 4); // 1 of the role's 20 would be 5%: the database binds

    // The role's limit fuller than the database's: 3 of 3 (two more on another database).
    *role.admin << "alter role warmpool_fleet connection limit 3";
    auto elsewhere = role.open(app);
    auto elsewhere2 = role.open(app);
    others.pop_back();
    const auto role_full = sample(*sampler, cfg, counts_only());
    REQUIRE(role_full.ok);
    CHECK(role_full.user_capacity == 3);
    CHECK(role_full.user_in_use == 3);
}

TEST_CASE("PostgreSQL: a reap_idle_after of a century or more still samples" * skip_without(pg)) {
    pg_fleet_role role(need(pg));
    const std::string app = "fleet-forever";
    auto zombie = role.open(app);
    auto sampler = role.open(app);
    for (const milliseconds idle : {warmpool::options::forever, milliseconds::max()}) {
        const auto r = sample(*sampler, role.config(app), reaping(2, idle));
        INFO("reap_idle_after " << idle.count() << " ms: " << r.error);
        CHECK(r.ok);
        CHECK(r.reaped == 0);
        CHECK(r.user_in_use == 2);
    }
}

// --- MariaDB -------------------------------------------------------------------------------

std::string password_of(const std::string& cs) {
    const std::size_t at = cs.find("password=");
    REQUIRE(at != std::string::npos);
    return cs.substr(at + 9, cs.find(' ', at) - at - 9);
}

/// A second account without privileges (creating one needs no GRANT OPTION; granting it PROCESS
/// would), limited to 5 connections: "another application" to the test account, which has
/// PROCESS and so can reap. Dropped at the end (MariaDB ends no session of a dropped user, so
/// they are killed first).
struct mariadb_fleet_user {
    session_ptr admin;
    std::string cs;

    explicit mariadb_fleet_user(const std::string& base) : admin(admin_session(base)) {
        drop();
        *admin << "create user 'warmpool_fleet'@'127.0.0.1' identified by 'Qz7-Vx9-Kw2' "
                  "with max_user_connections 5";
        cs = with_param(with_param(without_param(base, "db"), "user", "warmpool_fleet"), "password",
                        "Qz7-Vx9-Kw2");
    }
    ~mariadb_fleet_user() {
        try {
            drop();
        } catch (...) {
        }
    }
    void drop() {
        std::vector<long long> ids(100);
        *admin << "select id from information_schema.processlist where user = 'warmpool_fleet'",
            soci::into(ids);
        for (const long long id : ids) {
            try {
                *admin << "kill " + std::to_string(id);
            } catch (...) {
            }
        }
        *admin << "drop user if exists 'warmpool_fleet'@'127.0.0.1'";
    }
    session_ptr open() const { return admin_session(cs); }
};

long long mariadb_number(soci::session& s, const std::string& sql) {
    long long n = 0;
    s << sql, soci::into(n);
    return n;
}

TEST_CASE("MariaDB: the fleet sample reads the server's limits and counts the sessions" *
          skip_without(mysql)) {
    const std::string cs = need(mysql);
    mariadb_fleet_user user(cs);
    const warmpool::soci_config cfg(user.cs);
    auto sampler = user.open();

    const auto first = sample(*sampler, cfg, counts_only());
    check_clean(first, "Qz7-Vx9-Kw2");
    check_clean(first, password_of(cs));
    REQUIRE(first.ok);
    CHECK(first.server_capacity ==
          static_cast<std::size_t>(mariadb_number(*user.admin, "select @@max_connections")));
    // The account's MAX_USER_CONNECTIONS shows in the session's max_user_connections.
    CHECK(first.user_capacity == 5);
    CHECK(first.user_in_use == 1);
    CHECK(first.server_in_use ==
          static_cast<std::size_t>(mariadb_number(
              *user.admin, "select count(*) from information_schema.processlist where command "
                           "<> 'Daemon'")));

    std::vector<session_ptr> more;
    for (int i = 0; i < 3; ++i) {
        more.push_back(user.open());
    }
    const auto grown = sample(*sampler, cfg, counts_only(false));
    REQUIRE(grown.ok);
    CHECK(grown.user_in_use == 4);
    CHECK(grown.server_in_use == first.server_in_use + 3);
    CHECK(grown.server_capacity == 0);

    // An account without a limit of its own has the server's (0 here: none).
    const warmpool::soci_config admin_cfg(cs);
    const auto unlimited = sample(*user.admin, admin_cfg, counts_only());
    REQUIRE(unlimited.ok);
    CHECK(unlimited.user_capacity == static_cast<std::size_t>(mariadb_number(
                                         *user.admin, "select @@global.max_user_connections")));

    more.clear();
    CHECK(eventually(
        [&] {
            const auto r = sample(*sampler, cfg, counts_only(false));
            return r.ok && r.user_in_use == 1;
        },
        milliseconds{5'000}));
}

/// The test account's connections, other than those a test opened on purpose, must not sit idle
/// for a second while it reaps: they would be zombies too. So the admin session is the sampler.
TEST_CASE("MariaDB: reaping ends idle connections of the same user, oldest first, and nothing "
          "else" *
          skip_without(mysql)) {
    const std::string cs = need(mysql);
    const std::string password = password_of(cs);
    mariadb_fleet_user user(cs);
    const warmpool::soci_config cfg(cs);
    soci::session& sampler = *user.admin;
    sampler << "drop table if exists fleet_t";
    sampler << "create table fleet_t (id int primary key, x int) engine = InnoDB";
    sampler << "insert into fleet_t values (1, 0), (2, 0)";

    std::vector<session_ptr> zombies;
    std::vector<long long> zombie_ids;
    for (int i = 0; i < 3; ++i) {
        zombies.push_back(admin_session(cs));
        zombie_ids.push_back(mysql_connection_id(*zombies.back()));
    }
    // Inside InnoDB transactions that did work: never.
    auto wrote = admin_session(cs);
    *wrote << "begin";
    *wrote << "update fleet_t set x = 1 where id = 1";
    auto locked = admin_session(cs);
    *locked << "begin";
    int x = 0;
    *locked << "select x from fleet_t where id = 2 for update", soci::into(x);
    // Another user (application): never.
    auto other = user.open();
    // Busy: never.
    auto busy = admin_session(cs);
    const long long busy_id = mysql_connection_id(*busy);
    std::thread busy_thread([&] {
        try {
            int slept = 0;
            *busy << "select sleep(30)", soci::into(slept);
        } catch (...) {
        }
    });

    std::this_thread::sleep_for(milliseconds{1'500}); // TIME >= 1 for every idle one
    const auto first = sample(sampler, cfg, reaping(2));
    check_clean(first, password);
    REQUIRE(first.ok);
    CHECK(first.reap_error.empty());
    CHECK(first.reaped == 2);
    // KILL returns before the killed connections' threads have ended.
    CHECK(eventually([&] { return !mysql_connection_exists(sampler, zombie_ids[0]); },
                     milliseconds{5'000}));
    CHECK(eventually([&] { return !mysql_connection_exists(sampler, zombie_ids[1]); },
                     milliseconds{5'000}));
    CHECK(mysql_connection_exists(sampler, zombie_ids[2]));
    const auto second = sample(sampler, cfg, reaping(2));
    REQUIRE(second.ok);
    CHECK(second.reaped == 1);
    const auto third = sample(sampler, cfg, reaping(2));
    REQUIRE(third.ok);
    CHECK(third.reaped == 0);
    CHECK(third.reap_error.empty());

    CHECK(mysql_connection_exists(sampler, mysql_connection_id(*wrote)));
    CHECK(mysql_connection_exists(sampler, mysql_connection_id(*locked)));
    CHECK(mysql_connection_exists(sampler, mysql_connection_id(*other)));
    CHECK(mysql_connection_exists(sampler, busy_id));
    *wrote << "commit";
    *locked << "commit";
    CHECK(mariadb_number(sampler, "select x from fleet_t where id = 1") == 1);
    for (auto& z : zombies) {
        CHECK(next_statement_fails(*z));
    }
    sampler << "kill query " + std::to_string(busy_id);
    busy_thread.join();
    sampler << "drop table fleet_t";
}

TEST_CASE("MariaDB: a BEGIN that touched no table yet is reaped, and loses nothing" *
          skip_without(mysql)) {
    const std::string cs = need(mysql);
    const warmpool::soci_config cfg(cs);
    auto sampler = admin_session(cs);
    *sampler << "drop table if exists fleet_t";
    *sampler << "create table fleet_t (id int primary key) engine = InnoDB";
    auto begun = admin_session(cs);
    const long long begun_id = mysql_connection_id(*begun);
    *begun << "begin";
    // No InnoDB transaction exists until a statement touches a table.
    CHECK(mariadb_number(*sampler, "select count(*) from information_schema.innodb_trx where "
                                   "trx_mysql_thread_id = " +
                                       std::to_string(begun_id)) == 0);
    std::this_thread::sleep_for(milliseconds{1'500});
    int one = 0;
    *sampler << "select 1", soci::into(one);
    const auto r = sample(*sampler, cfg, reaping(5));
    REQUIRE(r.ok);
    CHECK(r.reaped == 1);
    // KILL returns before the killed connection's thread has ended.
    CHECK(eventually([&] { return !mysql_connection_exists(*sampler, begun_id); },
                     milliseconds{5'000}));
    // Its next statement fails instead of running in a transaction that quietly vanished.
    bool failed = false;
    try {
        *begun << "insert into fleet_t values (1)";
    } catch (const std::exception&) {
        failed = true;
    }
    CHECK(failed);
    CHECK(mariadb_number(*sampler, "select count(*) from fleet_t") == 0);
    *sampler << "drop table fleet_t";
}

TEST_CASE("MariaDB: without the PROCESS privilege nothing is killed, and reap_error says what "
          "to grant" *
          skip_without(mysql)) {
    const std::string cs = need(mysql);
    mariadb_fleet_user user(cs);
    const warmpool::soci_config cfg(user.cs);
    auto zombie = user.open();
    const long long zombie_id = mysql_connection_id(*zombie);
    auto sampler = user.open();
    std::this_thread::sleep_for(milliseconds{1'500});
    int one = 0;
    *sampler << "select 1", soci::into(one);
    const auto r = sample(*sampler, cfg, reaping(2));
    check_clean(r, "Qz7-Vx9-Kw2");
    CHECK(r.ok);
    CHECK(r.reaped == 0);
    CHECK(r.reap_error.find("PROCESS") != std::string::npos);
    CHECK(r.user_in_use == 2);
    CHECK(mysql_connection_exists(*user.admin, zombie_id));
}

TEST_CASE("MariaDB: two samplers reaping at once end each zombie once" * skip_without(mysql)) {
    const std::string cs = need(mysql);
    const warmpool::soci_config cfg(cs);
    constexpr int zombie_count = 6;
    std::vector<session_ptr> zombies;
    std::vector<long long> ids;
    for (int i = 0; i < zombie_count; ++i) {
        zombies.push_back(admin_session(cs));
        ids.push_back(mysql_connection_id(*zombies.back()));
    }
    auto a = admin_session(cs);
    auto b = admin_session(cs);
    std::this_thread::sleep_for(milliseconds{1'500});

    std::atomic<int> ready{0};
    std::atomic<unsigned> reaped{0};
    std::atomic<int> failures{0};
    const auto reaper = [&](soci::session& s) {
        int one = 0;
        s << "select 1", soci::into(one); // not idle for a second: no zombie to the other
        ++ready;
        while (ready.load() < 2) {
        }
        for (int i = 0; i < 6; ++i) {
            const auto r = sample(s, cfg, reaping(2));
            failures += r.ok && r.reap_error.empty() ? 0 : 1;
            reaped += r.reaped;
        }
    };
    std::thread ta([&] { reaper(*a); });
    std::thread tb([&] { reaper(*b); });
    ta.join();
    tb.join();
    CHECK(failures.load() == 0);
    CHECK(reaped.load() == static_cast<unsigned>(zombie_count));
    for (const long long id : ids) {
        CHECK(eventually([&] { return !mysql_connection_exists(*a, id); }, milliseconds{5'000}));
    }
    CHECK(mysql_connection_exists(*a, mysql_connection_id(*b)));
}

TEST_CASE("MariaDB: a stopped server costs the sample its timeout, and the connection" *
          skip_without(mysql, sigstop)) {
    (void)need(sigstop);
    const std::string cs = need(mysql);
    const warmpool::soci_config cfg(cs);
    auto admin = admin_session(cs);
    const pid_t server = scenarios::mariadb_server_pid(*admin);
    REQUIRE(server > 1);
    auto s = admin_session(cs);
    warmpool::fleet_reading r;
    long long took = 0;
    {
        stopped_process freeze(server);
        REQUIRE(freeze.stopped());
        const auto start = steady::now();
        r = sample(*s, cfg, reaping(2), milliseconds{500});
        took = elapsed_ms(start);
    }
    MESSAGE("stopped server: " << r.error << " after " << took << " ms");
    check_clean(r, password_of(cs));
    CHECK_FALSE(r.ok);
    CHECK_FALSE(r.usable);
    check_says_reuse(r);
    CHECK(took >= 450);
    CHECK(took < 500 + 500);
}

/// An account whose name is the test account's in capitals: another account to MariaDB, whose
/// account names are case-sensitive. Dropped (its sessions killed first) at the end.
struct mariadb_shouting_user {
    session_ptr admin;
    std::string cs;

    explicit mariadb_shouting_user(const std::string& base) : admin(admin_session(base)) {
        drop();
        long long taken = 0;
        *admin << "select count(*) from mysql.user where user = binary 'WARMPOOL'",
            soci::into(taken);
        REQUIRE(taken == 0);
        *admin << "create user 'WARMPOOL'@'127.0.0.1' identified by 'Qz7-Vx9-Kw2'";
        cs = with_param(with_param(without_param(base, "db"), "user", "WARMPOOL"), "password",
                        "Qz7-Vx9-Kw2");
    }
    ~mariadb_shouting_user() {
        try {
            drop();
        } catch (...) {
        }
    }
    void drop() {
        std::vector<long long> ids(100);
        *admin << "select id from information_schema.processlist where cast(user as binary) = "
                  "'WARMPOOL'",
            soci::into(ids);
        for (const long long id : ids) {
            try {
                *admin << "kill " + std::to_string(id);
            } catch (...) {
            }
        }
        *admin << "drop user if exists 'WARMPOOL'@'127.0.0.1'";
    }
};

namespace my = warmpool::detail::soci_my;

/// The sample in the form MySQL gets (one SELECT, then a KILL per zombie), run on MariaDB.
warmpool::fleet_reading sample_as_mysql(soci::session& s, const warmpool::fleet_request& req) {
    return my::fleet_sample(s, req, milliseconds{5'000}, my::fleet_dialect::statement);
}

bool mariadb_lock_free(soci::session& admin, long long id) {
    soci::indicator ind = soci::i_ok;
    long long holder = 0;
    admin << "select is_used_lock('" + std::string(my::fleet_lock_prefix) + std::to_string(id) +
                 "')",
        soci::into(holder, ind);
    return ind == soci::i_null;
}

TEST_CASE("MariaDB: an account whose name differs only in case is neither counted nor reaped" *
          skip_without(mysql)) {
    const std::string cs = need(mysql);
    mariadb_shouting_user shouting(cs);
    const warmpool::soci_config cfg(cs);
    soci::session& sampler = *shouting.admin;
    auto other = admin_session(shouting.cs);
    const long long other_id = mysql_connection_id(*other);
    std::this_thread::sleep_for(milliseconds{1'500});
    const auto mine = [&] {
        return static_cast<std::size_t>(
            mariadb_number(sampler, "select count(*) from information_schema.processlist where "
                                    "cast(user as binary) = 'warmpool'"));
    };
    SUBCASE("one statement (MariaDB)") {
        const auto r = sample(sampler, cfg, reaping(5));
        REQUIRE(r.ok);
        CHECK(r.reaped == 0);
        CHECK(r.user_in_use == mine());
    }
    SUBCASE("a SELECT, then KILLs (MySQL)") {
        const auto r = sample_as_mysql(sampler, reaping(5));
        REQUIRE(r.ok);
        CHECK(r.reaped == 0);
        CHECK(r.user_in_use == mine());
    }
    CHECK(mysql_connection_exists(sampler, other_id));
    CHECK_FALSE(next_statement_fails(*other));
}

TEST_CASE("MariaDB: a group_concat_max_len too short for the ids never makes a cut id a "
          "victim" *
          skip_without(mysql)) {
    const std::string cs = need(mysql);
    const warmpool::soci_config cfg(cs);
    auto sampler = admin_session(cs);
    std::vector<session_ptr> zombies;
    std::vector<long long> ids;
    for (int i = 0; i < 2; ++i) {
        zombies.push_back(admin_session(cs));
        ids.push_back(mysql_connection_id(*zombies.back()));
    }
    // Two ids and a comma need more than 4 bytes: "12,13" would come back as "12,1".
    *sampler << "set session group_concat_max_len = 4";
    std::this_thread::sleep_for(milliseconds{1'500});
    int one = 0;
    *sampler << "select 1", soci::into(one);
    SUBCASE("a SELECT, then KILLs (MySQL): nothing locked or killed, and reap_error says why") {
        const auto r = sample_as_mysql(*sampler, reaping(2));
        REQUIRE(r.ok);
        CHECK(r.reaped == 0);
        CHECK(r.reap_error.find("group_concat_max_len is 4") != std::string::npos);
        MESSAGE("reap_error: " << r.reap_error);
        for (const long long id : ids) {
            CHECK(mysql_connection_exists(*sampler, id));
            CHECK(mariadb_lock_free(*sampler, id));
        }
        // Long enough, the same form reaps both, exactly.
        *sampler << "set session group_concat_max_len = 42";
        const auto enough = sample_as_mysql(*sampler, reaping(2));
        REQUIRE(enough.ok);
        CHECK(enough.reap_error.empty());
        CHECK(enough.reaped == 2);
    }
    SUBCASE("one statement (MariaDB): no list at all") {
        const auto r = sample(*sampler, cfg, reaping(2));
        REQUIRE(r.ok);
        CHECK(r.reap_error.empty());
        CHECK(r.reaped == 2);
    }
    for (const long long id : ids) {
        CHECK(mariadb_lock_free(*sampler, id));
    }
}

/// A TCP relay on 127.0.0.1 that delays what clients send by `delay` (what the server sends
/// passes at once): a reaper far from its server, whose statements arrive late.
class delaying_relay {
public:
    delaying_relay(int server_port, milliseconds delay) : server_port_(server_port), delay_(delay) {
        listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a = loopback(0);
        socklen_t len = sizeof a;
        REQUIRE(listener_ >= 0);
        REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        REQUIRE(::listen(listener_, 4) == 0);
        REQUIRE(::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] { run(); });
    }
    ~delaying_relay() {
        stop_ = true;
        thread_.join();
        for (link& l : links_) {
            ::close(l.client);
            ::close(l.server);
        }
        ::close(listener_);
    }
    delaying_relay(const delaying_relay&) = delete;
    delaying_relay& operator=(const delaying_relay&) = delete;
    int port() const { return port_; }

private:
    struct chunk {
        steady::time_point due;
        std::string bytes;
    };
    struct link {
        int client = -1;
        int server = -1;
        std::deque<chunk> pending; // client to server
        bool open = true;
    };

    static sockaddr_in loopback(int port) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<std::uint16_t>(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return a;
    }
    static bool send_all(int fd, const std::string& bytes) {
        std::size_t at = 0;
        while (at < bytes.size()) {
            const ssize_t n = ::send(fd, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
            if (n <= 0) {
                return false;
            }
            at += static_cast<std::size_t>(n);
        }
        return true;
    }
    void run() {
        char buf[65536];
        while (!stop_) {
            std::vector<pollfd> fds{{listener_, POLLIN, 0}};
            for (link& l : links_) {
                fds.push_back({l.open ? l.client : -1, POLLIN, 0});
                fds.push_back({l.open ? l.server : -1, POLLIN, 0});
            }
            int wait = 10;
            const auto now = steady::now();
            for (link& l : links_) {
                while (l.open && !l.pending.empty() && l.pending.front().due <= now) {
                    l.open = send_all(l.server, l.pending.front().bytes);
                    l.pending.pop_front();
                }
                if (l.open && !l.pending.empty()) {
                    const auto left =
                        std::chrono::duration_cast<milliseconds>(l.pending.front().due - now)
                            .count();
                    wait = std::min(wait, static_cast<int>(std::max<long long>(1, 1 + left)));
                }
            }
            if (::poll(fds.data(), fds.size(), wait) <= 0) {
                continue;
            }
            if ((fds[0].revents & POLLIN) != 0) {
                link l;
                l.client = ::accept(listener_, nullptr, nullptr);
                l.server = ::socket(AF_INET, SOCK_STREAM, 0);
                sockaddr_in a = loopback(server_port_);
                l.open = l.client >= 0 && l.server >= 0 &&
                         ::connect(l.server, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
                links_.push_back(std::move(l));
                continue; // fds no longer line up with links_
            }
            for (std::size_t i = 0; i < links_.size(); ++i) {
                link& l = links_[i];
                if ((fds[1 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                    const ssize_t n = ::recv(l.client, buf, sizeof buf, 0);
                    if (n <= 0) {
                        l.open = false;
                    } else {
                        l.pending.push_back({steady::now() + delay_,
                                             std::string(buf, static_cast<std::size_t>(n))});
                    }
                }
                if (l.open && (fds[2 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                    const ssize_t n = ::recv(l.server, buf, sizeof buf, 0);
                    l.open =
                        n > 0 && send_all(l.client, std::string(buf, static_cast<std::size_t>(n)));
                }
                if (!l.open) {
                    ::shutdown(l.client, SHUT_RDWR);
                    ::shutdown(l.server, SHUT_RDWR);
                }
            }
        }
    }

    int server_port_;
    milliseconds delay_;
    int listener_ = -1;
    int port_ = 0;
    std::vector<link> links_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

TEST_CASE("MariaDB: a zombie that wakes while a distant reaper runs is ended before its first "
          "statement or not at all" *
          skip_without(mysql)) {
    const std::string cs = need(mysql);
    {
        auto admin = admin_session(cs);
        *admin << "drop table if exists fleet_t";
        *admin << "create table fleet_t (id int primary key) engine = InnoDB";
    } // closed: idle that long, it would be a zombie too
    // The reaper's statements reach the server 400 ms after it sends them.
    constexpr milliseconds delay{400};
    delaying_relay relay(std::atoi(std::getenv("WARMPOOL_TEST_MYSQL_PORT")), delay);
    const std::string relayed = with_param(cs, "port", std::to_string(relay.port()));
    const warmpool::soci_config cfg(relayed);
    auto sampler = admin_session(relayed);
    auto victim = admin_session(cs);
    std::this_thread::sleep_for(milliseconds{1'500});

    bool began = false;
    bool committed = false;
    warmpool::fleet_reading r;
    std::atomic<bool> started{false};
    std::thread reaper([&] {
        started = true;
        r = sample(*sampler, cfg, reaping(5), milliseconds{10'000});
    });
    while (!started) {
        std::this_thread::yield();
    }
    // Between the reaper's statement reaching the server (after `delay`) and a KILL sent back
    // in answer to it (after 2 * `delay`).
    std::this_thread::sleep_for(delay + delay / 2);
    try {
        *victim << "start transaction";
        *victim << "insert into fleet_t values (1)";
        began = true;
    } catch (const std::exception&) {
        // ended before it began: nothing was written
    }
    reaper.join();
    if (began) {
        try {
            *victim << "commit";
            committed = true;
        } catch (const std::exception&) {
        }
    }
    INFO("the victim began a transaction: " << began << ", committed it: " << committed);
    REQUIRE(r.ok);
    CHECK(r.reap_error.empty());
    CHECK((!began || committed));
    auto admin = admin_session(cs);
    CHECK(mariadb_number(*admin, "select count(*) from fleet_t") == (committed ? 1 : 0));
    *admin << "drop table fleet_t";
}

// --- What a sample costs -------------------------------------------------------------------

/// Mean microseconds of `runs` calls of each function, interleaved so both see the same load.
template <class A, class B>
std::pair<double, double> side_by_side(int runs, A&& a, B&& b) {
    long long ta = 0;
    long long tb = 0;
    for (int i = 0; i < runs; ++i) {
        auto start = steady::now();
        a();
        ta += elapsed_us(start);
        start = steady::now();
        b();
        tb += elapsed_us(start);
    }
    return {static_cast<double>(ta) / runs, static_cast<double>(tb) / runs};
}

TEST_CASE("PostgreSQL: what a fleet sample costs with 40 connections open" * skip_without(pg)) {
    pg_fleet_role role(need(pg));
    const warmpool::soci_config cfg = role.config("fleet-cost");
    std::vector<session_ptr> crowd;
    for (int i = 0; i < 18; ++i) {
        crowd.push_back(role.open("fleet-cost"));
        crowd.push_back(admin_session(need(pg)));
    }
    auto sampler = role.open("fleet-cost");
    int failures = 0;
    const auto costs = side_by_side(
        500, [&] { failures += sample(*sampler, cfg, counts_only()).ok ? 0 : 1; },
        [&] {
            // Reaping asked for, nothing to reap: the CTE and the snapshot it shares.
            failures += sample(*sampler, cfg, reaping(2, milliseconds{600'000})).ok ? 0 : 1;
        });
    const auto ping = side_by_side(
        500, [&] { (void)warmpool::soci_traits::ping(*sampler, milliseconds{5'000}); }, [] {});
    CHECK(failures == 0);
    MESSAGE("PostgreSQL, " << pg_client_backends(*role.admin) << " client backends: fleet sample "
                           << costs.first << " us, with reaping " << costs.second
                           << " us, empty query " << ping.first << " us (mean of 500)");
}

TEST_CASE("MariaDB: what a fleet sample costs with 40 connections open, and Threads_connected "
          "against counting PROCESSLIST" *
          skip_without(mysql)) {
    const std::string cs = need(mysql);
    const warmpool::soci_config cfg(cs);
    std::vector<session_ptr> crowd;
    for (int i = 0; i < 38; ++i) {
        crowd.push_back(admin_session(cs));
    }
    auto s = admin_session(cs);
    const auto counts = side_by_side(
        1000,
        [&] {
            std::string v;
            *s << "select variable_value from information_schema.global_status where "
                  "variable_name = 'THREADS_CONNECTED'",
                soci::into(v);
        },
        [&] {
            long long n = 0;
            *s << "select count(*) from information_schema.processlist", soci::into(n);
        });
    const auto show = side_by_side(
        1000,
        [&] {
            std::string name;
            std::string v;
            *s << "show global status like 'Threads_connected'", soci::into(name), soci::into(v);
        },
        [&] {
            long long n = 0;
            *s << "select count(*) from information_schema.processlist where user = 'warmpool'",
                soci::into(n);
        });
    int failures = 0;
    const auto costs = side_by_side(
        500, [&] { failures += sample(*s, cfg, counts_only()).ok ? 0 : 1; },
        [&] {
            // Reaping asked for, nothing idle that long: the INNODB_TRX subquery runs too.
            failures += sample(*s, cfg, reaping(2, milliseconds{600'000})).ok ? 0 : 1;
        });
    const auto ping = side_by_side(
        500, [&] { (void)warmpool::soci_traits::ping(*s, milliseconds{5'000}); },
        [&] {
            int one = 0;
            *s << "select 1", soci::into(one);
        });
    CHECK(failures == 0);
    MESSAGE("MariaDB, " << mariadb_number(*s, "select count(*) from information_schema.processlist")
                        << " connections: GLOBAL_STATUS THREADS_CONNECTED " << counts.first
                        << " us, COUNT(*) FROM PROCESSLIST " << counts.second
                        << " us (mean of 1000, through SOCI; SELECT 1 through SOCI " << ping.second
                        << " us); SHOW GLOBAL STATUS LIKE " << show.first
                        << " us, PROCESSLIST of one user " << show.second << " us; fleet sample "
                        << costs.first << " us, with reaping " << costs.second << " us, DO 0 "
                        << ping.first << " us (mean of 500)");
}

} // namespace

#endif
