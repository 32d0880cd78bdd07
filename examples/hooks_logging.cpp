// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// Logging every pool event, and preparing every new connection with a setup statement.
//
//   hooks_logging                                   an SQLite file in a temp directory
//   WARMPOOL_DEMO_DB="postgresql://dbname=app" hooks_logging

#include <warmpool/soci.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>

namespace {

void log_event(const warmpool::event& e) {
    // Called outside the pool's lock, on the thread that caused the event; keep it cheap.
    std::printf("[warmpool] %-15.*s conn=%-3llu reason=%-17.*s elapsed=%8lld us  %.*s\n",
                static_cast<int>(to_string(e.type).size()), to_string(e.type).data(),
                static_cast<unsigned long long>(e.connection_id),
                static_cast<int>(to_string(e.reason).size()), to_string(e.reason).data(),
                static_cast<long long>(e.elapsed.count()), static_cast<int>(e.message.size()),
                e.message.data());
}

} // namespace

int main() {
    std::random_device rd;
    const std::string sqlite_file = (std::filesystem::temp_directory_path() /
                                     ("warmpool-hooks-demo-" + std::to_string(rd()) + ".db"))
                                        .string();
    const char* env = std::getenv("WARMPOOL_DEMO_DB");
    const bool embedded = env == nullptr || *env == '\0';

    warmpool::soci_config cfg = embedded ? "sqlite3://db=" + sqlite_file : std::string(env);
    const std::string backend = cfg.backend();
    cfg.on_connect = [backend](soci::session& s) {
        // Session setup, run once on every new connection before anyone leases it.
        if (backend == "postgresql") {
            s << "set application_name = 'warmpool-hooks-demo'";
        } else if (backend == "mysql") {
            s << "set session sql_mode = 'STRICT_ALL_TABLES'";
        } else {
            s << "pragma foreign_keys = on";
        }
        std::printf("[setup]    on_connect ran on a new %s connection\n", backend.c_str());
    };

    warmpool::options opts;
    opts.max_size = 2;
    opts.on_event = log_event;

    int status = 0;
    {
        warmpool::soci_pool pool(cfg, opts);
        std::printf("target: %s\n", pool.target().c_str());
        try {
            {
                auto sql = pool.acquire();
                *sql << "create table if not exists hooks_demo (n integer)";
            }
            {
                // Left open on purpose: the pool rolls it back on give-back (a rolled_back event).
                auto sql = pool.acquire();
                *sql << "begin";
                *sql << "insert into hooks_demo (n) values (1)";
            }
            {
                // A connection in an unknown state after an error: closed, not reused.
                auto sql = pool.acquire();
                sql.invalidate();
            }
            auto a = pool.acquire();
            auto b = pool.acquire();
            *a << "drop table hooks_demo";
        } catch (const std::exception& e) {
            std::fprintf(stderr, "error: %s\n", e.what());
            status = 1;
        }
        pool.close(); // the remaining connections close with reason pool_closed
    }
    if (embedded) {
        std::error_code ec;
        std::filesystem::remove(sqlite_file, ec);
    }
    return status;
}
