// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// What a real PostgreSQL server does to pooled connections, and what the caller sees: idle
// sessions timed out, backends terminated, the server restarted or hung, backends killed under
// load, a connection limit reached, a transaction left open. Each test asserts the pool's
// counts, not only that nothing crashed. The server is the one scripts/servers.sh started
// (WARMPOOL_TEST_PG, WARMPOOL_TEST_PG_CTL); every test leaves it running and as it found it.
// The scenarios MariaDB shares are written once, in support/fault_scenarios.hpp.

#include <warmpool/soci.hpp>

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE

#include "support/fault_scenarios.hpp"
#include "support/real_server.hpp"
#include "support/server_kind.hpp"

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

} // namespace

TEST_CASE("PostgreSQL: a single-slot pool reconnects unseen after idle_session_timeout closed "
          "its connection" *
          skip_without(pg)) {
    scenarios::reconnects_after_idle_timeout(postgresql);
}

TEST_CASE("PostgreSQL: a process frozen with SIGSTOP while the server timed out its connection "
          "serves again after SIGCONT" *
          skip_without(pg)) {
    scenarios::frozen_process_serves_after_thaw(postgresql);
}

TEST_CASE("PostgreSQL: connections terminated while idle are replaced at the next acquire" *
          skip_without(pg)) {
    scenarios::idle_connections_ended_are_replaced(postgresql);
}

TEST_CASE("PostgreSQL: while the server is down acquire fails within its deadline, and once it "
          "is back no dead connection is handed out" *
          skip_without(pg, pg_ctl)) {
    scenarios::server_restart(postgresql);
}

TEST_CASE("PostgreSQL: a hung backend is given up after validation_timeout and replaced in "
          "bounded time" *
          skip_without(pg, sigstop)) {
    (void)need(sigstop);
    scenarios::pg_hung_backend_replaced(need(pg), "plain", [](soci::session&) {});
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

TEST_CASE("PostgreSQL: more clients than the role's connection limit all get through with "
          "backoff, and fail with the server's message without it" *
          skip_without(pg)) {
    scenarios::connection_limit(postgresql);
}

TEST_CASE("PostgreSQL: a transaction left open by an exception is rolled back before the next "
          "user gets the connection" *
          skip_without(pg)) {
    scenarios::stale_transaction_rolled_back(postgresql);
}

#endif
