// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// The SOCI adapter compiled the way most programs are:
//
//   c++ -std=c++17 -I<warmpool>/include -I/usr/include/postgresql -I/usr/include/mariadb
//       app.cpp -lsoci_core -ldl -pthread
//
// No WARMPOOL_SOCI_<BACKEND> macro, and no client library linked: not libpq, libmariadb nor
// libsqlite3, not even SOCI's backends, which SOCI's dynamic loader opens at run time. The
// native checks must still be compiled in (found by __has_include) and must find the client
// libraries' functions in the process at run time. Against the real servers of scripts/
// servers.sh (WARMPOOL_TEST_PG, WARMPOOL_TEST_MYSQL; skipped without them, failed under
// CI=true) this shows what they are for: a backend ended while idle is never handed out, a
// stopped backend holds up neither acquire() nor a give-back, and SQLite runs no ROLLBACK when
// no transaction is open.

#define DOCTEST_CONFIG_IMPLEMENT
#include <warmpool/detail/loaded_library.hpp>
#include <warmpool/soci.hpp>

#include "../integration/support/fault_scenarios.hpp"
#include "../integration/support/real_server.hpp"
#include "../integration/support/reset_scenarios.hpp"
#include "../integration/support/server_kind.hpp"
#include "../integration/support/servers.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <dlfcn.h>
#include <signal.h>
#include <sys/types.h>

#if defined(WARMPOOL_SOCI_POSTGRESQL) || defined(WARMPOOL_SOCI_MYSQL) ||                           \
    defined(WARMPOOL_SOCI_SQLITE3)
#error "the auto-detection tests must be built without the WARMPOOL_SOCI_<BACKEND> macros"
#endif
static_assert(WARMPOOL_SOCI_POSTGRESQL_NATIVE == 2,
              "libpq-fe.h and SOCI's PostgreSQL header are on the include path: detected");
static_assert(WARMPOOL_SOCI_MYSQL_NATIVE == 2,
              "mysql.h and SOCI's MySQL header are on the include path: detected");
static_assert(WARMPOOL_SOCI_SQLITE3_NATIVE == 2,
              "sqlite3.h and SOCI's SQLite header are on the include path: detected");

namespace {

using std::chrono::milliseconds;
using namespace servers;
namespace lib = warmpool::detail::loaded_library;

/// The client and backend libraries loaded when main() started, before any session: none, as
/// the program links none of them.
std::vector<std::string> loaded_at_start;

const char* const client_libraries[] = {"libpq.so",       "libmariadb.so",      "libmysqlclient.so",
                                        "libsqlite3.so",  "libsoci_postgresql", "libsoci_mysql",
                                        "libsoci_sqlite3"};

std::vector<std::string> loaded_client_libraries() {
    std::vector<std::string> found;
    for (const char* prefix : client_libraries) {
        for (const std::string& path : lib::paths_starting_with(prefix)) {
            found.push_back(path);
        }
    }
    return found;
}

bool loaded(const char* prefix) {
    return !lib::paths_starting_with(prefix).empty();
}

/// mariadbd's process id, from the pid file the server names itself.
pid_t mariadb_server_pid(soci::session& admin) {
    std::string file;
    admin << "select @@pid_file", soci::into(file);
    std::ifstream in(file);
    long long pid = 0;
    in >> pid;
    return static_cast<pid_t>(pid);
}

/// A fresh SQLite file under the system temp dir, removed at the end.
struct temp_db {
    std::filesystem::path path;
    temp_db() {
        std::random_device rd;
        path = std::filesystem::temp_directory_path() /
               ("warmpool-autodetect-" + std::to_string(rd()) + std::to_string(rd()) + ".db");
    }
    ~temp_db() {
        std::error_code ec;
        std::filesystem::remove(path, ec);
    }
    temp_db(const temp_db&) = delete;
    temp_db& operator=(const temp_db&) = delete;
    std::string connect_string() const { return "sqlite3://db=" + path.string(); }
};

/// Gives back a lease holding an open transaction while the server does not answer: the
/// rollback must give up after validation_timeout and the connection be closed, not pooled.
/// `stop_whom` names the process to stop for the session with that id.
void give_back_with_open_transaction_while_stopped(soci::session& admin,
                                                   pid_t (*stop_whom)(long long, soci::session&),
                                                   const server_kind& server) {
    warmpool::options o = pool_of(1);
    o.validation_timeout = milliseconds{500};
    warmpool::soci_pool pool(need(server.var), o);
    long long took = -1;
    {
        auto sql = pool.acquire();
        const long long id = server.id_of(*sql);
        sql->begin();
        *sql << "select 1";
        REQUIRE(warmpool::soci_traits::in_transaction(*sql));
        stopped_process freeze(stop_whom(id, admin));
        REQUIRE(freeze.stopped());
        const auto start = steady::now();
        sql.release(); // rolls back: bounded, then closes: must not block either
        took = elapsed_ms(start);
    }
    MESSAGE("give-back with an open transaction on a stopped server took " << took << " ms");
    CHECK(took >= 400);        // it did wait for the rollback's answer ...
    CHECK(took < 500 + 1'500); // ... about validation_timeout, never the server's mercy
    const auto st = pool.stats();
    CHECK(st.rollbacks == 1);
    CHECK(st.closed_broken == 1);
    CHECK(st.open == 0);
    // Resumed, the server serves a fresh connection.
    auto sql = pool.acquire();
    int one = 0;
    *sql << "select 1", soci::into(one);
    CHECK(one == 1);
}

} // namespace

int main(int argc, char** argv) {
    loaded_at_start = loaded_client_libraries();
    doctest::Context context(argc, argv);
    return context.run();
}

TEST_CASE("built without macros and without linking a client library, the native checks are "
          "compiled in and find SQLite's functions at run time") {
    for (const std::string& path : loaded_at_start) {
        FAIL_CHECK("loaded before any session, so linked into the program: " << path);
    }
    temp_db db;
    auto s = warmpool::soci_traits::connect(db.connect_string(), milliseconds{5'000});
    CHECK(loaded("libsoci_sqlite3"));                     // SOCI's loader opened it ...
    CHECK(warmpool::detail::soci_lite::api() != nullptr); // ... and the functions were found
    CHECK_FALSE(warmpool::soci_traits::in_transaction(*s));
    *s << "begin";
    CHECK(warmpool::soci_traits::in_transaction(*s));
    CHECK(warmpool::soci_traits::rollback(*s, milliseconds{1'000}));
    CHECK_FALSE(warmpool::soci_traits::in_transaction(*s));
}

TEST_CASE("PostgreSQL: libpq, loaded RTLD_LOCAL by SOCI's loader, is found although the global "
          "scope lacks it, by four threads connecting at once" *
          skip_without(pg)) {
    const std::string cs = need(pg);
    std::atomic<int> ready{0};
    std::atomic<int> answered{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
        threads.emplace_back([&] {
            ++ready;
            while (ready.load() < 4) {
                std::this_thread::yield();
            }
            try {
                auto s = warmpool::soci_traits::connect(cs, milliseconds{5'000});
                if (warmpool::soci_traits::ping(*s, milliseconds{2'000})) {
                    ++answered;
                }
            } catch (const std::exception& e) {
                MESSAGE("connect failed: " << e.what());
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(answered == 4);
    CHECK(loaded("libpq.so"));
    CHECK(::dlsym(RTLD_DEFAULT, "PQstatus") == nullptr); // RTLD_DEFAULT alone finds nothing
    CHECK(warmpool::detail::soci_pg::api() != nullptr);
    auto s = warmpool::soci_traits::connect(cs, milliseconds{5'000});
    *s << "begin";
    CHECK(warmpool::soci_traits::in_transaction(*s));
    CHECK(warmpool::soci_traits::rollback(*s, milliseconds{2'000}));
    CHECK_FALSE(warmpool::soci_traits::in_transaction(*s));
}

TEST_CASE("PostgreSQL: without libpq linked, a malformed conninfo passes the constructor and "
          "fails the first connect permanently, without showing the password") {
    // libpq is not linked, so soci_config cannot run its parser: the string is refused at the
    // first connect (SOCI's backend and libpq parse it; no server is reached).
    warmpool::soci_pool pool("postgresql://host=127.0.0.1 password=hunter2 secret", pool_of(1));
    try {
        (void)pool.acquire();
        FAIL("acquire() should have thrown");
    } catch (const warmpool::connect_error& e) {
        const std::string what = e.what();
        INFO(what);
        CHECK_FALSE(e.transient());
        CHECK(what.find("syntax") != std::string::npos);
        CHECK(what.find("hunter2") == std::string::npos);
        CHECK(what.find("secret") == std::string::npos);
    }
    CHECK(pool.stats().connect_failures == 1);
}

TEST_CASE("MySQL: the client library loaded by SOCI's loader is found" * skip_without(mysql)) {
    auto s = warmpool::soci_traits::connect(need(mysql), milliseconds{5'000});
    CHECK((loaded("libmariadb.so") || loaded("libmysqlclient.so")));
    CHECK(warmpool::detail::soci_my::api() != nullptr);
    CHECK(warmpool::soci_traits::ping(*s, milliseconds{2'000}));
}

namespace {
struct no_such_table {
    void (*fn)() = nullptr;
};
bool fill_no_such_table(no_such_table& t, void* scope) noexcept {
    void* const address = lib::find(scope, "warmpool_no_such_symbol");
    if (address == nullptr) {
        return false;
    }
    lib::assign(t.fn, address);
    return true;
}
} // namespace

TEST_CASE("looking for a library that is not loaded finds nothing and loads nothing") {
    CHECK(lib::resolve_once<no_such_table>({"libwarmpool_no_such_library"}, &fill_no_such_table) ==
          nullptr);
    CHECK_FALSE(loaded("libwarmpool_no_such_library"));
}

TEST_CASE("PostgreSQL: connections terminated while idle are never handed out" * skip_without(pg)) {
    scenarios::idle_connections_ended_are_replaced(postgresql);
}

TEST_CASE("MySQL: connections KILLed while idle are never handed out" * skip_without(mysql)) {
    scenarios::idle_connections_ended_are_replaced(mariadb);
}

TEST_CASE("PostgreSQL: with the backend stopped, acquire gives it up after validation_timeout "
          "and returns a fresh connection" *
          skip_without(pg, sigstop)) {
    (void)need(sigstop);
    warmpool::options o = pool_of(1);
    o.validation_window = milliseconds{100};
    o.validation_timeout = milliseconds{1'000};
    warmpool::soci_pool pool(need(pg), o);
    long long hung = 0;
    {
        auto sql = pool.acquire();
        hung = pg_backend_pid(*sql);
    }
    std::this_thread::sleep_for(milliseconds{150}); // past the validation window: a ping is due
    long long took = 0;
    long long fresh = 0;
    {
        stopped_process freeze(static_cast<pid_t>(hung));
        REQUIRE(freeze.stopped());
        const auto start = steady::now();
        auto sql = pool.acquire();
        took = elapsed_ms(start);
        fresh = pg_backend_pid(*sql);
    }
    MESSAGE("stopped backend replaced after " << took << " ms");
    CHECK(took < 1'000 + 4'000); // the ping's 1 s plus a connect
    CHECK(fresh != hung);
    const auto st = pool.stats();
    CHECK(st.validation_failures == 1);
    CHECK(st.created == 2);
}

TEST_CASE("PostgreSQL: a give-back with an open transaction on a stopped backend returns "
          "within about validation_timeout and closes the connection" *
          skip_without(pg, sigstop)) {
    (void)need(sigstop);
    auto admin = admin_session(need(pg));
    give_back_with_open_transaction_while_stopped(
        *admin, [](long long id, soci::session&) { return static_cast<pid_t>(id); }, postgresql);
}

TEST_CASE("MySQL: a give-back with an open transaction on a stopped server returns within about "
          "validation_timeout and closes the connection" *
          skip_without(mysql, sigstop)) {
    (void)need(sigstop);
    auto admin = admin_session(need(mysql));
    give_back_with_open_transaction_while_stopped(
        *admin, [](long long, soci::session& a) { return mariadb_server_pid(a); }, mariadb);
}

TEST_CASE("SQLite: no ROLLBACK runs on give-back while no transaction is open; an open one is "
          "rolled back") {
    temp_db db;
    warmpool::soci_pool pool(db.connect_string(), pool_of(1));
    {
        auto sql = pool.acquire();
        *sql << "create table t (n integer)";
    }
    for (int i = 0; i < 5; ++i) {
        auto sql = pool.acquire();
        *sql << "insert into t values (:n)", soci::use(i);
    }
    CHECK(pool.stats().rollbacks == 0);
    {
        auto sql = pool.acquire();
        sql->begin();
        *sql << "insert into t values (99)"; // left open
    }
    auto sql = pool.acquire();
    long long n = 0;
    *sql << "select count(*) from t", soci::into(n);
    CHECK(n == 5);
    const auto st = pool.stats();
    CHECK(st.rollbacks == 1);
    CHECK(st.created == 1);
    CHECK(st.closed == 0);
}

TEST_CASE("PostgreSQL: reset_on_release clears role, search_path, temporary table, advisory "
          "lock and prepared statement" *
          skip_without(pg)) {
    reset_scenarios::postgresql_state_does_not_reach_the_next_lease(true);
}

TEST_CASE("MySQL: reset_on_release clears role, variables, temporary table and GET_LOCK lock" *
          skip_without(mysql)) {
    reset_scenarios::mariadb_state_does_not_reach_the_next_lease(true);
}

TEST_CASE("SQLite: reset_on_release drops temporary objects and detaches databases") {
    reset_scenarios::sqlite_state_does_not_reach_the_next_lease();
}

TEST_CASE("PostgreSQL: on_release returning false or throwing closes the connection" *
          skip_without(pg)) {
    reset_scenarios::on_release_veto_closes(need(pg), pg_backend_pid);
}

TEST_CASE("MySQL: on_release returning false or throwing closes the connection" *
          skip_without(mysql)) {
    reset_scenarios::on_release_veto_closes(need(mysql), mysql_connection_id);
}
