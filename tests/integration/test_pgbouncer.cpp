// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// warmpool::soci_pool through PgBouncer in transaction pooling mode (WARMPOOL_TEST_PGBOUNCER,
// in front of the WARMPOOL_TEST_PG server). Between transactions PgBouncer may give a client
// another server connection, so what lives on a server connection outside a transaction is
// not the client's. These tests pin down what works and what does not; docs/pgbouncer.md says
// what to do about it.

#include <warmpool/soci.hpp>

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE

#include "support/real_server.hpp"

#include <warmpool/soci.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using std::chrono::milliseconds;
using namespace servers;

/// Sessions through PgBouncer, each inside a transaction, opened until one of them holds the
/// server connection whose backend is `pid`: while they stay open no other client can get it.
std::vector<std::unique_ptr<soci::session>> pin_backend(const std::string& bouncer, long long pid) {
    std::vector<std::unique_ptr<soci::session>> pinned;
    for (int i = 0; i < 25; ++i) {
        pinned.push_back(admin_session(bouncer));
        *pinned.back() << "begin";
        if (pg_backend_pid(*pinned.back()) == pid) {
            // The holder goes first, for the caller's convenience.
            std::swap(pinned.front(), pinned.back());
            return pinned;
        }
    }
    FAIL("no session through PgBouncer got the server connection of backend " << pid);
    return pinned;
}

} // namespace

TEST_CASE("PgBouncer: the pool's ping, one-time queries and use/into bindings work in "
          "transaction mode" *
          skip_without(pgbouncer)) {
    warmpool::options o = pool_of(2);
    o.validation_window = milliseconds{0}; // ping on every checkout
    warmpool::soci_pool pool(need(pgbouncer), o);

    for (int i = 0; i < 20; ++i) {
        auto sql = pool.acquire();
        int in = i;
        int out = -1;
        *sql << "select :x + 1", soci::use(in), soci::into(out);
        CHECK(out == i + 1);
        std::string text;
        *sql << "select 'warmpool'", soci::into(text);
        CHECK(text == "warmpool");
    }
    const auto st = pool.stats();
    CHECK(st.created == 1);
    CHECK(st.pings == 19); // every checkout but the one that connected
    CHECK(st.validation_failures == 0);
}

TEST_CASE("PgBouncer: a transaction left open is rolled back on give-back" *
          skip_without(pgbouncer, pg)) {
    auto admin = admin_session(need(pg));
    *admin << "create table if not exists warmpool_bouncer_tx (id integer)";
    *admin << "delete from warmpool_bouncer_tx";
    warmpool::soci_pool pool(need(pgbouncer), pool_of(1));

    try {
        auto sql = pool.acquire();
        sql->begin();
        *sql << "insert into warmpool_bouncer_tx values (1)";
        throw std::runtime_error("the handler failed half-way");
    } catch (const std::runtime_error&) {
    }
    {
        auto sql = pool.acquire();
        CHECK_FALSE(warmpool::soci_traits::in_transaction(*sql));
        long long rows = -1;
        *sql << "select count(*) from warmpool_bouncer_tx", soci::into(rows);
        CHECK(rows == 0);
    }
    const auto st = pool.stats();
    CHECK(st.rollbacks == 1);
    CHECK(st.closed == 0);
    *admin << "drop table warmpool_bouncer_tx";
}

TEST_CASE("PgBouncer: a prepared soci::statement works within one transaction" *
          skip_without(pgbouncer)) {
    warmpool::soci_pool pool(need(pgbouncer), pool_of(1));
    auto sql = pool.acquire();
    soci::transaction tx(*sql);
    int in = 0;
    int out = -1;
    soci::statement st = (sql->prepare << "select :x * 2", soci::use(in), soci::into(out));
    for (in = 1; in <= 5; ++in) {
        st.execute(true);
        CHECK(out == in * 2);
    }
    tx.commit();
}

TEST_CASE("PgBouncer: a soci::statement prepared in one transaction fails when executed on "
          "another server connection, and its name collides with other clients' statements" *
          skip_without(pgbouncer, pg)) {
    const std::string bouncer = need(pgbouncer);
    auto admin = admin_session(need(pg));
    warmpool::soci_pool pool(bouncer, pool_of(1));
    auto sql = pool.acquire();

    // SOCI prepares "st_1" on the server connection that runs this transaction.
    long long backend = 0;
    long long pid = 0;
    *sql << "begin";
    auto st = std::make_unique<soci::statement>(
        (sql->prepare << "select pg_backend_pid()", soci::into(pid)));
    st->execute(true);
    backend = pid;
    *sql << "commit";

    {
        // With that server connection busy elsewhere, the next execution lands on another one.
        auto pinned = pin_backend(bouncer, backend);
        CHECK_THROWS_WITH(st->execute(true), doctest::Contains("does not exist"));
        // Another client's SOCI session names its first statement "st_1" too.
        soci::session& other = *pinned.front();
        int x = 0;
        CHECK_THROWS_WITH(soci::statement((other.prepare << "select 1", soci::into(x))),
                          doctest::Contains("already exists"));
    }
    // The leftover "st_1" would trip later clients: retire that server connection, if PgBouncer
    // has not already (it closes a server connection whose client left mid-transaction, as the
    // pinning session just did after its failed statement). The statement's own DEALLOCATE goes
    // astray like its execution.
    st.reset();
    pg_terminate(*admin, backend);
    CHECK(pg_backend_gone(*admin, backend));
}

TEST_CASE("PgBouncer: a server connection terminated behind PgBouncer does not reach the pool" *
          skip_without(pgbouncer, pg)) {
    auto admin = admin_session(need(pg));
    warmpool::options o = pool_of(1);
    warmpool::soci_pool pool(need(pgbouncer), o);
    long long backend = 0;
    {
        auto sql = pool.acquire();
        backend = pg_backend_pid(*sql);
    }
    pg_terminate(*admin, backend);
    REQUIRE(pg_backend_gone(*admin, backend));
    std::this_thread::sleep_for(milliseconds{50});
    {
        // PgBouncer drops the dead server connection; the client's connection stays good, so
        // the pool's checks see nothing and need not.
        auto sql = pool.acquire();
        CHECK(pg_backend_pid(*sql) != backend);
    }
    const auto st = pool.stats();
    CHECK(st.created == 1);
    CHECK(st.validation_failures == 0);
}

TEST_CASE("PgBouncer: after PgBouncer restarts, the pool replaces its connection unseen" *
          skip_without(pgbouncer, pgbouncer_ctl)) {
    (void)need(pgbouncer_ctl);
    warmpool::soci_pool pool(need(pgbouncer), pool_of(1));
    {
        auto sql = pool.acquire();
        (void)pg_backend_pid(*sql);
    }
    {
        keep_running guard(pgbouncer_ctl);
        REQUIRE(control(pgbouncer_ctl, "restart") == 0);
    }
    {
        auto sql = pool.acquire();
        int one = 0;
        *sql << "select 1", soci::into(one);
        CHECK(one == 1);
    }
    const auto st = pool.stats();
    CHECK(st.created == 2);
    CHECK(st.validation_failures == 1);
}

#endif
