// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// What a real PostgreSQL server does to pooled connections, and what the caller sees: idle
// sessions timed out, backends terminated, the server restarted or hung, backends killed under
// load, a connection limit reached, a transaction left open. Each test asserts the pool's
// counts, not only that nothing crashed. The server is the one scripts/servers.sh started
// (WARMPOOL_TEST_PG, WARMPOOL_TEST_PG_CTL); every test leaves it running and as it found it.

#if defined(WARMPOOL_SOCI_POSTGRESQL)

#include "support/real_server.hpp"

#include <warmpool/soci.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using std::chrono::milliseconds;
using namespace servers;

warmpool::options pool_of(std::size_t max_size) {
    warmpool::options o;
    o.max_size = max_size;
    o.acquire_timeout = milliseconds{10'000};
    return o;
}

} // namespace

TEST_CASE("PostgreSQL: a single-slot pool reconnects unseen after idle_session_timeout closed "
          "its connection" *
          skip_without(pg)) {
    const std::string cs = with_param(need(pg), "options", "'-c idle_session_timeout=1000'");
    auto admin = admin_session(need(pg));
    warmpool::soci_pool pool(cs, warmpool::options::single_slot());

    long long first = 0;
    {
        auto sql = pool.acquire();
        first = pg_backend_pid(*sql);
    }
    // The server ends the session after 1 s of idleness; wait until it has.
    REQUIRE(pg_backend_gone(*admin, first));

    long long second = 0;
    {
        auto sql = pool.acquire(); // must not throw: the dead connection is replaced unseen
        second = pg_backend_pid(*sql);
    }
    CHECK(second != first);
    const auto st = pool.stats();
    CHECK(st.validation_failures == 1);
    CHECK(st.closed_validation_failed == 1);
    CHECK(st.created == 2);
    CHECK(st.connect_failures == 0);
}

TEST_CASE("PostgreSQL: a process frozen with SIGSTOP while the server timed out its connection "
          "serves again after SIGCONT" *
          skip_without(pg)) {
    const std::string cs = with_param(need(pg), "options", "'-c idle_session_timeout=1000'");
    auto admin = admin_session(need(pg));

    // The child holds the pool, as a serverless function instance would; the parent freezes
    // it, lets the server time its connection out, and thaws it.
    child frozen([&](child& self, std::ostream& report) {
        warmpool::soci_pool pool(cs, warmpool::options::single_slot());
        {
            auto sql = pool.acquire();
            self.tell_parent(std::to_string(pg_backend_pid(*sql)));
        }
        if (!self.wait_for_parent()) {
            return 2;
        }
        auto sql = pool.acquire();
        report << "pid=" << pg_backend_pid(*sql) << "\n";
        const auto st = pool.stats();
        report << "created=" << st.created << "\nvalidation_failures=" << st.validation_failures
               << "\nconnect_failures=" << st.connect_failures << "\n";
        return 0;
    });
    REQUIRE(frozen.started());
    const long long first = std::stoll(frozen.read_line());
    {
        stopped_process freeze(frozen.pid());
        REQUIRE(freeze.stopped());
        REQUIRE(pg_backend_gone(*admin, first));
        frozen.go(); // read once it runs again
    }
    auto r = frozen.results();
    CHECK(frozen.wait() == 0);
    CHECK(r["exception"] == "");
    CHECK(r["pid"] != "");
    CHECK(r["pid"] != std::to_string(first));
    CHECK(r["created"] == "2");
    CHECK(r["validation_failures"] == "1");
    CHECK(r["connect_failures"] == "0");
}

TEST_CASE("PostgreSQL: connections terminated while idle are replaced at the next acquire" *
          skip_without(pg)) {
    auto admin = admin_session(need(pg));
    warmpool::options o = pool_of(3);
    bool socket_check_only = false;
    SUBCASE("after the validation window (socket check, ping if needed)") {}
    SUBCASE("within the validation window: no ping, the socket check alone must see it") {
        o.validation_window = milliseconds{60'000};
        socket_check_only = true;
    }
    warmpool::soci_pool pool(need(pg), o);

    std::vector<long long> before;
    {
        std::vector<warmpool::soci_pool::lease> held;
        for (int i = 0; i < 3; ++i) {
            held.push_back(pool.acquire());
            before.push_back(pg_backend_pid(*held.back()));
        }
    }
    for (const long long pid : before) {
        pg_terminate(*admin, pid);
    }
    for (const long long pid : before) {
        REQUIRE(pg_backend_gone(*admin, pid));
    }
    // No grace period: pg_stat_activity forgets a backend after its FATAL message was sent but
    // before the exiting process closes its socket, and the check must see it dead already.

    {
        std::vector<warmpool::soci_pool::lease> held;
        for (int i = 0; i < 3; ++i) {
            held.push_back(pool.acquire());
            const long long pid = pg_backend_pid(*held.back()); // throws if handed a dead one
            CHECK(std::find(before.begin(), before.end(), pid) == before.end());
        }
    }
    const auto st = pool.stats();
    CHECK(st.validation_failures == 3);
    CHECK(st.closed_validation_failed == 3);
    CHECK(st.created == 6);
    if (socket_check_only) {
        CHECK(st.pings == 0);
    }
}

TEST_CASE("PostgreSQL: while the server is down acquire fails within its deadline, and once it "
          "is back no dead connection is handed out" *
          skip_without(pg, pg_ctl)) {
    (void)need(pg_ctl);
    warmpool::options o = pool_of(2);
    o.acquire_timeout = milliseconds{2'000};
    warmpool::soci_pool pool(need(pg), o);
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        CHECK(pg_backend_pid(*a) != pg_backend_pid(*b));
    }
    REQUIRE(pool.stats().idle == 2);

    keep_running guard(pg_ctl);
    REQUIRE(control(pg_ctl, "stop") == 0);
    int failures = 0;
    for (int i = 0; i < 3; ++i) {
        const auto start = steady::now();
        try {
            auto sql = pool.acquire();
            FAIL_CHECK("acquire succeeded while the server was down");
        } catch (const warmpool::connect_error& e) {
            ++failures;
            CHECK(e.transient());
            MESSAGE("server down: connect_error after " << elapsed_ms(start) << " ms");
        } catch (const warmpool::acquire_timeout& e) {
            ++failures;
            MESSAGE("server down: acquire_timeout after " << elapsed_ms(start) << " ms");
        }
        // Bounded: the 2 s deadline plus one connect attempt in flight, far below TCP timeouts.
        CHECK(elapsed_ms(start) < 10'000);
    }
    CHECK(failures == 3);
    const auto down = pool.stats();
    CHECK(down.validation_failures == 2); // both idle connections were seen dead
    CHECK(down.open == 0);

    REQUIRE(control(pg_ctl, "start") == 0);
    {
        // Every connection handed out answers on the first try.
        auto a = pool.acquire();
        auto b = pool.acquire();
        int one = 0;
        *a << "select 1", soci::into(one);
        CHECK(one == 1);
        *b << "select 1", soci::into(one);
        CHECK(one == 1);
    }
    const auto st = pool.stats();
    CHECK(st.created == 4);
    CHECK(st.validation_failures == 2);
    CHECK(st.connect_failures >= 3);
}

TEST_CASE("PostgreSQL: a hung backend is given up after validation_timeout and replaced in "
          "bounded time" *
          skip_without(pg, sigstop)) {
    (void)need(sigstop);
    auto admin = admin_session(need(pg));
    warmpool::options o = pool_of(1);
    o.validation_window = milliseconds{100};
    o.validation_timeout = milliseconds{1'000};
    warmpool::soci_pool pool(need(pg), o);

    long long hung = 0;
    {
        auto sql = pool.acquire();
        hung = pg_backend_pid(*sql);
    }
    std::this_thread::sleep_for(milliseconds{150}); // past the validation window: a ping is due

    long long fresh = 0;
    long long took = 0;
    {
        stopped_process freeze(static_cast<pid_t>(hung));
        REQUIRE(freeze.stopped());
        const auto start = steady::now();
        auto sql = pool.acquire();
        fresh = pg_backend_pid(*sql);
        took = elapsed_ms(start);
    }
    MESSAGE("hung backend replaced after " << took << " ms");
    // The ping's 1 s plus a connect: seconds, never a TCP timeout.
    CHECK(took < 1'000 + 4'000);
    CHECK(fresh != hung);
    const auto st = pool.stats();
    CHECK(st.pings == 1);
    CHECK(st.validation_failures == 1);
    CHECK(st.created == 2);
    // Resumed, the old backend reads the goodbye the pool left it and exits.
    CHECK(pg_backend_gone(*admin, hung));
}

TEST_CASE("PostgreSQL: under load with backends terminated every 50 ms, acquire never fails and "
          "a connection that failed is never handed out again" *
          skip_without(pg)) {
    const std::string app = "warmpool_chaos";
    warmpool::options o = pool_of(4);
    warmpool::soci_pool pool(with_param(need(pg), "application_name", app), o);

    std::atomic<bool> stop{false};
    std::atomic<long> queries{0}, query_failures{0}, acquire_failures{0}, reused_failed{0};
    std::mutex m;
    std::set<std::uint64_t> failed; // pool connection ids whose query failed
    std::string acquire_error;

    auto work = [&](int n) {
        while (!stop.load()) {
            try {
                auto sql = pool.acquire();
                const std::uint64_t id = sql.connection_id();
                {
                    std::lock_guard<std::mutex> lock(m);
                    if (failed.count(id) != 0) {
                        ++reused_failed;
                    }
                }
                try {
                    int one = 0;
                    *sql << "select 1 from pg_sleep(0.002)", soci::into(one);
                    ++queries;
                } catch (const soci::soci_error&) {
                    // Its backend died mid-query: the caller sees the error, and the
                    // connection must never come back.
                    ++query_failures;
                    {
                        std::lock_guard<std::mutex> lock(m);
                        failed.insert(id);
                    }
                    // Half the workers say so; for the others the pool must notice by itself
                    // on give-back (or at the next checkout).
                    if (n % 2 == 0) {
                        sql.invalidate();
                    }
                }
            } catch (const std::exception& e) {
                ++acquire_failures;
                std::lock_guard<std::mutex> lock(m);
                acquire_error = e.what();
            }
        }
    };

    long kills = 0;
    std::size_t max_live = 0;
    std::size_t max_listed = 0;
    std::string chaos_error;
    auto chaos = [&] {
        try {
            auto admin = admin_session(need(pg));
            std::set<long long> terminated;
            std::mt19937 rng(12345);
            const auto until = steady::now() + milliseconds{3'000};
            while (steady::now() < until) {
                std::vector<long long> pids(64);
                *admin << "select pid from pg_stat_activity where application_name = :app",
                    soci::use(app), soci::into(pids);
                // Backends told to terminate may linger a moment in pg_stat_activity after
                // the pool saw them die and opened a replacement: count the others.
                std::size_t live = 0;
                for (const long long p : pids) {
                    live += terminated.count(p) == 0 ? 1 : 0;
                }
                max_live = std::max(max_live, live);
                max_listed = std::max(max_listed, pids.size());
                if (!pids.empty()) {
                    const long long victim =
                        pids[std::uniform_int_distribution<std::size_t>(0, pids.size() - 1)(rng)];
                    if (terminated.insert(victim).second) {
                        pg_terminate(*admin, victim);
                        ++kills;
                    }
                }
                std::this_thread::sleep_for(milliseconds{50});
            }
        } catch (const std::exception& e) {
            chaos_error = e.what();
        }
        stop = true;
    };

    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i) {
        threads.emplace_back(work, i);
    }
    std::thread killer(chaos);
    killer.join();
    for (auto& t : threads) {
        t.join();
    }

    const auto st = pool.stats();
    MESSAGE("chaos: " << kills << " backends terminated, " << queries.load() << " queries, "
                      << query_failures.load() << " failed in flight, " << st.validation_failures
                      << " found dead at checkout, " << st.closed_broken << " closed as broken, "
                      << st.closed_invalidated << " invalidated, " << st.created
                      << " connections opened; at most " << max_live << " live (" << max_listed
                      << " listed)");
    CHECK(chaos_error == "");
    CHECK(acquire_failures == 0);
    CHECK(acquire_error == "");
    CHECK(reused_failed == 0);
    CHECK(kills >= 20);
    CHECK(queries > 0);
    CHECK(max_live <= 4);
    CHECK(st.open <= 4);
    // Every terminated backend cost at most one connection; none was opened beyond that.
    CHECK(st.created <= static_cast<std::uint64_t>(kills) + 4);
}

namespace {

/// A role limited to two connections, dropped again at the end.
class limited_role {
public:
    explicit limited_role(const std::string& cs) : admin_(admin_session(cs)) {
        *admin_ << std::string("drop role if exists ") + name;
        *admin_ << std::string("create role ") + name + " login connection limit 2";
    }
    ~limited_role() {
        try {
            *admin_ << std::string("drop role if exists ") + name;
        } catch (...) {
        }
    }
    limited_role(const limited_role&) = delete;
    limited_role& operator=(const limited_role&) = delete;

    static constexpr const char* name = "warmpool_limited";

private:
    std::unique_ptr<soci::session> admin_;
};

} // namespace

TEST_CASE("PostgreSQL: more clients than the role's connection limit all get through with "
          "backoff, and fail with the server's message without it" *
          skip_without(pg)) {
    limited_role role(need(pg));
    const std::string cs = with_param(need(pg), "user", limited_role::name);

    const crowd_outcome with_backoff = crowd(cs, 6, true);
    CHECK(with_backoff.succeeded == 6);
    for (const auto& e : with_backoff.errors) {
        MESSAGE("with backoff: " << e);
    }

    const crowd_outcome without = crowd(cs, 6, false);
    MESSAGE("without backoff: " << without.succeeded << " of 6 succeeded");
    CHECK(without.succeeded >= 1);
    CHECK(without.errors.size() >= 1);
    for (std::size_t i = 0; i < without.errors.size(); ++i) {
        INFO(without.errors[i]);
        CHECK(without.errors[i].find("too many connections for role") != std::string::npos);
        CHECK(without.transient[i] == "1"); // worth retrying: the classification is right
    }
}

TEST_CASE("PostgreSQL: a transaction left open by an exception is rolled back before the next "
          "user gets the connection" *
          skip_without(pg)) {
    auto admin = admin_session(need(pg));
    *admin << "create table if not exists warmpool_stale_tx (id integer)";
    *admin << "delete from warmpool_stale_tx";
    warmpool::soci_pool pool(need(pg), pool_of(1));

    long long pid = 0;
    try {
        auto sql = pool.acquire();
        pid = pg_backend_pid(*sql);
        sql->begin();
        *sql << "insert into warmpool_stale_tx values (1)";
        throw std::runtime_error("the handler failed half-way");
    } catch (const std::runtime_error&) {
    }
    {
        auto sql = pool.acquire();
        CHECK(pg_backend_pid(*sql) == pid); // the same connection, reused
        CHECK_FALSE(warmpool::soci_traits::in_transaction(*sql));
        long long rows = -1;
        *sql << "select count(*) from warmpool_stale_tx", soci::into(rows);
        CHECK(rows == 0);
    }
    long long rows = -1;
    *admin << "select count(*) from warmpool_stale_tx", soci::into(rows);
    CHECK(rows == 0);
    const auto st = pool.stats();
    CHECK(st.rollbacks == 1);
    CHECK(st.created == 1);
    CHECK(st.closed == 0);
    *admin << "drop table warmpool_stale_tx";
}

#endif
