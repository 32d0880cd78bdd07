// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// Pooled connections over TLS, against the servers scripts/servers.sh starts with TLS
// (WARMPOOL_TEST_PG_TLS, WARMPOOL_TEST_MYSQL_TLS: accounts admitted over TLS only). Over TLS
// the bytes on an idle socket are encrypted records the pool cannot read without consuming
// them, so the socket check trusts only a hang-up; readable data makes the pool ping at once
// (docs/tls.md). These tests show that the sessions really are encrypted, that the fault
// scenarios of test_pg_faults.cpp and test_mysql_faults.cpp end the same way over TLS (a server
// that ended a session while idle, a process thawed after the server timed it out, a server
// stopped, killed, or hung), that a goodbye arriving ahead of its hang-up is never handed out,
// that a harmless notification costs one ping and not the connection, and that a healthy TLS
// connection reused over and over costs no ping at all.

#include <warmpool/soci.hpp>

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE || WARMPOOL_SOCI_MYSQL_NATIVE

#include "support/fault_scenarios.hpp"
#include "support/real_server.hpp"
#include "support/server_kind.hpp"
#include "support/tcp_relay.hpp"
#include "support/tls_servers.hpp"

#include <warmpool/soci.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>

namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using namespace servers;

/// The connect error's text for `cs`, "" when the connect succeeded.
std::string connect_failure(const std::string& cs) {
    try {
        (void)admin_session(cs);
    } catch (const std::exception& e) {
        return e.what();
    }
    return "";
}

/// Every pooled session over the TLS string is encrypted; the plain string's is not.
void sessions_are_encrypted(const server_kind& tls, const char* plain_var,
                            std::string (*session_tls)(soci::session&)) {
    warmpool::soci_pool pool(need(tls.var), pool_of(2));
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        const std::string first = session_tls(*a);
        MESSAGE("TLS session: " << first);
        CHECK(first != "");
        CHECK(session_tls(*b) != "");
    }
    auto plain = admin_session(need(plain_var));
    CHECK(session_tls(*plain) == "");
}

/// Idle connections the server ended are replaced at the next acquires, whether or not the
/// validation window lets the pool skip the ping. Unlike plain TCP (where PostgreSQL's FATAL
/// message can be read off the socket), a TLS socket that holds data but no hang-up yet is
/// settled by a ping: at most one per connection.
void idle_connections_ended_are_replaced(const server_kind& server) {
    auto admin = admin_session(need(server.var));
    warmpool::options o = pool_of(3);
    bool socket_check_only = false;
    SUBCASE("after the validation window (socket check, ping if needed)") {}
    SUBCASE("within the validation window: only the socket check's doubt may cost a ping") {
        o.validation_window = milliseconds{60'000};
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
    {
        std::vector<warmpool::soci_pool::lease> held;
        for (int i = 0; i < 3; ++i) {
            held.push_back(pool.acquire());
            const long long id = server.id_of(*held.back()); // throws if handed a dead one
            CHECK(std::find(before.begin(), before.end(), id) == before.end());
        }
    }
    const auto st = pool.stats();
    if (socket_check_only) {
        MESSAGE("within the validation window: " << st.pings
                                                 << " of 3 ended connections needed a ping");
    }
    CHECK(st.validation_failures == 3);
    CHECK(st.closed_validation_failed == 3);
    CHECK(st.created == 6);
    CHECK(st.pings <= 3);
}

/// The server killed (PostgreSQL: an immediate shutdown, MariaDB: SIGKILL) while both
/// connections sat idle, and started again: the next acquires get working connections, and
/// the caller never sees the dead ones.
void killed_and_started_while_idle(const server_kind& server) {
    (void)need(server.ctl_var);
    warmpool::soci_pool pool(need(server.var), pool_of(2));
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        CHECK(server.id_of(*a) != server.id_of(*b));
    }
    REQUIRE(pool.stats().idle == 2);
    {
        keep_running guard(server.ctl_var);
        REQUIRE(control(server.ctl_var, "kill") == 0);
        REQUIRE(control(server.ctl_var, "start") == 0);
    }
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        int one = 0;
        *a << "select 1", soci::into(one);
        CHECK(one == 1);
        one = 0;
        *b << "select 1", soci::into(one);
        CHECK(one == 1);
    }
    const auto st = pool.stats();
    CHECK(st.validation_failures == 2);
    CHECK(st.created == 4);
    CHECK(st.connect_failures == 0);
}

/// A healthy TLS connection checked out 100 times, sometimes after 100 ms idle, always within
/// the validation window: the socket check runs at every checkout (socket_check_after = 0) and
/// never finds anything to doubt, so no ping is ever sent and the same connection serves all.
void reuse_costs_no_ping(const server_kind& server) {
    warmpool::options o = pool_of(1);
    o.validation_window = milliseconds{5'000}; // far above the longest idle gap, even when slow
    o.socket_check_after = milliseconds{0};
    warmpool::soci_pool pool(need(server.var), o);
    long long first = 0;
    {
        auto sql = pool.acquire();
        first = server.id_of(*sql);
    }
    const auto start = steady::now();
    for (int i = 0; i < 100; ++i) {
        if (i % 10 == 0) {
            std::this_thread::sleep_for(milliseconds{100}); // time for anything late to arrive
        }
        auto sql = pool.acquire();
        int one = 0;
        *sql << "select 1", soci::into(one);
        CHECK(one == 1);
    }
    MESSAGE("100 checkouts with a query each: " << elapsed_ms(start) << " ms, 1 s of it idle");
    {
        auto sql = pool.acquire();
        CHECK(server.id_of(*sql) == first);
    }
    const auto st = pool.stats();
    CHECK(st.pings == 0);
    CHECK(st.created == 1);
    CHECK(st.validation_failures == 0);
    CHECK(st.acquired == 102);
}

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
/// The value of `key` in a keyword connect string ("… port=5432 …"), "" when absent.
std::string param_of(const std::string& cs, const std::string& key) {
    const std::size_t at = cs.find(" " + key + "=");
    if (at == std::string::npos) {
        return "";
    }
    const std::size_t from = at + key.size() + 2;
    return cs.substr(from, cs.find(' ', from) - from);
}

/// PostgreSQL ended an idle session and its goodbye reached the client, but not its hang-up (a
/// relay holds it back, as a lost segment across a network would). The next acquire must still
/// not hand that connection out. Over plain TCP the socket check reads the FATAL message off
/// the socket. Over TLS it cannot read the records without consuming them: with the goodbye's
/// close_notify alert held back too, libpq would take the FATAL message for a notice and find
/// the connection fine; so the check asks for a ping, and the ping fails.
void pg_goodbye_ahead_of_hangup(const char* var, tcp_relay::hold what, std::uint64_t pings) {
    const std::string cs = need(var);
    const std::string server_port = param_of(cs, "port");
    REQUIRE(server_port != "");
    tcp_relay relay(std::stoi(server_port));
    auto admin = admin_session(cs);
    warmpool::options o = pool_of(1);
    o.validation_window = milliseconds{60'000}; // no ping unless the socket check asks for one
    warmpool::soci_pool pool(with_param(cs, "port", std::to_string(relay.port())), o);
    long long first = 0;
    {
        auto sql = pool.acquire();
        first = pg_backend_pid(*sql);
    }
    relay.hold_from_now(what);
    pg_terminate(*admin, first);
    REQUIRE(pg_backend_gone(*admin, first));
    REQUIRE(eventually([&] { return relay.held() == 1; }, milliseconds{10'000}));

    long long second = 0;
    {
        auto sql = pool.acquire(); // must not throw, nor hand out the ended session
        second = pg_backend_pid(*sql);
    }
    CHECK(second != first);
    const auto st = pool.stats();
    CHECK(st.validation_failures == 1);
    CHECK(st.created == 2);
    CHECK(st.pings == pings);
}

#endif

struct latency {
    long long median_us = 0;
    long long p99_us = 0;
};

/// The bounded ping the pool sends when in doubt, `n` times in a row on one connection.
latency ping_latency(const std::string& cs, int n) {
    auto s = admin_session(cs);
    std::vector<long long> us;
    for (int i = 0; i < n; ++i) {
        const auto start = steady::now();
        const bool ok = warmpool::soci_traits::ping(*s, milliseconds{2'000});
        us.push_back(std::chrono::duration_cast<microseconds>(steady::now() - start).count());
        REQUIRE(ok);
    }
    std::sort(us.begin(), us.end());
    return {us[us.size() / 2], us[us.size() * 99 / 100]};
}

/// What a ping costs over TLS next to plain TCP, on loopback. Reported, not bounded: the
/// figure in docs/tls.md comes from here; the check is that every ping succeeds.
void ping_cost(const server_kind& tls, const char* plain_var) {
    const latency plain = ping_latency(need(plain_var), 500);
    const latency over_tls = ping_latency(need(tls.var), 500);
    MESSAGE("ping, plain TCP: median " << plain.median_us << " us, p99 " << plain.p99_us
                                       << " us; over TLS: median " << over_tls.median_us
                                       << " us, p99 " << over_tls.p99_us << " us");
}

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
/// Waits (bounded) until the idle session's socket holds data for libpq to read.
bool pg_socket_readable(soci::session& s, milliseconds timeout) {
    PGconn* const c = static_cast<soci::postgresql_session_backend*>(s.get_backend())->conn_;
    pollfd p{PQsocket(c), POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 && (p.revents & POLLIN) != 0;
}
#endif

#if WARMPOOL_SOCI_MYSQL_NATIVE
#endif

} // namespace

// --- PostgreSQL over TLS -----------------------------------------------------------------------

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE

TEST_CASE("PostgreSQL over TLS: pooled sessions are encrypted, and the TLS role is refused "
          "without TLS" *
          skip_without(pg_tls, pg)) {
    const server_kind tls = over_tls(postgresql, pg_tls);
    sessions_are_encrypted(tls, pg, pg_session_tls);
    const std::string refused = connect_failure(with_param(need(pg_tls), "sslmode", "disable"));
    INFO(refused);
    CHECK(refused.find("no encryption") != std::string::npos);
}

TEST_CASE("PostgreSQL over TLS: a single-slot pool reconnects unseen after "
          "idle_session_timeout closed its connection" *
          skip_without(pg_tls)) {
    scenarios::reconnects_after_idle_timeout(over_tls(postgresql, pg_tls));
}

TEST_CASE("PostgreSQL over TLS: a process frozen with SIGSTOP while the server timed out its "
          "connection serves again after SIGCONT" *
          skip_without(pg_tls)) {
    scenarios::frozen_process_serves_after_thaw(over_tls(postgresql, pg_tls));
}

TEST_CASE("PostgreSQL over TLS: connections terminated while idle are replaced at the next "
          "acquire" *
          skip_without(pg_tls)) {
    idle_connections_ended_are_replaced(over_tls(postgresql, pg_tls));
}

TEST_CASE("PostgreSQL: a FATAL message that arrived ahead of the hang-up is never handed out: "
          "read off the socket over plain TCP, settled by a ping over TLS" *
          skip_without(pg_tls, pg)) {
    using hold = tcp_relay::hold;
    SUBCASE("plain TCP, the hang-up held back") {
        pg_goodbye_ahead_of_hangup(pg, hold::hangup, 0);
    }
    SUBCASE("TLS, the hang-up held back") {
        pg_goodbye_ahead_of_hangup(pg_tls, hold::hangup, 1);
    }
    SUBCASE("TLS, the close_notify alert and the hang-up held back") {
        pg_goodbye_ahead_of_hangup(pg_tls, hold::after_first_tls_record, 1);
    }
}

TEST_CASE("PostgreSQL over TLS: while the server is down acquire fails within its deadline, "
          "and once it is back no dead connection is handed out" *
          skip_without(pg_tls, pg_ctl)) {
    scenarios::server_restart(over_tls(postgresql, pg_tls));
}

TEST_CASE("PostgreSQL over TLS: after an immediate shutdown and a start while idle, the next "
          "acquires get working connections" *
          skip_without(pg_tls, pg_ctl)) {
    killed_and_started_while_idle(over_tls(postgresql, pg_tls));
}

TEST_CASE("PostgreSQL over TLS: a hung backend is given up after validation_timeout and "
          "replaced in bounded time" *
          skip_without(pg_tls, sigstop)) {
    (void)need(sigstop);
    scenarios::pg_hung_backend_replaced(need(pg_tls), "TLS", [](soci::session& sql) {
        CHECK(pg_session_tls(sql) != ""); // the replacement is TLS too
    });
}

TEST_CASE("PostgreSQL over TLS: a healthy connection reused 100 times costs no ping" *
          skip_without(pg_tls)) {
    reuse_costs_no_ping(over_tls(postgresql, pg_tls));
}

// The one harmless thing PostgreSQL sends an idle session: a notification. Over plain TCP the
// check reads it and keeps the connection without a round trip; over TLS it cannot tell it from
// the FATAL message that precedes a close, so it pings once, and the ping settles it.
TEST_CASE("PostgreSQL: a notification that arrived while the connection was idle costs one "
          "ping over TLS and none over plain TCP; the connection is kept either way" *
          skip_without(pg_tls, pg)) {
    const char* var = pg;
    std::uint64_t pings = 0;
    SUBCASE("plain TCP") {}
    SUBCASE("TLS") {
        var = pg_tls;
        pings = 1;
    }
    auto admin = admin_session(need(pg));
    warmpool::options o = pool_of(1);
    o.validation_window = milliseconds{60'000}; // only the socket check's doubt can cost a ping
    warmpool::soci_pool pool(need(var), o);
    long long id = 0;
    soci::session* idle = nullptr;
    {
        auto sql = pool.acquire();
        *sql << "listen warmpool_tls_idle";
        id = pg_backend_pid(*sql);
        idle = &*sql;
    }
    *admin << "notify warmpool_tls_idle, 'while idle'";
    REQUIRE(pg_socket_readable(*idle, milliseconds{10'000}));
    {
        auto sql = pool.acquire();
        CHECK(pg_backend_pid(*sql) == id);
        *sql << "unlisten warmpool_tls_idle";
    }
    const auto st = pool.stats();
    CHECK(st.pings == pings);
    CHECK(st.validation_failures == 0);
    CHECK(st.created == 1);
}

TEST_CASE("PostgreSQL over TLS: what a ping costs next to plain TCP" * skip_without(pg_tls, pg)) {
    ping_cost(over_tls(postgresql, pg_tls), pg);
}

#endif // WARMPOOL_SOCI_POSTGRESQL_NATIVE

// --- MariaDB over TLS --------------------------------------------------------------------------

#if WARMPOOL_SOCI_MYSQL_NATIVE

TEST_CASE("MySQL over TLS: pooled sessions are encrypted, and the TLS user is refused without "
          "TLS" *
          skip_without(mysql_tls, mysql)) {
    const server_kind tls = over_tls(mariadb, mysql_tls);
    sessions_are_encrypted(tls, mysql, mysql_session_tls);
    const std::string refused = connect_failure(without_param(need(mysql_tls), "sslca"));
    INFO(refused);
    CHECK(refused.find("Access denied") != std::string::npos);
}

TEST_CASE("MySQL over TLS: a single-slot pool reconnects unseen after wait_timeout closed its "
          "connection" *
          skip_without(mysql_tls)) {
    scenarios::reconnects_after_idle_timeout(over_tls(mariadb, mysql_tls));
}

TEST_CASE("MySQL over TLS: a process frozen with SIGSTOP while wait_timeout closed its "
          "connection serves again after SIGCONT" *
          skip_without(mysql_tls)) {
    scenarios::frozen_process_serves_after_thaw(over_tls(mariadb, mysql_tls));
}

TEST_CASE("MySQL over TLS: connections KILLed while idle are replaced at the next acquire" *
          skip_without(mysql_tls)) {
    idle_connections_ended_are_replaced(over_tls(mariadb, mysql_tls));
}

TEST_CASE("MySQL over TLS: while the server is down acquire fails within its deadline, and "
          "once it is back no dead connection is handed out" *
          skip_without(mysql_tls, mysql_ctl)) {
    scenarios::server_restart(over_tls(mariadb, mysql_tls));
}

TEST_CASE("MySQL over TLS: after SIGKILL and a start while idle, the next acquires get working "
          "connections" *
          skip_without(mysql_tls, mysql_ctl)) {
    killed_and_started_while_idle(over_tls(mariadb, mysql_tls));
}

// As in test_mysql_faults.cpp: MariaDB serves every connection from one process, so hanging
// "the backend" means stopping the whole server.
TEST_CASE("MySQL over TLS: with the whole server stopped, the ping gives up after "
          "validation_timeout and acquire returns in bounded time; after SIGCONT the pool "
          "serves again" *
          skip_without(mysql_tls, sigstop)) {
    (void)need(sigstop);
    scenarios::mariadb_stopped_then_serves(need(mysql_tls), "TLS", [](soci::session& sql) {
        CHECK(mysql_session_tls(sql) != ""); // still over TLS
    });
}

TEST_CASE("MySQL over TLS: a healthy connection reused 100 times costs no ping" *
          skip_without(mysql_tls)) {
    reuse_costs_no_ping(over_tls(mariadb, mysql_tls));
}

TEST_CASE("MySQL over TLS: what a ping costs next to plain TCP" * skip_without(mysql_tls, mysql)) {
    ping_cost(over_tls(mariadb, mysql_tls), mysql);
}

#endif // WARMPOOL_SOCI_MYSQL_NATIVE

#endif
