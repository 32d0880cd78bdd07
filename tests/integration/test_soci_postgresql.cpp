// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// soci_traits' native PostgreSQL checks against a live server named by WARMPOOL_TEST_PG (a SOCI
// connect string, e.g. "postgresql://host=127.0.0.1 dbname=postgres user=postgres"; scripts/
// servers.sh sets it). Skipped when it is unset, failed instead under CI=true (see
// support/servers.hpp). The stopped-server test needs the server on this machine and the right
// to signal its processes (WARMPOOL_TEST_SIGSTOP).

#include <warmpool/soci.hpp>

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE

#include <warmpool/soci.hpp>

#include "support/servers.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include <signal.h>
#include <sys/types.h>

namespace {

using std::chrono::milliseconds;
using traits = warmpool::soci_traits;

std::string server() {
    return servers::need(servers::pg);
}

long long backend_pid(soci::session& s) {
    long long pid = 0;
    s << "select pg_backend_pid()", soci::into(pid);
    return pid;
}

} // namespace

TEST_CASE("PostgreSQL: the local checks follow the session's state" *
          servers::skip_without(servers::pg)) {
    auto s = traits::connect(server(), milliseconds{5000});
    CHECK_FALSE(traits::is_broken(*s));
    CHECK(traits::peer_closed(*s) == warmpool::peer_state::open);
    CHECK_FALSE(traits::in_transaction(*s));
    CHECK(traits::ping(*s, milliseconds{2000}));
    *s << "begin";
    CHECK(traits::in_transaction(*s));
    CHECK(traits::rollback(*s, milliseconds{2000}));
    CHECK_FALSE(traits::in_transaction(*s));
    // A NOTIFY waiting on the socket is not a closed connection.
    *s << "listen warmpool_test";
    {
        soci::session other(server());
        other << "notify warmpool_test";
    }
    CHECK(traits::ping(*s, milliseconds{2000})); // the notification has surely arrived now
    CHECK(traits::peer_closed(*s) == warmpool::peer_state::open);
    CHECK_FALSE(traits::is_broken(*s));
}

TEST_CASE("PostgreSQL: a session killed by the server is seen as closed" *
          servers::skip_without(servers::pg)) {
    auto s = traits::connect(server(), milliseconds{5000});
    const long long pid = backend_pid(*s);
    {
        soci::session admin(server());
        admin << "select pg_terminate_backend(" + std::to_string(pid) + ")";
    }
    // The kill is asynchronous; a ping waits for the outcome, bounded.
    CHECK_FALSE(traits::ping(*s, milliseconds{5000}));
    CHECK(traits::peer_closed(*s) == warmpool::peer_state::closed);
    CHECK(traits::is_broken(*s));
}

TEST_CASE("PostgreSQL: ping returns false by its deadline when the server process is stopped" *
          servers::skip_without(servers::pg, servers::sigstop)) {
    (void)servers::need(servers::sigstop);
    auto s = traits::connect(server(), milliseconds{5000});
    const auto pid = static_cast<pid_t>(backend_pid(*s));
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    const bool answered = traits::ping(*s, milliseconds{300});
    ::kill(pid, SIGCONT);
    CHECK_FALSE(answered);
    s.reset(); // must not block either
}

TEST_CASE("PostgreSQL: a wrong database is a permanent connect error without the password" *
          servers::skip_without(servers::pg)) {
    const std::string cs = server() + " dbname=warmpool_no_such_db password=hunter2";
    try {
        (void)traits::connect(cs, milliseconds{5000});
        FAIL("connect should have thrown");
    } catch (const warmpool::connect_error& e) {
        CHECK_FALSE(e.transient());
        CHECK(std::string(e.what()).find("hunter2") == std::string::npos);
    }
}

#endif

TEST_CASE("PostgreSQL: acquire(milliseconds::max()) connects: no limit stays within libpq's" *
          servers::skip_without(servers::pg)) {
    // The time left becomes libpq's connect_timeout in whole seconds; "forever" must not exceed
    // the int libpq parses, or every connect fails as a malformed parameter.
    warmpool::soci_pool pool(server());
    auto sql = pool.acquire(milliseconds::max());
    int one = 0;
    *sql << "select 1", soci::into(one);
    CHECK(one == 1);
    warmpool::options o;
    o.acquire_timeout = milliseconds::max();
    warmpool::soci_pool forever(server(), o);
    CHECK(forever.acquire()->is_connected());
}
