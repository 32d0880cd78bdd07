// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// A small threaded service that serves its pool's metrics to Prometheus: worker threads run
// queries in a loop, and GET /metrics answers in the Prometheus text format
// (warmpool/metrics.hpp) from a cpp-httplib server on 127.0.0.1. Built by
// examples/metrics_endpoint/CMakeLists.txt where cpp-httplib is found.
//
//   metrics_endpoint [PORT] [--seconds N] [--workers N] [--database CONNECT]
//
//   PORT        0 (the default) lets the system pick one; the port is the first line on stdout
//   --seconds   stop after N seconds (default: run until SIGTERM or SIGINT)
//   --workers   query threads (default 6, more than the pool's 4 connections, so some wait)
//   --database  a connect string; default $DATABASE, else an in-memory SQLite database, e.g.
//               DATABASE="postgresql://host=127.0.0.1 dbname=app user=app" metrics_endpoint 9187
//
//   curl -s http://127.0.0.1:PORT/metrics

#include <warmpool/metrics.hpp>
#include <warmpool/soci.hpp>

#include <httplib.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <signal.h>
#include <time.h>

namespace {

struct settings {
    int port = 0;
    long seconds = 0; // 0 = until a signal
    int workers = 6;
    std::string database;
};

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "metrics_endpoint: %s\nusage: metrics_endpoint [PORT] [--seconds N] "
                 "[--workers N] [--database CONNECT]\n",
                 why);
    std::exit(2);
}

long number(const char* text, long low, long high, const char* what) {
    char* end = nullptr;
    const long n = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || n < low || n > high) {
        const std::string why = std::string(what) + " must be a whole number from " +
                                std::to_string(low) + " to " + std::to_string(high) + ", not \"" +
                                text + "\"";
        usage(why.c_str());
    }
    return n;
}

settings parse(int argc, char** argv) {
    settings s;
    const char* env = std::getenv("DATABASE");
    s.database = env != nullptr && *env != '\0' ? env : "sqlite3://db=:memory:";
    bool port_seen = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const bool has_value = i + 1 < argc;
        if (arg == "--seconds" && has_value) {
            s.seconds = number(argv[++i], 1, 86'400 * 365, "--seconds");
        } else if (arg == "--workers" && has_value) {
            s.workers = static_cast<int>(number(argv[++i], 1, 256, "--workers"));
        } else if (arg == "--database" && has_value) {
            s.database = argv[++i];
        } else if (!port_seen && !arg.empty() && arg[0] != '-') {
            s.port = static_cast<int>(number(argv[i], 0, 65535, "PORT"));
            port_seen = true;
        } else {
            usage(("unexpected argument \"" + arg + "\"").c_str());
        }
    }
    return s;
}

// One request of the pretend service: a query, a little work while holding the connection,
// and now and then a mistake the pool cleans up (a transaction left open, a connection
// invalidated), so that every counter has something to show.
void serve_one(warmpool::soci_pool& pool, std::mt19937& rng, long request) {
    auto sql = pool.acquire();
    int one = 0;
    *sql << "select 1", soci::into(one);
    if (request % 97 == 0) {
        *sql << "begin"; // left open: rolled back at give-back
    }
    if (request % 499 == 0) {
        sql.invalidate(); // as after an error that leaves the session in doubt
    }
    std::uniform_int_distribution<int> work_us(0, 3000);
    std::this_thread::sleep_for(std::chrono::microseconds(work_us(rng)));
}

void worker(warmpool::soci_pool& pool, const std::atomic<bool>& stopping, int id,
            std::atomic<long>& errors) {
    std::mt19937 rng(static_cast<unsigned>(id) * 7919u + 1u);
    for (long request = 1; !stopping.load(std::memory_order_relaxed); ++request) {
        try {
            serve_one(pool, rng, request);
        } catch (const std::exception& e) {
            // Rate-limited: a database that went away must not flood the log.
            if (errors.fetch_add(1) % 100 == 0) {
                std::fprintf(stderr, "metrics_endpoint: worker %d: %s\n", id, e.what());
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1)); // the next request arrives
    }
}

} // namespace

int main(int argc, char** argv) {
    const settings cfg = parse(argc, argv);
    // SIGTERM and SIGINT are taken by the main thread alone, with sigtimedwait(): blocked here,
    // before any thread starts, so every thread inherits the mask.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN); // a scraper hanging up mid-reply must not end the process

    try {
        warmpool::options options;
        options.max_size = 4;
        options.min_idle = 1;
        options.acquire_timeout = std::chrono::seconds(5);
        options.background_housekeeping = true;
        options.housekeeping_interval = std::chrono::seconds(5);
        const warmpool::soci_config config(cfg.database);
        warmpool::soci_pool pool(config, options);
        pool.warm_up();
        // target() is the connect string with its secrets hidden.
        std::fprintf(stderr, "metrics_endpoint: pool \"main\" on %s\n", pool.target().c_str());

        const warmpool::metrics_labels labels{{"db_system", config.backend()}};
        httplib::Server server;
        server.new_task_queue = [] {
            return new httplib::ThreadPool(2);
        };
        server.Get("/metrics", [&](const httplib::Request&, httplib::Response& reply) {
            try {
                reply.set_content(
                    warmpool::render_prometheus({warmpool::metrics_of(pool, "main", labels)}),
                    std::string(warmpool::prometheus_content_type));
            } catch (const std::exception& e) {
                reply.status = 500;
                reply.set_content(std::string("rendering the metrics failed: ") + e.what() + "\n",
                                  "text/plain; charset=utf-8");
            }
        });
        int port = cfg.port;
        if (port == 0) {
            port = server.bind_to_any_port("127.0.0.1");
        } else if (!server.bind_to_port("127.0.0.1", port)) {
            port = -1;
        }
        if (port <= 0) {
            std::fprintf(stderr, "metrics_endpoint: cannot listen on 127.0.0.1:%d: %s\n", cfg.port,
                         std::strerror(errno));
            return 1;
        }
        std::printf("%d\n", port); // first line: whoever started us learns the port
        std::fflush(stdout);
        std::fprintf(stderr, "metrics_endpoint: serving http://127.0.0.1:%d/metrics\n", port);

        std::thread http([&server] { server.listen_after_bind(); });
        std::atomic<bool> stopping{false};
        std::atomic<long> errors{0};
        std::vector<std::thread> workers;
        for (int i = 0; i < cfg.workers; ++i) {
            workers.emplace_back(worker, std::ref(pool), std::cref(stopping), i + 1,
                                 std::ref(errors));
        }

        // Until a signal, or the time limit.
        const auto started = std::chrono::steady_clock::now();
        int received = 0;
        while (received <= 0) {
            const timespec tick{1, 0};
            received = sigtimedwait(&stop_signals, nullptr, &tick);
            if (received <= 0 && cfg.seconds > 0 &&
                std::chrono::steady_clock::now() - started >= std::chrono::seconds(cfg.seconds)) {
                break;
            }
        }
        std::fprintf(stderr, "metrics_endpoint: %s; stopping\n",
                     received > 0 ? strsignal(received) : "time limit reached");
        stopping = true;
        for (auto& t : workers) {
            t.join();
        }
        server.stop();
        http.join();
        const auto st = pool.stats();
        std::fprintf(stderr, "metrics_endpoint: %llu leases, %llu connections opened, %ld errors\n",
                     static_cast<unsigned long long>(st.acquired),
                     static_cast<unsigned long long>(st.created), errors.load());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "metrics_endpoint: %s\n", e.what());
        return 1;
    }
}
