// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// fork() with a pool holding a live server connection: the child must open its own and never
// touch the parent's (using it would interleave two processes' traffic on one socket; closing
// it would end the parent's session). Checked from the server's side: the backend / connection
// ids the child and the parent see.

#include "support/real_server.hpp"
#include "support/server_kind.hpp"

#include <warmpool/soci.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <string>

namespace {

using std::chrono::milliseconds;
using namespace servers;

void parent_keeps_its_connection_across_a_child(const server_kind& server) {
    warmpool::options o = pool_of(1);
    o.validation_window = milliseconds{0}; // the parent pings after the fork: proves it answers
    warmpool::soci_pool pool(need(server.var), o);

    long long parent_id = 0;
    std::uint64_t parent_conn = 0;
    {
        auto sql = pool.acquire();
        parent_id = server.id_of(*sql);
        parent_conn = sql.connection_id();
    }
    REQUIRE(pool.stats().idle == 1);

    child kid([&](child&, std::ostream& report) {
        {
            auto sql = pool.acquire(); // the inherited pool: it must connect anew
            report << "id=" << server.id_of(*sql) << "\n";
        }
        const auto st = pool.stats();
        report << "forks=" << st.forks << "\ncreated=" << st.created << "\n";
        pool.close(); // closes the child's own connection only
        return 0;
    });
    REQUIRE(kid.started());
    auto r = kid.results();
    CHECK(kid.wait() == 0);
    CHECK(r["exception"] == "");
    REQUIRE(r["id"] != "");
    CHECK(std::stoll(r["id"]) != parent_id);
    CHECK(r["forks"] == "1");
    CHECK(r["created"] == "2"); // the parent's connection, plus the child's own

    {
        auto sql = pool.acquire();
        CHECK(sql.connection_id() == parent_conn);
        CHECK(server.id_of(*sql) == parent_id); // the same server session, still answering
    }
    const auto st = pool.stats();
    CHECK(st.created == 1);
    CHECK(st.validation_failures == 0);
    CHECK(st.forks == 0);
}

} // namespace

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
TEST_CASE("PostgreSQL: after fork() the child opens its own connection and the parent's keeps "
          "working" *
          skip_without(pg)) {
    parent_keeps_its_connection_across_a_child(postgresql);
}
#endif

#if WARMPOOL_SOCI_MYSQL_NATIVE
TEST_CASE("MySQL: after fork() the child opens its own connection and the parent's keeps "
          "working" *
          skip_without(mysql)) {
    parent_keeps_its_connection_across_a_child(mariadb);
}
#endif
