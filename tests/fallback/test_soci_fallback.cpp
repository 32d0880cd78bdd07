// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// soci_traits without any WARMPOOL_SOCI_<BACKEND> macro: sessions open through SOCI's dynamic
// backend loader and only portable SOCI calls are made. This program is built apart from the
// integration tests because the macros change what soci.hpp's inline functions do.

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <warmpool/soci.hpp>

#include <doctest/doctest.h>

#include <filesystem>
#include <random>
#include <string>
#include <system_error>

#if defined(WARMPOOL_SOCI_SQLITE3) || defined(WARMPOOL_SOCI_POSTGRESQL) ||                         \
    defined(WARMPOOL_SOCI_MYSQL)
#error "the fallback tests must be built without the WARMPOOL_SOCI_<BACKEND> macros"
#endif

namespace {

namespace fs = std::filesystem;

struct temp_db {
    fs::path path;
    temp_db() {
        std::random_device rd;
        path = fs::temp_directory_path() /
               ("warmpool-fallback-" + std::to_string(rd()) + std::to_string(rd()) + ".db");
    }
    ~temp_db() {
        std::error_code ec;
        fs::remove(path, ec);
    }
    std::string connect_string() const { return "sqlite3://db=" + path.string(); }
};

int rows(warmpool::soci_pool& pool) {
    auto sql = pool.acquire();
    int n = -1;
    *sql << "select count(*) from t", soci::into(n);
    return n;
}

} // namespace

TEST_CASE("without a backend macro the pool rolls back on every give-back and keeps the session") {
    temp_db db;
    warmpool::options o;
    o.max_size = 1;
    warmpool::soci_pool pool(db.connect_string(), o);
    {
        auto sql = pool.acquire();
        *sql << "create table t (n integer)";
    }
    {
        auto sql = pool.acquire();
        sql->begin();
        *sql << "insert into t values (1)"; // left open
    }
    CHECK(rows(pool) == 0); // the open transaction did not reach the next user
    {
        auto sql = pool.acquire();
        sql->begin();
        *sql << "insert into t values (2)";
        sql->commit();
    }
    CHECK(rows(pool) == 1); // committed work is kept
    const auto s = pool.stats();
    // The adapter cannot tell whether a transaction is open, so every give-back rolls back; on
    // SQLite a rollback with nothing open is accepted as success, so the session stays pooled.
    CHECK(s.rollbacks == s.acquired);
    CHECK(s.created == 1);
    CHECK(s.closed == 0);
}

TEST_CASE("without a backend macro a closed session is still never handed out") {
    temp_db db;
    warmpool::options o;
    o.max_size = 1;
    o.validation_window = std::chrono::milliseconds(0);
    warmpool::soci_pool pool(db.connect_string(), o);
    soci::session* first = nullptr;
    {
        auto sql = pool.acquire();
        first = sql.get();
    }
    first->close(); // behind the pool's back
    auto sql = pool.acquire();
    int one = 0;
    *sql << "select 1", soci::into(one);
    CHECK(one == 1);
    CHECK(pool.stats().validation_failures == 1);
    CHECK(pool.stats().created == 2);
}
