// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// What a real MariaDB server does to pooled connections, and what the caller sees: idle
// sessions timed out by wait_timeout, connections KILLed, the server restarted or stopped dead,
// a per-user connection limit reached, a transaction left open. The server is the one
// scripts/servers.sh started (WARMPOOL_TEST_MYSQL, WARMPOOL_TEST_MYSQL_CTL); every test leaves
// it running and as it found it.

#if defined(WARMPOOL_SOCI_MYSQL)

#include "support/real_server.hpp"

#include <warmpool/soci.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
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

/// The connect string with a one-second wait_timeout on every new session.
warmpool::soci_config with_short_wait_timeout(const std::string& cs) {
    warmpool::soci_config cfg(cs);
    cfg.on_connect = [](soci::session& s) {
        s << "set session wait_timeout = 1";
    };
    return cfg;
}

void kill_connection(soci::session& admin, long long id) {
    admin << "kill " + std::to_string(id);
}

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
    auto admin = admin_session(need(mysql));
    warmpool::soci_pool pool(with_short_wait_timeout(need(mysql)),
                             warmpool::options::single_slot());

    long long first = 0;
    {
        auto sql = pool.acquire();
        first = mysql_connection_id(*sql);
    }
    REQUIRE(mysql_connection_gone(*admin, first));

    long long second = 0;
    {
        auto sql = pool.acquire(); // must not throw: the dead connection is replaced unseen
        second = mysql_connection_id(*sql);
    }
    CHECK(second != first);
    const auto st = pool.stats();
    CHECK(st.validation_failures == 1);
    CHECK(st.closed_validation_failed == 1);
    CHECK(st.created == 2);
    CHECK(st.connect_failures == 0);
}

TEST_CASE("MySQL: a process frozen with SIGSTOP while wait_timeout closed its connection serves "
          "again after SIGCONT" *
          skip_without(mysql)) {
    auto admin = admin_session(need(mysql));
    const warmpool::soci_config cfg = with_short_wait_timeout(need(mysql));

    child frozen([&](child& self, std::ostream& report) {
        warmpool::soci_pool pool(cfg, warmpool::options::single_slot());
        {
            auto sql = pool.acquire();
            self.tell_parent(std::to_string(mysql_connection_id(*sql)));
        }
        if (!self.wait_for_parent()) {
            return 2;
        }
        auto sql = pool.acquire();
        report << "id=" << mysql_connection_id(*sql) << "\n";
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
        REQUIRE(mysql_connection_gone(*admin, first));
        frozen.go();
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

TEST_CASE("MySQL: connections KILLed while idle are replaced at the next acquire" *
          skip_without(mysql)) {
    auto admin = admin_session(need(mysql));
    warmpool::options o = pool_of(3);
    bool socket_check_only = false;
    SUBCASE("after the validation window (socket check, ping if needed)") {}
    SUBCASE("within the validation window: no ping, the socket check alone must see it") {
        o.validation_window = milliseconds{60'000};
        socket_check_only = true;
    }
    warmpool::soci_pool pool(need(mysql), o);

    std::vector<long long> before;
    {
        std::vector<warmpool::soci_pool::lease> held;
        for (int i = 0; i < 3; ++i) {
            held.push_back(pool.acquire());
            before.push_back(mysql_connection_id(*held.back()));
        }
    }
    for (const long long id : before) {
        kill_connection(*admin, id);
    }
    for (const long long id : before) {
        REQUIRE(mysql_connection_gone(*admin, id));
    }

    {
        std::vector<warmpool::soci_pool::lease> held;
        for (int i = 0; i < 3; ++i) {
            held.push_back(pool.acquire());
            const long long id = mysql_connection_id(*held.back()); // throws if handed a dead one
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

TEST_CASE("MySQL: while the server is down acquire fails within its deadline, and once it is "
          "back no dead connection is handed out" *
          skip_without(mysql, mysql_ctl)) {
    (void)need(mysql_ctl);
    warmpool::options o = pool_of(2);
    o.acquire_timeout = milliseconds{2'000};
    warmpool::soci_pool pool(need(mysql), o);
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        CHECK(mysql_connection_id(*a) != mysql_connection_id(*b));
    }
    REQUIRE(pool.stats().idle == 2);

    keep_running guard(mysql_ctl);
    REQUIRE(control(mysql_ctl, "stop") == 0);
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
        CHECK(elapsed_ms(start) < 10'000);
    }
    CHECK(failures == 3);
    const auto down = pool.stats();
    CHECK(down.validation_failures == 2);
    CHECK(down.open == 0);

    REQUIRE(control(mysql_ctl, "start") == 0);
    {
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

namespace {

/// A user limited to two connections, dropped again at the end. It gets no privilege on the
/// test database (granting one needs GRANT OPTION, which the test account lacks), so it
/// connects without a default database.
class limited_user {
public:
    explicit limited_user(const std::string& cs) : admin_(admin_session(cs)) {
        *admin_ << "drop user if exists 'warmpool_limited'@'127.0.0.1'";
        *admin_ << "create user 'warmpool_limited'@'127.0.0.1' identified by 'limited-pw-7' with "
                   "max_user_connections 2";
    }
    ~limited_user() {
        try {
            *admin_ << "drop user if exists 'warmpool_limited'@'127.0.0.1'";
        } catch (...) {
        }
    }
    limited_user(const limited_user&) = delete;
    limited_user& operator=(const limited_user&) = delete;

    static std::string connect_string(const std::string& cs) {
        return with_param(with_param(without_param(cs, "db"), "user", "warmpool_limited"),
                          "password", "limited-pw-7");
    }

private:
    std::unique_ptr<soci::session> admin_;
};

} // namespace

TEST_CASE("MySQL: more clients than the user's max_user_connections all get through with "
          "backoff, and fail with the server's message without it" *
          skip_without(mysql)) {
    limited_user user(need(mysql));
    const std::string cs = limited_user::connect_string(need(mysql));

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
        CHECK(without.errors[i].find("max_user_connections") != std::string::npos);
        CHECK(without.transient[i] == "1");
    }
}

TEST_CASE("MySQL: a transaction left open by an exception is rolled back before the next user "
          "gets the connection" *
          skip_without(mysql)) {
    auto admin = admin_session(need(mysql));
    *admin << "create table if not exists warmpool_stale_tx (id integer) engine = InnoDB";
    *admin << "delete from warmpool_stale_tx";
    warmpool::soci_pool pool(need(mysql), pool_of(1));

    long long id = 0;
    try {
        auto sql = pool.acquire();
        id = mysql_connection_id(*sql);
        sql->begin();
        *sql << "insert into warmpool_stale_tx values (1)";
        throw std::runtime_error("the handler failed half-way");
    } catch (const std::runtime_error&) {
    }
    {
        auto sql = pool.acquire();
        CHECK(mysql_connection_id(*sql) == id); // the same connection, reused
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
