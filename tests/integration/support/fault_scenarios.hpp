// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The fault scenarios PostgreSQL and MariaDB share, each written once against a server_kind:
// idle sessions timed out, a process frozen meanwhile, sessions ended while idle, the server
// restarted, a connection limit reached, a transaction left open. test_pg_faults.cpp and
// test_mysql_faults.cpp call them from one TEST_CASE per server (so the names say which server
// failed), next to the scenarios only one server can show. Each asserts the pool's counts, not
// only that nothing crashed; every one leaves the server running and as it found it.

#include "real_server.hpp"
#include "server_kind.hpp"

#include <warmpool/soci.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace servers::scenarios {

/// A single-slot pool whose connection the server timed out reconnects without the caller
/// seeing it.
inline void reconnects_after_idle_timeout(const server_kind& server) {
    auto admin = admin_session(need(server.var));
    warmpool::soci_pool pool(server.with_idle_timeout(need(server.var)),
                             warmpool::options::single_slot());

    long long first = 0;
    {
        auto sql = pool.acquire();
        first = server.id_of(*sql);
    }
    // The server ends the session after 1 s of idleness; wait until it has.
    REQUIRE(server.gone(*admin, first));

    long long second = 0;
    {
        auto sql = pool.acquire(); // must not throw: the dead connection is replaced unseen
        second = server.id_of(*sql);
    }
    CHECK(second != first);
    const auto st = pool.stats();
    CHECK(st.validation_failures == 1);
    CHECK(st.closed_validation_failed == 1);
    CHECK(st.created == 2);
    CHECK(st.connect_failures == 0);
}

/// A process frozen with SIGSTOP while the server timed its connection out serves again after
/// SIGCONT.
inline void frozen_process_serves_after_thaw(const server_kind& server) {
    auto admin = admin_session(need(server.var));
    const warmpool::soci_config cfg = server.with_idle_timeout(need(server.var));

    // The child holds the pool, as a serverless function instance would; the parent freezes
    // it, lets the server time its connection out, and thaws it.
    child frozen([&](child& self, std::ostream& report) {
        warmpool::soci_pool pool(cfg, warmpool::options::single_slot());
        {
            auto sql = pool.acquire();
            self.tell_parent(std::to_string(server.id_of(*sql)));
        }
        if (!self.wait_for_parent()) {
            return 2;
        }
        auto sql = pool.acquire();
        report << "id=" << server.id_of(*sql) << "\n";
        const auto st = pool.stats();
        report << "created=" << st.created << "\nvalidation_failures=" << st.validation_failures
               << "\nconnect_failures=" << st.connect_failures << "\n";
        return 0;
    });
    REQUIRE(frozen.started());
    const long long first = std::stoll(frozen.read_line());
    {
        // Our own child: no privileges needed to stop it.
        stopped_process freeze(frozen.pid());
        REQUIRE(freeze.stopped());
        REQUIRE(server.gone(*admin, first));
        frozen.go(); // read once it runs again
    }
    auto r = frozen.results();
    CHECK(frozen.wait() == 0);
    CHECK(r["exception"] == "");
    CHECK(r["id"] != "");
    CHECK(r["id"] != std::to_string(first));
    CHECK(r["created"] == "2");
    CHECK(r["validation_failures"] == "1");
    CHECK(r["connect_failures"] == "0");
}

/// Three idle connections ended by the server are replaced at the next acquires, whether or
/// not the validation window lets the pool skip the ping.
inline void idle_connections_ended_are_replaced(const server_kind& server) {
    auto admin = admin_session(need(server.var));
    warmpool::options o = pool_of(3);
    bool socket_check_only = false;
    SUBCASE("after the validation window (socket check, ping if needed)") {}
    SUBCASE("within the validation window: no ping, the socket check alone must see it") {
        o.validation_window = std::chrono::milliseconds{60'000};
        socket_check_only = true;
    }
    warmpool::soci_pool pool(need(server.var), o);

    std::vector<long long> before;
    {
        std::vector<warmpool::soci_pool::lease> held;
        for (int i = 0; i < 3; ++i) {
            held.push_back(pool.acquire());
            before.push_back(server.id_of(*held.back()));
        }
    }
    for (const long long id : before) {
        server.terminate(*admin, id);
    }
    for (const long long id : before) {
        REQUIRE(server.gone(*admin, id));
    }
    // No grace period: PostgreSQL's pg_stat_activity forgets a backend after its FATAL message
    // was sent but before the exiting process closes its socket, and the check must see it dead
    // already.

    {
        std::vector<warmpool::soci_pool::lease> held;
        for (int i = 0; i < 3; ++i) {
            held.push_back(pool.acquire());
            const long long id = server.id_of(*held.back()); // throws if handed a dead one
            CHECK(std::find(before.begin(), before.end(), id) == before.end());
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

/// While the server is down acquire fails within its deadline, and once it is back no dead
/// connection is handed out.
inline void server_restart(const server_kind& server) {
    (void)need(server.ctl_var);
    warmpool::options o = pool_of(2);
    o.acquire_timeout = std::chrono::milliseconds{2'000};
    warmpool::soci_pool pool(need(server.var), o);
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        CHECK(server.id_of(*a) != server.id_of(*b));
    }
    REQUIRE(pool.stats().idle == 2);

    keep_running guard(server.ctl_var);
    REQUIRE(control(server.ctl_var, "stop") == 0);
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

    REQUIRE(control(server.ctl_var, "start") == 0);
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

/// The server's account limited to two connections (server_kind::create_limited_account),
/// dropped again at the end.
class limited_account {
public:
    limited_account(const server_kind& server, const std::string& cs)
        : server_(server), admin_(admin_session(cs)),
          cs_(server.create_limited_account(*admin_, cs)) {}
    ~limited_account() {
        try {
            server_.drop_limited_account(*admin_);
        } catch (...) {
        }
    }
    limited_account(const limited_account&) = delete;
    limited_account& operator=(const limited_account&) = delete;

    const std::string& connect_string() const { return cs_; }

private:
    const server_kind& server_;
    std::unique_ptr<soci::session> admin_;
    std::string cs_;
};

/// More clients than the account's connection limit all get through with backoff, and fail
/// with the server's message without it.
inline void connection_limit(const server_kind& server) {
    const limited_account account(server, need(server.var));
    const std::string& cs = account.connect_string();

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
        CHECK(without.errors[i].find(server.too_many_connections) != std::string::npos);
        CHECK(without.transient[i] == "1"); // worth retrying: the classification is right
    }
}

/// A transaction left open by an exception is rolled back before the next user gets the
/// connection.
inline void stale_transaction_rolled_back(const server_kind& server) {
    auto admin = admin_session(need(server.var));
    *admin << std::string("create table if not exists warmpool_stale_tx (id integer)") +
                  server.transactional_table;
    *admin << "delete from warmpool_stale_tx";
    warmpool::soci_pool pool(need(server.var), pool_of(1));

    long long id = 0;
    try {
        auto sql = pool.acquire();
        id = server.id_of(*sql);
        sql->begin();
        *sql << "insert into warmpool_stale_tx values (1)";
        throw std::runtime_error("the handler failed half-way");
    } catch (const std::runtime_error&) {
    }
    {
        auto sql = pool.acquire();
        CHECK(server.id_of(*sql) == id); // the same connection, reused
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

/// mariadbd's process id, from the pid file the server names itself.
inline pid_t mariadb_server_pid(soci::session& admin) {
    std::string file;
    admin << "select @@pid_file", soci::into(file);
    std::ifstream in(file);
    long long pid = 0;
    in >> pid;
    return static_cast<pid_t>(pid);
}

/// MariaDB serves every connection from one process, so hanging "the backend" means stopping
/// the whole server (SIGSTOP): a ping due gives up after validation_timeout, and the caller gets
/// an error within the acquire deadline plus one connect attempt (the kernel still accepts TCP
/// connections for a stopped server, so each attempt waits for a handshake that never comes,
/// bounded by connect_timeout) instead of hanging; once the server runs again, the pool serves.
/// `check_session` runs on the session that serves again (e.g. that it is still TLS).
template <class Check>
void mariadb_stopped_then_serves(const std::string& cs, const std::string& label,
                                 Check check_session) {
    auto admin = admin_session(cs);
    const pid_t server = mariadb_server_pid(*admin);
    REQUIRE(server > 1);
    warmpool::options o = pool_of(1);
    o.validation_window = milliseconds{100};
    o.validation_timeout = milliseconds{1'000};
    o.acquire_timeout = milliseconds{3'000};
    warmpool::soci_pool pool(cs, o);
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
    MESSAGE(label << ": server stopped: " << outcome << " after " << took << " ms");
    CHECK(outcome.rfind("acquired", 0) != 0);
    // validation_timeout (1 s) + acquire_timeout (3 s) + one connect attempt in flight (its
    // connect_timeout is at least 2 s) + slack for a loaded machine.
    CHECK(took < 1'000 + 3'000 + 2'000 + 4'000);
    const auto st = pool.stats();
    CHECK(st.pings == 1);
    CHECK(st.validation_failures == 1);

    // Resumed, the server answers again and so does the pool.
    auto sql = pool.acquire();
    int one = 0;
    *sql << "select 1", soci::into(one);
    CHECK(one == 1);
    check_session(*sql);
}

/// PostgreSQL: a backend stopped (SIGSTOP) while its connection sat idle past the validation
/// window is given up after validation_timeout and replaced in bounded time; once resumed, the
/// old backend reads the goodbye the pool left it and exits. `check_session` runs on the
/// replacement (e.g. that it is still TLS).
template <class Check>
void pg_hung_backend_replaced(const std::string& cs, const std::string& label,
                              Check check_session) {
    auto admin = admin_session(cs);
    warmpool::options o = pool_of(1);
    o.validation_window = milliseconds{100};
    o.validation_timeout = milliseconds{1'000};
    warmpool::soci_pool pool(cs, o);

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
        check_session(*sql);
    }
    MESSAGE(label << ": hung backend replaced after " << took << " ms");
    // The ping's 1 s plus a connect: seconds, never a TCP timeout.
    CHECK(took >= 900); // the ping waited out validation_timeout (poll rounds to ms)
    CHECK(took < 1'000 + 4'000);
    CHECK(fresh != hung);
    const auto st = pool.stats();
    CHECK(st.pings == 1);
    CHECK(st.validation_failures == 1);
    CHECK(st.created == 2);
    // Resumed, the old backend reads the goodbye the pool left it and exits.
    CHECK(pg_backend_gone(*admin, hung));
}

} // namespace servers::scenarios
