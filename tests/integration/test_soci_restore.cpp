// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// Snapshot restore against real servers: abandon_connections() sends nothing on the sockets it
// forgets (a relay between pool and server counts the client's bytes), does not block on a hung
// server, leaks no descriptor, and the next acquire connects anew; close_idle() says goodbye.

#include <warmpool/soci.hpp>

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE && WARMPOOL_SOCI_MYSQL_NATIVE

#include "support/real_server.hpp"
#include "support/server_kind.hpp"
#include "support/tcp_relay.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <dirent.h>
#include <string>

namespace {

using std::chrono::milliseconds;
using namespace servers;

int port_of(const std::string& cs) {
    const auto at = cs.find("port=");
    REQUIRE(at != std::string::npos);
    return std::stoi(cs.substr(at + 5));
}

int open_descriptors() {
    int n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (::readdir(d) != nullptr) {
            ++n;
        }
        ::closedir(d);
    }
    return n;
}

void abandons_silently(const server_kind& kind) {
    const std::string cs = need(kind.var);
    tcp_relay relay(port_of(cs));
    const std::string via_relay = with_param(cs, "port", std::to_string(relay.port()));
    warmpool::soci_pool pool(via_relay, pool_of(2));
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        int one = 0;
        *a << "select 1", soci::into(one);
        *b << "select 1", soci::into(one);
    }
    REQUIRE(pool.stats().idle == 2);
    REQUIRE(relay.open_connections() == 2);
    const int descriptors = open_descriptors();
    const long long before = relay.client_bytes();

    pool.abandon_connections();

    // The relay sees both clients end (the kernel closed the sockets) with not one byte more:
    // no Terminate message, no COM_QUIT, no TLS alert.
    CHECK(eventually([&] { return relay.open_connections() == 0; }, milliseconds{5000}));
    CHECK(relay.client_bytes() == before);
    // The pool's two sockets are gone, and so are the relay's two per connection: no leak.
    CHECK(open_descriptors() == descriptors - 2 - 2 * 2);
    auto s = pool.stats();
    CHECK(s.closed_abandoned == 2);
    CHECK(s.open == 0);

    // And the pool carries on with new connections.
    auto l = pool.acquire();
    int one = 0;
    *l << "select 1", soci::into(one);
    CHECK(one == 1);
    CHECK(pool.stats().created == 3);
}

void drains_politely(const server_kind& kind) {
    const std::string cs = need(kind.var);
    tcp_relay relay(port_of(cs));
    warmpool::soci_pool pool(with_param(cs, "port", std::to_string(relay.port())), pool_of(1));
    { auto l = pool.acquire(); }
    const long long before = relay.client_bytes();
    pool.close_idle();
    CHECK(eventually([&] { return relay.open_connections() == 0; }, milliseconds{5000}));
    CHECK(relay.client_bytes() > before); // the backend's goodbye went out
    CHECK(pool.stats().closed_drained == 1);
}

void lease_across_restore(const server_kind& kind) {
    const std::string cs = need(kind.var);
    tcp_relay relay(port_of(cs));
    warmpool::soci_pool pool(with_param(cs, "port", std::to_string(relay.port())), pool_of(1));
    {
        auto l = pool.acquire();
        l->begin(); // a transaction open across the restore: no rollback may be sent
        int one = 0;
        *l << "select 1", soci::into(one);
        const long long before = relay.client_bytes();
        pool.after_restore();
        l.release();
        CHECK(eventually([&] { return relay.open_connections() == 0; }, milliseconds{5000}));
        CHECK(relay.client_bytes() == before);
    }
    auto s = pool.stats();
    CHECK(s.rollbacks == 0);
    CHECK(s.closed_abandoned == 1);
    auto l = pool.acquire();
    int one = 0;
    *l << "select 1", soci::into(one);
    CHECK(one == 1);
}

} // namespace

TEST_CASE("PostgreSQL: abandon_connections() forgets sessions without a byte on their sockets" *
          skip_without(pg)) {
    abandons_silently(postgresql);
}

TEST_CASE("MariaDB: abandon_connections() forgets sessions without a byte on their sockets" *
          skip_without(mysql)) {
    abandons_silently(mariadb);
}

TEST_CASE("PostgreSQL: close_idle() ends idle sessions with the protocol's goodbye" *
          skip_without(pg)) {
    drains_politely(postgresql);
}

TEST_CASE("MariaDB: close_idle() ends idle sessions with the protocol's goodbye" *
          skip_without(mysql)) {
    drains_politely(mariadb);
}

TEST_CASE("PostgreSQL: a lease held across after_restore() is forgotten at give-back, with no "
          "rollback sent" *
          skip_without(pg)) {
    lease_across_restore(postgresql);
}

TEST_CASE("MariaDB: a lease held across after_restore() is forgotten at give-back, with no "
          "rollback sent" *
          skip_without(mysql)) {
    lease_across_restore(mariadb);
}

#endif
