// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// What a real MariaDB server does to pooled connections, and what the caller sees: idle
// sessions timed out by wait_timeout, connections KILLed, the server restarted or stopped dead,
// a per-user connection limit reached, a transaction left open. The server is the one
// scripts/servers.sh started (WARMPOOL_TEST_MYSQL, WARMPOOL_TEST_MYSQL_CTL); every test leaves
// it running and as it found it. The scenarios PostgreSQL shares are written once, in
// support/fault_scenarios.hpp.

#include <warmpool/soci.hpp>

#if WARMPOOL_SOCI_MYSQL_NATIVE

#include "support/fault_scenarios.hpp"
#include "support/real_server.hpp"
#include "support/server_kind.hpp"

#include <warmpool/soci.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>

namespace {

using std::chrono::milliseconds;
using namespace servers;

/// mariadbd's process id, from the pid file the server names itself.
pid_t server_pid(soci::session& admin) {
    std::string file;
    admin << "select @@pid_file", soci::into(file);
    std::ifstream in(file);
    long long pid = 0;
    in >> pid;
    return static_cast<pid_t>(pid);
}

} // namespace

TEST_CASE("MySQL: a single-slot pool reconnects unseen after wait_timeout closed its connection" *
          skip_without(mysql)) {
    scenarios::reconnects_after_idle_timeout(mariadb);
}

TEST_CASE("MySQL: a process frozen with SIGSTOP while wait_timeout closed its connection serves "
          "again after SIGCONT" *
          skip_without(mysql)) {
    scenarios::frozen_process_serves_after_thaw(mariadb);
}

TEST_CASE("MySQL: connections KILLed while idle are replaced at the next acquire" *
          skip_without(mysql)) {
    scenarios::idle_connections_ended_are_replaced(mariadb);
}

TEST_CASE("MySQL: while the server is down acquire fails within its deadline, and once it is "
          "back no dead connection is handed out" *
          skip_without(mysql, mysql_ctl)) {
    scenarios::server_restart(mariadb);
}

// MariaDB serves every connection from threads of one process, so the only way to hang "the
// backend" is to stop the whole server. What that can show: the ping gives up after
// validation_timeout, and the caller gets an error within the acquire deadline plus one connect
// attempt (the kernel still accepts TCP connections for a stopped server, so each attempt waits
// for a handshake that never comes, bounded by connect_timeout) instead of hanging; and once
// the server runs again, the pool serves. A fresh connection cannot be had while it is stopped.
TEST_CASE("MySQL: with the whole server stopped, the ping gives up after validation_timeout and "
          "acquire returns in bounded time; after SIGCONT the pool serves again" *
          skip_without(mysql, sigstop)) {
    (void)need(sigstop);
    auto admin = admin_session(need(mysql));
    const pid_t server = server_pid(*admin);
    REQUIRE(server > 1);
    warmpool::options o = pool_of(1);
    o.validation_window = milliseconds{100};
    o.validation_timeout = milliseconds{1'000};
    o.acquire_timeout = milliseconds{3'000};
    warmpool::soci_pool pool(need(mysql), o);
    {
        auto sql = pool.acquire();
        (void)mysql_connection_id(*sql);
    }
    std::this_thread::sleep_for(milliseconds{150}); // past the validation window: a ping is due

    long long took = 0;
    std::string outcome;
    {
        stopped_process freeze(server);
        REQUIRE(freeze.stopped());
        // Should the pool hang after all, this resumes the server so the test fails instead
        // of hanging the suite.
        std::atomic<bool> done{false};
        std::thread watchdog([&] {
            eventually([&] { return done.load(); }, milliseconds{20'000});
            if (!done.load()) {
                ::kill(server, SIGCONT);
            }
        });
        const auto start = steady::now();
        try {
            auto sql = pool.acquire();
            outcome = "acquired";
        } catch (const warmpool::connect_error& e) {
            outcome = std::string("connect_error: ") + e.what();
        } catch (const warmpool::acquire_timeout& e) {
            outcome = std::string("acquire_timeout: ") + e.what();
        }
        took = elapsed_ms(start);
        done = true;
        watchdog.join();
    }
    MESSAGE("server stopped: " << outcome << " after " << took << " ms");
    CHECK(outcome.rfind("acquired", 0) != 0);
    // validation_timeout (1 s) + acquire_timeout (3 s) + one connect attempt in flight (its
    // connect_timeout is at least 2 s) + slack for a loaded machine.
    CHECK(took < 1'000 + 3'000 + 2'000 + 4'000);
    const auto st = pool.stats();
    CHECK(st.pings == 1);
    CHECK(st.validation_failures == 1);

    // Resumed, the server answers again and so does the pool.
    {
        auto sql = pool.acquire();
        int one = 0;
        *sql << "select 1", soci::into(one);
        CHECK(one == 1);
    }
}

TEST_CASE("MySQL: more clients than the user's max_user_connections all get through with "
          "backoff, and fail with the server's message without it" *
          skip_without(mysql)) {
    scenarios::connection_limit(mariadb);
}

TEST_CASE("MySQL: a transaction left open by an exception is rolled back before the next user "
          "gets the connection" *
          skip_without(mysql)) {
    scenarios::stale_transaction_rolled_back(mariadb);
}

#endif
