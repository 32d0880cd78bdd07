// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// A simulated serverless function: one process serves invocations, is "frozen" between some of
// them, and its database connection dies while it is frozen. The handler never sees the death:
// the pool notices it on the next checkout and reconnects.
//
//   serverless_demo                       an SQLite file in a temp directory
//   WARMPOOL_DEMO_DB="postgresql://dbname=app" serverless_demo
//   WARMPOOL_DEMO_DB="mysql://db=app user=app password=…" serverless_demo
//
// How the connection dies during the freeze:
//   PostgreSQL / MySQL: another session kills ours (pg_terminate_backend / KILL), as a server's
//     idle timeout or a failover would; the pool's socket check at thaw sees the closed socket.
//   SQLite: nothing can kill an embedded database, so the freeze closes the idle session behind
//     the pool's back (soci::session::close()), as a server closes its end of a socket; the
//     pool's check at thaw sees a session that is no longer open.

#include <warmpool/soci.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>

namespace {

using clock_type = std::chrono::steady_clock;

std::string temp_sqlite_path() {
    std::random_device rd;
    return (std::filesystem::temp_directory_path() /
            ("warmpool-serverless-demo-" + std::to_string(rd()) + ".db"))
        .string();
}

const std::string& sqlite_path() {
    static const std::string path = temp_sqlite_path();
    return path;
}

/// The function's configuration, read once per process, as a real function would at init.
const std::string& connect_string() {
    static const std::string s = [] {
        const char* env = std::getenv("WARMPOOL_DEMO_DB");
        return env != nullptr && *env != '\0' ? std::string(env) : "sqlite3://db=" + sqlite_path();
    }();
    return s;
}

warmpool::soci_pool& pool() {
    // A function-local static: created on the first (cold) invocation, kept while the process
    // lives, connecting lazily on the first acquire.
    static warmpool::soci_pool p(connect_string(), warmpool::options::single_slot());
    return p;
}

enum class backend { sqlite, postgresql, mysql };

backend backend_of(const warmpool::soci_pool& p) {
    const std::string& t = p.target();
    if (t.rfind("postgresql://", 0) == 0) {
        return backend::postgresql;
    }
    if (t.rfind("mysql://", 0) == 0) {
        return backend::mysql;
    }
    return backend::sqlite;
}

/// What the freeze step needs from the last invocation before it.
struct server_session {
    long long id = 0;                  // the server's id for our session (pid, connection id)
    soci::session* embedded = nullptr; // SQLite: the session itself, to close while idle
};

/// The handler: one invocation's work. `before_freeze` asks it to leave what the freeze
/// simulation needs.
long long handle(int invocation, bool before_freeze, server_session& out) {
    auto sql = pool().acquire();
    static const bool schema_ready = [&] {
        *sql << "create table if not exists invocations (n integer)";
        return true;
    }();
    (void)schema_ready;
    *sql << "insert into invocations (n) values (:n)", soci::use(invocation);
    long long total = 0;
    *sql << "select count(*) from invocations", soci::into(total);
    if (before_freeze) {
        switch (backend_of(pool())) {
        case backend::postgresql:
            *sql << "select pg_backend_pid()", soci::into(out.id);
            break;
        case backend::mysql:
            *sql << "select connection_id()", soci::into(out.id);
            break;
        case backend::sqlite:
            out.embedded = sql.get(); // stays open and idle in the pool after this invocation
            break;
        }
    }
    return total;
}

/// The freeze: time passes (longer than options::validation_window) and, for a server, another
/// session kills ours.
void freeze(const server_session& victim) {
    const backend b = backend_of(pool());
    if (b == backend::sqlite) {
        victim.embedded->close(); // the embedded stand-in for "the server closed our connection"
    } else {
        soci::session admin(connect_string());
        if (b == backend::postgresql) {
            admin << "select pg_terminate_backend(" + std::to_string(victim.id) + ")";
        } else {
            admin << "kill " + std::to_string(victim.id);
        }
    }
    std::this_thread::sleep_for(pool().get_options().validation_window +
                                std::chrono::milliseconds{100});
}

struct row {
    const char* kind;
    int count = 0;
    std::chrono::microseconds time{0};
    std::uint64_t created = 0;
    std::uint64_t validation_failures = 0;
    std::uint64_t closed = 0;
};

template <class F>
void measure(row& r, F&& invocation) {
    const auto before = pool().stats();
    const auto start = clock_type::now();
    invocation();
    r.time += std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - start);
    const auto after = pool().stats();
    ++r.count;
    r.created += after.created - before.created;
    r.validation_failures += after.validation_failures - before.validation_failures;
    r.closed += after.closed - before.closed;
}

} // namespace

int main() {
    row cold{"cold start"};
    row warm{"warm"};
    row thaw{"thaw after freeze"};
    server_session victim;
    int invocation = 0;
    int errors = 0;

    const auto invoke = [&](row& r, bool before_freeze) {
        measure(r, [&] {
            try {
                handle(++invocation, before_freeze, victim);
            } catch (const std::exception& e) {
                ++errors;
                std::fprintf(stderr, "invocation %d failed: %s\n", invocation, e.what());
            }
        });
    };

    try {
        invoke(cold, false);
        for (int round = 0; round < 3; ++round) {
            for (int i = 0; i < 5; ++i) {
                invoke(warm, i == 4);
            }
            freeze(victim);
            invoke(thaw, false);
        }
        for (int i = 0; i < 5; ++i) {
            invoke(warm, false);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "the demo could not run: %s\n", e.what());
        return 1;
    }

    std::printf("target: %s\n\n", pool().target().c_str());
    std::printf("%-18s %6s %12s %9s %12s %7s\n", "invocation", "count", "mean (us)", "created",
                "validation", "closed");
    std::printf("%-18s %6s %12s %9s %12s %7s\n", "", "", "", "", "failures", "");
    for (const row* r : {&cold, &warm, &thaw}) {
        std::printf("%-18s %6d %12lld %9llu %12llu %7llu\n", r->kind, r->count,
                    static_cast<long long>(r->time.count() / (r->count > 0 ? r->count : 1)),
                    static_cast<unsigned long long>(r->created),
                    static_cast<unsigned long long>(r->validation_failures),
                    static_cast<unsigned long long>(r->closed));
    }
    const auto st = pool().stats();
    std::printf("\npool: created %llu, closed %llu (broken %llu, validation_failed %llu), pings "
                "%llu, validation failures %llu, acquired %llu; handler errors: %d\n",
                static_cast<unsigned long long>(st.created),
                static_cast<unsigned long long>(st.closed),
                static_cast<unsigned long long>(st.closed_broken),
                static_cast<unsigned long long>(st.closed_validation_failed),
                static_cast<unsigned long long>(st.pings),
                static_cast<unsigned long long>(st.validation_failures),
                static_cast<unsigned long long>(st.acquired), errors);
    if (backend_of(pool()) == backend::sqlite) {
        pool().close();
        std::error_code ec;
        std::filesystem::remove(sqlite_path(), ec);
    }
    return errors == 0 ? 0 : 1;
}
