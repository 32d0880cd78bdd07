// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// warmpool::soci_pool against SQLite files: the adapter's rules (redaction, connect string
// checks, failure classes, the on_connect hook) and the pool's give-back rules on a real
// database. Deterministic: no sleeps, no timing assertions.

#include <warmpool/soci.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

/// A fresh directory under the system temp dir, removed with everything in it.
class temp_dir {
public:
    temp_dir() {
        std::random_device rd;
        const auto tag = std::to_string(rd()) + "-" + std::to_string(rd());
        path_ = fs::temp_directory_path() / ("warmpool-soci-test-" + tag);
        fs::create_directories(path_);
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

    /// "sqlite3://db=<dir>/<name>"
    std::string db(const std::string& name) const {
        return "sqlite3://db=" + (path_ / name).string();
    }
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

warmpool::options small(std::size_t max_size) {
    warmpool::options o;
    o.max_size = max_size;
    o.acquire_timeout = milliseconds{10'000};
    return o;
}

long long count_rows(soci::session& s, const std::string& table) {
    long long n = -1;
    s << "select count(*) from " + table, soci::into(n);
    return n;
}

void create_table(const std::string& connect_string) {
    soci::session s(connect_string);
    s << "create table if not exists t (id integer primary key, v integer)";
}

} // namespace

TEST_CASE("describe() hides the password in every spelling") {
    using warmpool::soci_traits;
    const auto d = [](const char* s) {
        return soci_traits::describe(warmpool::soci_config(s));
    };

    CHECK(d("postgresql://dbname=app user=u password=secret host=h") ==
          "postgresql://dbname=app user=u password=*** host=h");
    CHECK(d("postgresql://host=h password='a b c' user=x") ==
          "postgresql://host=h password=*** user=x");
    CHECK(d("mysql://db=x user=u pass=\"p w\" port=3306") ==
          "mysql://db=x user=u pass=*** port=3306");
    CHECK(d("mysql://db=x PassWord = hunter2 user=u") == "mysql://db=x PassWord = *** user=u");
    CHECK(d("odbc://DSN=x;UID=u;PWD={a;b};X=1") == "odbc://DSN=x;UID=u;PWD=***;X=1");
    CHECK(d("postgresql://user:s3cr3t@host:5432/db?sslmode=require") ==
          "postgresql://user:***@host:5432/db?sslmode=require");
    CHECK(d("postgres://user:s3cr3t@host/db") == "postgresql://user:***@host/db");
    CHECK(d("postgresql://host/db?user=u&password=sec&sslmode=require") ==
          "postgresql://host/db?user=u&password=***&sslmode=require");
    CHECK(d("sqlite3://db=app.db") == "sqlite3://db=app.db");

    // The pool reports the same redacted target.
    warmpool::soci_pool pool("mysql://db=x user=u password=hunter2");
    CHECK(pool.target() == "mysql://db=x user=u password=***");
}

TEST_CASE("a malformed connect string is rejected at construction, saying what is wrong") {
    const auto message = [](const char* s) -> std::string {
        try {
            warmpool::soci_pool pool(s);
        } catch (const std::invalid_argument& e) {
            return e.what();
        }
        return "no exception";
    };
    CHECK(message("dbname=app password=hunter2").find("no \"://\"") != std::string::npos);
    CHECK(message("://db=x").find("empty backend name") != std::string::npos);
    CHECK(message("Bad Name://db=x").find("not a SOCI backend name") != std::string::npos);
    CHECK(message("sqlite3://").find("names no database") != std::string::npos);
    // Never the password, even when the string cannot be parsed.
    CHECK(message("dbname=app password=hunter2").find("hunter2") == std::string::npos);

    CHECK_THROWS_AS(warmpool::soci_config("no scheme"), std::invalid_argument);
    CHECK_NOTHROW(warmpool::soci_config("postgresql://"));
}

TEST_CASE("an unknown backend fails permanently at the first attempt") {
    warmpool::soci_pool pool("nosuchbackend://x=1 password=hunter2", small(1));
    try {
        (void)pool.acquire();
        FAIL("acquire() should have thrown");
    } catch (const warmpool::connect_error& e) {
        CHECK_FALSE(e.transient());
        const std::string what = e.what();
        CHECK(what.find("nosuchbackend") != std::string::npos);
        CHECK(what.find("hunter2") == std::string::npos);
    }
    CHECK(pool.stats().connect_failures == 1);
    CHECK(pool.stats().created == 0);
}

TEST_CASE("an SQLite file that cannot be opened fails permanently at the first attempt") {
    temp_dir dir;
    warmpool::soci_pool pool("sqlite3://db=" + (dir.path() / "missing-dir" / "x.db").string(),
                             small(1));
    try {
        (void)pool.acquire();
        FAIL("acquire() should have thrown");
    } catch (const warmpool::connect_error& e) {
        CHECK_FALSE(e.transient());
        CHECK(std::string(e.what()).find("db= path") != std::string::npos);
    }
    CHECK(pool.stats().connect_failures == 1);
}

TEST_CASE("a backend factory is named by its type, in any compiler's spelling") {
    using warmpool::soci_impl::names_factory;
    CHECK(names_factory("N4soci26postgresql_backend_factoryE", "postgresql"));
    CHECK(names_factory("N4soci21mysql_backend_factoryE", "mysql"));
    CHECK(names_factory("struct soci::sqlite3_backend_factory", "sqlite3"));
    CHECK_FALSE(names_factory("N4soci21mysql_backend_factoryE", "postgresql"));
    CHECK_FALSE(names_factory("N2my24my_mysql_backend_factoryE", "mysql"));
    CHECK_FALSE(names_factory("N4soci22mysql_backend_factory2E", "mysql"));
#if WARMPOOL_SOCI_SQLITE3_NATIVE == 1
    CHECK(warmpool::soci_config(soci::sqlite3, "db=:memory:").backend() == "sqlite3");
#endif
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE == 1
    CHECK(warmpool::soci_config(soci::postgresql, "dbname=x").backend() == "postgresql");
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE == 1
    CHECK(warmpool::soci_config(soci::mysql, "db=x").backend() == "mysql");
#endif
}

#if WARMPOOL_SOCI_SQLITE3_NATIVE
TEST_CASE("in_transaction() follows SQLite's autocommit flag") {
    temp_dir dir;
    auto s = warmpool::soci_traits::connect(dir.db("flag.db"), milliseconds{1000});
    REQUIRE(s);
    CHECK_FALSE(warmpool::soci_traits::in_transaction(*s));
    *s << "begin";
    CHECK(warmpool::soci_traits::in_transaction(*s));
    CHECK(warmpool::soci_traits::rollback(*s, milliseconds{1000}));
    CHECK_FALSE(warmpool::soci_traits::in_transaction(*s));
    CHECK_FALSE(warmpool::soci_traits::is_broken(*s));
    CHECK(warmpool::soci_traits::peer_closed(*s) == warmpool::peer_state::open);
    CHECK(warmpool::soci_traits::ping(*s, milliseconds{1000}));
}
#endif

TEST_CASE("a transaction left open is rolled back when the lease comes back") {
    temp_dir dir;
    const std::string db = dir.db("rollback.db");
    create_table(db);
    warmpool::soci_pool pool(db, small(1));

    std::uint64_t first_id = 0;
    SUBCASE("given back by release()") {
        auto sql = pool.acquire();
        first_id = sql.connection_id();
        *sql << "begin";
        *sql << "insert into t (v) values (1)";
        sql.release();
    }
    SUBCASE("given back by an exception leaving the scope") {
        try {
            auto sql = pool.acquire();
            first_id = sql.connection_id();
            *sql << "begin";
            *sql << "insert into t (v) values (1)";
            throw std::runtime_error("the handler failed");
        } catch (const std::runtime_error&) {
        }
    }

    auto sql = pool.acquire();
    CHECK(sql.connection_id() == first_id); // the same connection, cleaned
    CHECK(count_rows(*sql, "t") == 0);
    const auto st = pool.stats();
    CHECK(st.rollbacks == 1);
    CHECK(st.created == 1);
    CHECK(st.closed == 0);
}

TEST_CASE("a committed transaction is kept, and nothing is rolled back") {
    temp_dir dir;
    const std::string db = dir.db("commit.db");
    create_table(db);
    warmpool::soci_pool pool(db, small(1));
    {
        auto sql = pool.acquire();
        soci::transaction tr(*sql);
        *sql << "insert into t (v) values (7)";
        tr.commit();
    }
    auto sql = pool.acquire();
    CHECK(count_rows(*sql, "t") == 1);
#if WARMPOOL_SOCI_SQLITE3_NATIVE
    CHECK(pool.stats().rollbacks == 0); // without native access every give-back rolls back
#endif
}

TEST_CASE("invalidate() closes the connection instead of reusing it") {
    temp_dir dir;
    warmpool::soci_pool pool(dir.db("invalidate.db"), small(1));
    std::uint64_t first = 0;
    {
        auto sql = pool.acquire();
        first = sql.connection_id();
        sql.invalidate();
        CHECK_FALSE(sql);
    }
    auto sql = pool.acquire();
    CHECK(sql.connection_id() != first);
    const auto st = pool.stats();
    CHECK(st.created == 2);
    CHECK(st.closed_invalidated == 1);
}

TEST_CASE("close() refuses later acquires and closes leases given back afterwards") {
    temp_dir dir;
    warmpool::soci_pool pool(dir.db("close.db"), small(2));
    auto held = pool.acquire();
    { auto idle = pool.acquire(); } // back to the pool, idle
    pool.close();
    CHECK(pool.stats().closed_pool_closed == 1); // the idle one, at once
    CHECK_THROWS_AS((void)pool.acquire(), warmpool::pool_closed);

    held.release();
    const auto st = pool.stats();
    CHECK(st.closed_pool_closed == 2);
    CHECK(st.open == 0);
}

TEST_CASE("on_connect runs once per new connection") {
    temp_dir dir;
    std::atomic<int> calls{0};
    warmpool::soci_config cfg = dir.db("hook.db");
    cfg.on_connect = [&calls](soci::session& s) {
        ++calls;
        s << "pragma cache_size = -1234"; // per connection, not stored in the file
    };
    warmpool::soci_pool pool(cfg, small(2));
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        int cache_a = 0;
        int cache_b = 0;
        *a << "pragma cache_size", soci::into(cache_a);
        *b << "pragma cache_size", soci::into(cache_b);
        CHECK(cache_a == -1234);
        CHECK(cache_b == -1234);
    }
    for (int i = 0; i < 5; ++i) {
        auto again = pool.acquire();
    }
    CHECK(calls == 2);
    CHECK(pool.stats().created == 2);
}

TEST_CASE("a throwing on_connect fails the connect permanently and discards the connection") {
    temp_dir dir;
    warmpool::soci_config cfg = dir.db("badhook.db");
    cfg.on_connect = [](soci::session& s) {
        s << "this is not sql";
    };
    warmpool::soci_pool pool(cfg, small(1));
    try {
        (void)pool.acquire();
        FAIL("acquire() should have thrown");
    } catch (const warmpool::connect_error& e) {
        CHECK_FALSE(e.transient());
        CHECK(std::string(e.what()).find("on_connect") != std::string::npos);
    }
    const auto st = pool.stats();
    CHECK(st.connect_failures == 1);
    CHECK(st.created == 0);
    CHECK(st.open == 0);
}

TEST_CASE("eight threads share a pool of three on one SQLite file") {
    temp_dir dir;
    const std::string db = dir.db("threads.db");
    {
        soci::session s(db);
        s << "pragma journal_mode = wal"; // stored in the file: readers never block the writer
        s << "create table t (id integer primary key, thread integer, n integer)";
    }
    warmpool::soci_config cfg = db;
    cfg.on_connect = [](soci::session& s) {
        s << "pragma busy_timeout = 30000";
    };
    warmpool::options opts = small(3);
    opts.acquire_timeout = milliseconds{60'000};
    warmpool::soci_pool pool(cfg, opts);

    constexpr int threads = 8;
    constexpr int per_thread = 40;
    std::atomic<int> failures{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                try {
                    auto sql = pool.acquire();
                    *sql << "begin immediate"; // take the write lock up front: no upgrade deadlock
                    *sql << "insert into t (thread, n) values (:t, :n)", soci::use(t), soci::use(i);
                    *sql << "commit";
                } catch (const std::exception&) {
                    ++failures;
                }
            }
        });
    }
    for (auto& w : workers) {
        w.join();
    }
    CHECK(failures == 0);
    auto sql = pool.acquire();
    CHECK(count_rows(*sql, "t") == threads * per_thread);
    const auto st = pool.stats();
    CHECK(st.created <= 3);
    CHECK(st.acquired == threads * per_thread + 1);
#if WARMPOOL_SOCI_SQLITE3_NATIVE
    CHECK(st.rollbacks == 0);
#endif
}

TEST_CASE("a Unix socket without a server is a transient failure: the server may be restarting") {
    // libpq's words when the socket file is missing, as while PostgreSQL restarts.
    const auto c = warmpool::soci_impl::classify(
        "postgresql",
        "connection to server on socket \"/run/postgresql/.s.PGSQL.5432\" failed: No such file "
        "or directory\n\tIs the server running locally and accepting connections on that "
        "socket?",
        0);
    CHECK(c.transient);
}

TEST_CASE("reset_on_release also resets what soci::session keeps: log stream, column case, query "
          "transformation") {
    temp_dir dir;
    warmpool::options o;
    o.max_size = 1;
    o.reset_on_release = true;
    warmpool::soci_pool pool(dir.db("reset.db"), o);
    std::ostringstream first_users_log;
    {
        auto sql = pool.acquire();
        sql->set_log_stream(&first_users_log);
        sql->uppercase_column_names(true);
        sql->set_query_transformation([](const std::string&) { return std::string("select 2"); });
        int two = 0;
        *sql << "select 1", soci::into(two);
        CHECK(two == 2);
    }
    auto sql = pool.acquire();
    const auto logged = first_users_log.str();
    int one = 0;
    *sql << "select 1 as n", soci::into(one);
    CHECK(one == 1);                        // no transformation left over
    CHECK(first_users_log.str() == logged); // nothing written to the first user's log
    soci::row r;
    *sql << "select 1 as n", soci::into(r);
    CHECK(r.get_properties(0).get_name() == "n"); // not upper-cased
    CHECK(pool.stats().resets == 1);
}
