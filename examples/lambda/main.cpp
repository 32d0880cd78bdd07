// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// An AWS Lambda function as a custom runtime (provided.al2023): the process Lambda starts as
// `bootstrap`. It reads its settings, builds the pool, creates the ledger table, takes part in
// SnapStart if asked, and then serves invocations from the Runtime API until Lambda stops it.
// docs/lambda.md says how to build, package and deploy it.
//
//   config.hpp       the environment, read and checked once
//   runtime_api.hpp  the Runtime API client (libcurl)
//   ledger.hpp       the handler: one transaction per invocation, exactly once
//   cutoff.hpp       the deadline enforced on a server that does not answer at all
//   deadline_reporter.hpp  DeadlineExceeded sent for a handler stuck past the deadline
//   snapstart.hpp    the before-snapshot and after-restore steps
//   shutdown.hpp     SIGTERM and ending the process

#include "config.hpp"
#include "deadline_reporter.hpp"
#include "ledger.hpp"
#include "runtime_api.hpp"
#include "shutdown.hpp"
#include "snapstart.hpp"

#include <warmpool/soci.hpp>

#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace ledger_example;
using namespace std::chrono_literals;

/// Connection opens and closes are rare and worth a line each; checkouts are not, and neither
/// is each failed connect attempt (the error that ends the invocation carries the last one).
void log_pool_event(const warmpool::event& e) {
    const double ms = static_cast<double>(e.elapsed.count()) / 1000.0;
    switch (e.type) {
    case warmpool::event_type::connected:
        std::fprintf(stderr, "pool: connection %llu opened in %.1f ms\n",
                     static_cast<unsigned long long>(e.connection_id), ms);
        break;
    case warmpool::event_type::closed:
        if (e.reason != warmpool::close_reason::pool_closed) { // the shutdown line counts those
            const auto why = warmpool::to_string(e.reason);
            std::fprintf(stderr, "pool: connection %llu closed (%.*s)\n",
                         static_cast<unsigned long long>(e.connection_id),
                         static_cast<int>(why.size()), why.data());
        }
        break;
    case warmpool::event_type::fleet_sampled:
    case warmpool::event_type::fleet_sample_failed:
        // One in FLEET_SAMPLE_FRACTION invocations: the server's counts and the decision.
        std::fprintf(stderr, "fleet: %.*s (%.1f ms)\n", static_cast<int>(e.message.size()),
                     e.message.data(), ms);
        break;
    default:
        break;
    }
}

/// The pool's options for a Lambda function, each chosen on purpose.
warmpool::options pool_options(const config& cfg) {
    // The serverless preset: lazy connect, no background thread, a ping after every thaw,
    // transparent replacement of a dead connection, jittered connect retry. Each choice is
    // restated below with its reason.
    warmpool::options o = warmpool::options::single_slot();
    // One connection per invocation served at once: one, unless AWS_LAMBDA_MAX_CONCURRENCY
    // says otherwise.
    o.max_size = cfg.concurrency;
    // Not used here: init and each invocation call acquire_until() with their own deadline
    // (WARMPOOL_INIT_DEADLINE_MS, Lambda's deadline less the margin). It bounds an acquire()
    // added later, within Lambda's 10 s for init.
    o.acquire_timeout = 7s;
    // A connection given back less than 500 ms ago is handed out without a ping, so back-to-back
    // invocations pay nothing. Anything older (a thaw, a quiet spell) is pinged first, and idle
    // time counts wall-clock time too, so a freeze is noticed even if the monotonic clock
    // stood still during it.
    o.validation_window = 500ms;
    // A ping slower than this on a live connection means trouble: the connection is replaced.
    // Less time left before the deadline cuts it shorter.
    o.validation_timeout = 1s;
    // Never closed for idling: nothing runs while the process is frozen anyway, and after a
    // thaw the ping decides. Closing by idle time would only force reconnects the ping shows
    // are not needed.
    o.idle_timeout = 0ms;
    // Renewed about every 30 minutes (each 0-2.5 % sooner, at random), so a failover's new
    // address or a rotated password takes effect without a restart.
    o.max_lifetime = 30min;
    // Connect retries: the first after at most 5 ms, doubling up to 500 ms, as many as the
    // deadline allows. A server restarting is ridden out within one invocation when it can be.
    o.connect_backoff_base = 5ms;
    o.connect_backoff_cap = 500ms;
    o.connect_attempts = 0;
    // No housekeeping thread: its timer does not run while the process is frozen, and would
    // fire at a random moment after a thaw. The pool tidies up during acquire and give-back.
    o.background_housekeeping = false;
    // No reset at give-back: the handler leaves no session state behind (SET LOCAL ends with
    // the transaction, SET STATEMENT with the statement), so a round trip would buy nothing.
    o.reset_on_release = false;
    o.on_event = log_pool_event;
    // The fleet policy (FLEET_POLICY, on unless "off"; docs/fleet.md): the function's instances
    // share the server. A quarter of the invocations ask the server how full it is, after their
    // work, when the connection is given back (the last moment before a freeze); at 80 % of the
    // usable connections the instance closes its own, so that a cold start elsewhere can open
    // one, and reconnects at its next invocation. With FLEET_REAP_IDLE_MS it also ends the
    // zombies that reclaimed instances left behind. SQLite has no server to share.
    if (cfg.fleet && cfg.database.rfind("sqlite3://", 0) != 0) {
        o.fleet.enabled = true;
        o.fleet.sample_fraction = cfg.fleet_sample_fraction;
        o.fleet.close_above = cfg.fleet_close_above;
        o.fleet.reap = cfg.fleet_reap_idle.count() > 0;
        if (o.fleet.reap) {
            o.fleet.reap_idle_after = cfg.fleet_reap_idle;
            o.fleet.reap_max = cfg.fleet_reap_max;
        }
    }
    return o;
}

/// DATABASE, and with DATABASE_PASSWORD_FILE a connect_params hook that reads the file before
/// every connect: a rotated password is used from the next connect on (a thaw's reconnect, a
/// replaced connection, max_lifetime's renewal). What the hook returns never appears in the
/// pool's messages; read_password_file's errors name the path only.
warmpool::soci_config database_config(const config& cfg) {
    warmpool::soci_config sc(cfg.database);
    if (!cfg.password_file.empty()) {
        sc.connect_params = [file = cfg.password_file](const std::string& params) {
            return with_password(params, read_password_file(file));
        };
    }
    return sc;
}

/// The pool: built once per process at init, kept across invocations and through a snapshot.
/// It connects nothing yet. Throws std::invalid_argument for a malformed DATABASE.
warmpool::soci_pool& make_pool(const config& cfg) {
    static warmpool::soci_pool pool(database_config(cfg), pool_options(cfg));
    return pool;
}

void log_invocation(const invocation& inv, const outcome& out,
                    std::chrono::steady_clock::duration took, bool answered_already) {
    const double ms = std::chrono::duration<double, std::milli>(took).count();
    const std::string retried =
        out.transactions > 1 ? " transactions=" + std::to_string(out.transactions) : "";
    const std::string note = out.note.empty() ? "" : " (" + out.note + ")";
    if (answered_already) {
        const std::string what = out.ok ? out.result : out.error_type + ": " + out.error_message;
        std::fprintf(stderr,
                     "invocation %s finished in %.1f ms, after DeadlineExceeded was sent for it; "
                     "its outcome, not sent: %s\n",
                     inv.request_id.c_str(), ms, what.c_str());
    } else if (out.ok) {
        std::fprintf(stderr, "invocation %s ok %s in %.1f ms%s%s\n", inv.request_id.c_str(),
                     out.result.c_str(), ms, retried.c_str(), note.c_str());
    } else {
        std::fprintf(stderr, "invocation %s %s in %.1f ms%s: %s\n", inv.request_id.c_str(),
                     out.error_type.c_str(), ms, retried.c_str(), out.error_message.c_str());
    }
}

/// One loop: take an event, handle it, answer it; forever. Every invocation is answered, with
/// its result or an error: none is left to time out.
void serve(runtime_api& api, const ledger& handler, const config& cfg, warmpool::soci_pool& pool,
           deadline_reporter& reporter) {
    int failed_polls = 0;
    for (;;) {
        invocation inv;
        try {
            inv = api.next();
            failed_polls = 0;
        } catch (const runtime_api_error& e) {
            // A few tries, then give up (as the official runtimes do): a Runtime API that stops
            // answering means the environment is going away, and Lambda starts a new one.
            if (++failed_polls >= 3 || e.status() >= 500) {
                end_process(pool, 1, std::string("the Runtime API failed: ") + e.what());
            }
            std::fprintf(stderr, "runtime: %s; trying again\n", e.what());
            std::this_thread::sleep_for(100ms);
            continue;
        }
        const auto started = std::chrono::steady_clock::now();
        // Like the official runtimes, for the X-Ray SDK. Only with a single loop: setenv() while
        // another thread reads the environment (libpq does, when it connects) is a data race.
        if (cfg.concurrency == 1) {
            if (inv.trace_id.empty()) {
                unsetenv("_X_AMZN_TRACE_ID");
            } else {
                setenv("_X_AMZN_TRACE_ID", inv.trace_id.c_str(), 1);
            }
        }
        outcome out;
        std::shared_ptr<deadline_reporter::ticket> ticket;
        if (inv.deadline) {
            // Halfway through the margin: after the handler's own deadline, whose errors say
            // more, and before Lambda's (the margin is at least 20 ms: config.hpp).
            ticket = reporter.watch(inv.request_id, *inv.deadline - cfg.deadline_margin / 2);
            out = handler.handle(inv.request_id, inv.body, *inv.deadline - cfg.deadline_margin,
                                 [&ticket] { return ticket->begin_commit(); });
        } else {
            out.error_type = "InvalidInvocation";
            out.error_message =
                inv.deadline_header.empty()
                    ? "the Runtime API sent no Lambda-Runtime-Deadline-Ms header"
                    : "the Runtime API sent Lambda-Runtime-Deadline-Ms \"" +
                          inv.deadline_header.substr(0, 40) +
                          "\", which is not a time in Unix epoch milliseconds within 16 minutes "
                          "from now (Lambda's longest timeout is 15); nothing was done";
        }
        const bool ours = ticket == nullptr || ticket->claim();
        if (ticket != nullptr) {
            reporter.forget(ticket);
            if (!ours) {
                ticket->wait_until_answered(); // its POST first, then this loop's next GET
            }
        }
        try {
            if (!ours) {
                // The reporter answered at the deadline: a second answer would be refused.
            } else if (out.ok) {
                api.respond(inv.request_id, out.result);
            } else {
                api.fail(inv.request_id, {out.error_type, out.error_message});
            }
        } catch (const runtime_api_error& e) {
            // 500 means the Runtime API is in a state it cannot recover from: exit promptly.
            if (e.status() >= 500) {
                end_process(pool, 1, std::string("the Runtime API failed: ") + e.what());
            }
            std::fprintf(stderr, "runtime: %s\n", e.what());
        }
        log_invocation(inv, out, std::chrono::steady_clock::now() - started, !ours);
    }
}

/// Init failed: tell Lambda (it shows the error and retries the init) and exit non-zero. Only
/// the first report is sent (the init watchdog and main() may both get here).
void report_init_error(runtime_api& api, const std::string& type, const std::string& message) {
    static std::atomic<bool> reported{false};
    if (reported.exchange(true)) {
        return;
    }
    std::fprintf(stderr, "init: %s: %s\n", type.c_str(), message.c_str());
    try {
        api.init_error({type, message});
    } catch (const runtime_api_error& e) {
        std::fprintf(stderr, "runtime: %s\n", e.what());
    }
}

/// The init phase's deadline, for the one wait nothing else can cut short: a connect to a
/// server that accepts TCP connections but never answers, with a connect_timeout in DATABASE
/// longer than the time left (libpq and MariaDB Connector/C own the socket until it returns).
/// At the deadline this thread posts /runtime/init/error and ends the process, unless init
/// finished first. Lambda's own limit (10 s) would otherwise end the init with no message.
class init_watchdog {
public:
    init_watchdog(std::string endpoint, warmpool::soci_pool& pool,
                  std::chrono::system_clock::time_point deadline, std::chrono::milliseconds limit)
        : thread_([this, endpoint, &pool, deadline, limit] {
              std::unique_lock<std::mutex> lock(mutex_);
              if (done_.wait_until(lock, deadline, [this] { return finished_; })) {
                  return;
              }
              lock.unlock();
              runtime_api api(endpoint);
              report_init_error(api, "DeadlineExceeded",
                                "the init phase (connecting and creating the ledger table) did "
                                "not finish within WARMPOOL_INIT_DEADLINE_MS=" +
                                    std::to_string(limit.count()) +
                                    " ms; check that the database named by DATABASE answers, and "
                                    "that its connect_timeout is shorter than that");
              end_process(pool, 1, "init did not finish by its deadline");
          }) {}

    init_watchdog(const init_watchdog&) = delete;
    init_watchdog& operator=(const init_watchdog&) = delete;

    /// Init is over: the watchdog stops (before a snapshot, which must hold no such thread).
    void finish() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            finished_ = true;
        }
        done_.notify_all();
        thread_.join();
    }

    ~init_watchdog() {
        if (thread_.joinable()) {
            finish();
        }
    }

private:
    std::mutex mutex_;
    std::condition_variable done_;
    bool finished_ = false;
    std::thread thread_; // last: started once the members it uses exist
};

} // namespace

int main() {
    // The init phase's time counts from here, as Lambda's does from the process's start.
    const auto init_started = std::chrono::system_clock::now();
    // First, before any thread exists: every thread inherits the blocked signals.
    block_shutdown_signals();

    const char* endpoint = std::getenv("AWS_LAMBDA_RUNTIME_API");
    if (endpoint == nullptr || *endpoint == '\0') {
        std::fprintf(stderr, "bootstrap: AWS_LAMBDA_RUNTIME_API is not set; Lambda sets it to the "
                             "Runtime API's host:port (for a local run, start an emulator and "
                             "point it there)\n");
        return 1;
    }
    // Once per process, before any thread: curl_global_init() is not thread-safe.
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        std::fprintf(stderr, "bootstrap: curl_global_init failed\n");
        return 1;
    }
    runtime_api runtime(endpoint); // this thread's client, used by the first loop too

    config cfg;
    try {
        cfg = config::from_environment();
    } catch (const config_error& e) {
        report_init_error(runtime, "InvalidConfiguration", e.what());
        return 1;
    }
    warmpool::soci_pool* pool = nullptr;
    try {
        pool = &make_pool(cfg);
    } catch (const std::invalid_argument& e) {
        report_init_error(runtime, "InvalidConfiguration", std::string("DATABASE: ") + e.what());
        return 1;
    }
    // From here on the process ends through end_process(), which closes the pool first.
    watch_for_shutdown(*pool);

    // The init phase ends at init_deadline: the watchdog reports there; the pool's waits and
    // the table's creation stop a little before, so that their own, more precise, error is the
    // one reported when they can be stopped.
    const auto init_deadline = init_started + cfg.init_deadline;
    init_watchdog watchdog(endpoint, *pool, init_deadline, cfg.init_deadline);
    ledger handler(*pool);
    try {
        handler.prepare(init_deadline -
                        std::min<std::chrono::milliseconds>(200ms, cfg.init_deadline / 2));
    } catch (const warmpool::connect_error& e) {
        report_init_error(runtime, "warmpool.ConnectError", e.what());
        end_process(*pool, 1, "init failed");
    } catch (const warmpool::acquire_timeout& e) {
        report_init_error(runtime, "warmpool.AcquireTimeout", e.what());
        end_process(*pool, 1, "init failed");
    } catch (const std::exception& e) {
        report_init_error(runtime, "DatabaseError",
                          std::string("creating the ledger table failed: ") + e.what());
        end_process(*pool, 1, "init failed");
    }
    if (!cfg.snap_start) {
        watchdog.finish();
    }
    const warmpool::fleet_options& fleet = pool->get_options().fleet;
    std::string fleet_line = "fleet policy off";
    if (fleet.enabled) {
        char text[160];
        std::snprintf(text, sizeof text, "fleet policy on (sample %.2f, close at %.2f, %s)",
                      fleet.sample_fraction, fleet.close_above,
                      fleet.reap ? ("reap after " + std::to_string(fleet.reap_idle_after.count()) +
                                    " ms idle, at most " + std::to_string(fleet.reap_max))
                                       .c_str()
                                 : "no reaping");
        fleet_line = text;
    }
    std::fprintf(stderr, "init: %s, %u loop%s, deadline margin %lld ms, %s%s\n",
                 pool->target().c_str(), cfg.concurrency, cfg.concurrency == 1 ? "" : "s",
                 static_cast<long long>(cfg.deadline_margin.count()), fleet_line.c_str(),
                 cfg.snap_start ? ", SnapStart" : "");

    if (cfg.snap_start) {
        snapshot_steps steps;
        // The server's connection slots are freed now rather than at its idle timeout, and no
        // connection is frozen into the snapshot, where every restored copy would share it.
        steps.before_snapshot("close idle connections", [pool] { pool->close_idle(); });
        // Anything still open from before the snapshot is forgotten without a byte sent on its
        // socket (other copies hold the same one), and the jitter generator is reseeded so the
        // copies do not retry or expire connections in lockstep.
        steps.after_restore("forget connections from before the snapshot",
                            [pool] { pool->after_restore(); });
        // Your own steps go here, e.g.:
        //   steps.before_snapshot("flush the cache", [&] { cache.flush(); });
        //   steps.after_restore("reload the secret", [&] { secret = fetch_secret(); });
        try {
            steps.run_before_snapshot();
        } catch (const std::exception& e) {
            report_init_error(runtime, "SnapStart.BeforeSnapshotFailed", e.what());
            end_process(*pool, 1, "init failed");
        }
        watchdog.finish(); // the before-snapshot steps are part of init
        try {
            runtime.restore_next(); // the snapshot is taken while this waits
        } catch (const runtime_api_error& e) {
            end_process(*pool, 1, std::string("the Runtime API failed: ") + e.what());
        }
        try {
            steps.run_after_restore();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "restore: %s\n", e.what());
            try {
                runtime.restore_error({"SnapStart.AfterRestoreFailed", e.what()});
            } catch (const runtime_api_error& api_error) {
                std::fprintf(stderr, "runtime: %s\n", api_error.what());
            }
            end_process(*pool, 1, "the after-restore steps failed");
        }
    }

    // Started after a restore, like every thread below: none of them is in the snapshot.
    deadline_reporter reporter(endpoint, *pool);
    // The other loops, each with its own Runtime API client; this thread runs the first.
    std::vector<std::thread> loops;
    for (unsigned i = 1; i < cfg.concurrency; ++i) {
        loops.emplace_back([&] {
            try {
                runtime_api own(endpoint);
                serve(own, handler, cfg, *pool, reporter);
            } catch (const std::exception& e) {
                end_process(*pool, 1, std::string("a loop failed: ") + e.what());
            }
        });
    }
    serve(runtime, handler, cfg, *pool, reporter); // never returns
}
