// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// The other side of run-time lookup: a program that links SOCI and SQLite statically, without
// exporting their symbols and without WARMPOOL_SOCI_SQLITE3. The SQLite checks are compiled in
// (its headers are there), but no loaded object and no exported symbol provides SQLite's
// functions, so the adapter cannot look inside the session. That must fail the connect
// permanently, saying what to do, and never degrade to unchecked sessions.

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <warmpool/soci.hpp>

#include <soci/sqlite3/soci-sqlite3.h>

#include <doctest/doctest.h>

#include <string>

static_assert(WARMPOOL_SOCI_SQLITE3_NATIVE == 2, "sqlite3.h is on the include path: detected");

TEST_CASE("statically linked SQLite whose functions are not exported: the connect fails "
          "permanently and says what to do") {
    const warmpool::soci_config cfg(soci::sqlite3, "db=:memory:");
    CHECK(cfg.backend() == "sqlite3"); // the factory is recognised by its type
    warmpool::options o;
    o.max_size = 1;
    warmpool::soci_pool pool(cfg, o);
    try {
        (void)pool.acquire();
        FAIL("acquire() should have thrown");
    } catch (const warmpool::connect_error& e) {
        const std::string what = e.what();
        INFO(what);
        CHECK_FALSE(e.transient());
        CHECK(what.find("were not found in this process") != std::string::npos);
        CHECK(what.find("WARMPOOL_SOCI_SQLITE3=1") != std::string::npos);
        CHECK(what.find("WARMPOOL_SOCI_SQLITE3=0") != std::string::npos);
    }
    const auto st = pool.stats();
    CHECK(st.connect_failures == 1);
    CHECK(st.created == 0);
}
