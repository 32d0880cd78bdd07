// Figures 4, 5 and 6: real servers on loopback, named by WARMPOOL_TEST_PG and WARMPOOL_TEST_MYSQL
// (scripts/servers.sh starts them and exports both). A missing variable skips its part with the
// reason printed and recorded.
// SPDX-License-Identifier: BSL-1.0

#include "bench.hpp"
#include "competitors.hpp"

#include <warmpool/soci.hpp>

#include <soci/mysql/soci-mysql.h>
#include <soci/postgresql/soci-postgresql.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <thread>

#include <signal.h>
#include <sys/types.h>

namespace bench {
namespace {

struct server {
    const char* label;    // PostgreSQL, MariaDB
    const char* variable; // the environment variable naming it
    const soci::backend_factory& factory;
    std::string connect_string; // "backend://params"; empty when the variable is not set

    std::string params() const { return connect_string.substr(connect_string.find("://") + 3); }
    bool postgresql() const { return &factory == &soci::postgresql; }
};

std::vector<server> servers(context& ctx, const char* figure) {
    std::vector<server> all{{"PostgreSQL", "WARMPOOL_TEST_PG", soci::postgresql, {}},
                            {"MariaDB", "WARMPOOL_TEST_MYSQL", soci::mysql, {}}};
    std::vector<server> found;
    for (auto& s : all) {
        const char* v = std::getenv(s.variable);
        if (v == nullptr || *v == '\0') {
            say("  %s skipped: %s is not set (scripts/servers.sh starts the servers and sets it)\n",
                s.label, s.variable);
            record(ctx, figure, s.label, "skipped", "skipped", 0,
                   std::string(s.variable) + " not set");
            continue;
        }
        s.connect_string = v;
        found.push_back(s);
    }
    return found;
}

void expect(bool ok, const std::string& what) {
    if (!ok) {
        throw std::runtime_error(what);
    }
}

// How many operations make a batch of about `target` for something costing `per_op_ns`.
long batch(const context& ctx, double per_op_ns, double target_ms) {
    if (ctx.smoke) {
        return 1;
    }
    return std::max(2L, static_cast<long>(target_ms * 1e6 * ctx.scale / per_op_ns));
}

template <class F>
double once_ns(F&& f) {
    const auto start = wall::now();
    f();
    return seconds_since(start) * 1e9;
}

void select_one(soci::session& s) {
    int one = 0;
    s << "SELECT 1", soci::into(one);
    keep(one);
}

} // namespace

void reuse(context& ctx) {
    for (const server& srv : servers(ctx, "reuse")) {
        auto pool = warm_pool<warmpool::soci_pool>(srv.connect_string, 1);
        const auto pooled = [&](long k) {
            for (long i = 0; i < k; ++i) {
                auto sql = pool->acquire();
                select_one(*sql);
            }
        };
        const auto reconnect = [&](long k) {
            for (long i = 0; i < k; ++i) {
                soci::session sql(srv.factory, srv.params());
                select_one(sql);
            }
        };
        const long n_pooled = batch(ctx, once_ns([&] { pooled(20); }) / 20, 40);
        const long n_reconnect = batch(ctx, once_ns([&] { reconnect(2); }) / 2, 150);
        const int rounds = ctx.smoke ? 1 : 5;
        const auto t = interleaved(rounds, {n_pooled, n_reconnect}, {pooled, reconnect});
        const double p = median(t[0]), r = median(t[1]);
        const double speedup = median_ratio(t[1], t[0]);
        say("  %-10s pooled %8.1f us  reconnect %9.1f us  reconnect/pooled %.0fx\n", srv.label,
            p / 1e3, r / 1e3, speedup);
        record(ctx, "reuse", srv.label, "warmpool: acquire + SELECT 1 + give back", "time", p / 1e3,
               "us/op");
        record(ctx, "reuse", srv.label, "open + SELECT 1 + close", "time", r / 1e3, "us/op");
        record(ctx, "reuse", srv.label, "reconnect/pooled", "ratio", speedup, "x");
        expect(pool->stats().created == 1, "the pool reconnected while warm");
    }
}

namespace {

// The server-side id of the session's connection.
long long session_id(soci::session& s, bool postgresql) {
    long long id = 0;
    if (postgresql) {
        int pid = 0;
        s << "SELECT pg_backend_pid()", soci::into(pid);
        id = pid;
    } else {
        s << "SELECT CAST(CONNECTION_ID() AS SIGNED)", soci::into(id);
    }
    return id;
}

// Drops connection `id` from the server side and waits until the server has let go of it, so
// the client's socket shows the close when the pool next looks.
void drop(soci::session& admin, bool postgresql, long long id) {
    const std::string sid = std::to_string(id);
    if (postgresql) {
        admin << "SELECT count(pg_terminate_backend(" + sid + "))";
    } else {
        admin << "KILL " + sid;
    }
    for (int i = 0; i < 5000; ++i) {
        long long left = 0;
        if (postgresql) {
            admin << "SELECT count(*) FROM pg_stat_activity WHERE pid = " + sid, soci::into(left);
        } else {
            admin << "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = " + sid,
                soci::into(left);
        }
        // PostgreSQL drops the row before its backend process exits and closes the socket;
        // the server runs on this machine, so wait for the process itself.
        if (left == 0 &&
            (!postgresql || (::kill(static_cast<pid_t>(id), 0) != 0 && errno == ESRCH))) {
            return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    throw std::runtime_error("connection " + sid + " was still there 5 s after it was dropped");
}

} // namespace

void thaw(context& ctx) {
    for (const server& srv : servers(ctx, "thaw")) {
        // Three pools of one connection, opened before timing.
        auto warm = warm_pool<warmpool::soci_pool>(srv.connect_string, 1);
        warmpool::options quiet; // no socket poll on a connection idle less than a second
        quiet.socket_check_after = std::chrono::milliseconds(1000);
        auto unpolled = warm_pool<warmpool::soci_pool>(srv.connect_string, 1, quiet);
        // A validation window of 0 treats every checkout as one after an idle period: one ping
        // each, without sleeping 500 ms before each.
        warmpool::options eager;
        eager.validation_window = std::chrono::milliseconds(0);
        auto pinged = warm_pool<warmpool::soci_pool>(srv.connect_string, 1, eager);

        const auto cycle = [](warmpool::soci_pool& pool) {
            return [&pool](long k) {
                for (long i = 0; i < k; ++i) {
                    auto sql = pool.acquire();
                    keep(sql.get());
                }
            };
        };
        const long n_warm = batch(ctx, once_ns([&] { cycle (*warm)(100); }) / 100, 20);
        const long n_unpolled = batch(ctx, once_ns([&] { cycle (*unpolled)(100); }) / 100, 20);
        const long n_ping = batch(ctx, once_ns([&] { cycle (*pinged)(20); }) / 20, 40);
        const int rounds = ctx.smoke ? 1 : 7;
        const auto t = interleaved(rounds, {n_warm, n_unpolled, n_ping},
                                   {cycle(*warm), cycle(*unpolled), cycle(*pinged)});

        // After a server-side close: one reconnect each, timed one by one.
        soci::session admin(srv.factory, srv.params());
        std::vector<double> reconnects;
        const int drops = ctx.smoke ? 1 : 10;
        for (int i = 0; i < drops; ++i) {
            long long id = 0;
            {
                auto sql = warm->acquire();
                id = session_id(*sql, srv.postgresql());
            }
            drop(admin, srv.postgresql(), id);
            reconnects.push_back(once_ns([&] {
                auto sql = warm->acquire();
                keep(sql.get());
            }));
        }
        const auto st = warm->stats();
        expect(st.validation_failures == static_cast<std::uint64_t>(drops) &&
                   st.created == static_cast<std::uint64_t>(drops) + 1,
               std::string(srv.label) +
                   ": the dropped connection was not noticed and replaced "
                   "on checkout (validation_failures " +
                   std::to_string(st.validation_failures) + ", created " +
                   std::to_string(st.created) + ")");
        expect(pinged->stats().pings > 0, "validation_window = 0 did not ping");

        const double w = median(t[0]), u = median(t[1]), p = median(t[2]);
        const double rc = median(reconnects);
        say("  %-10s warm %6.2f us (no poll %5.3f us)  ping %7.1f us (%.0fx)  reconnect %8.1f us "
            "(%.0fx)\n",
            srv.label, w / 1e3, u / 1e3, p / 1e3, median_ratio(t[2], t[0]), rc / 1e3, rc / w);
        record(ctx, "thaw", srv.label, "warm acquire (defaults)", "time", w / 1e3, "us/op");
        record(ctx, "thaw", srv.label, "warm acquire, socket_check_after = 1 s", "time", u / 1e3,
               "us/op");
        record(ctx, "thaw", srv.label, "after the validation window (one ping)", "time", p / 1e3,
               "us/op");
        record(ctx, "thaw", srv.label, "after a server-side close (one reconnect)", "time",
               rc / 1e3, "us/op");
        record(ctx, "thaw", srv.label, "ping/warm", "ratio", median_ratio(t[2], t[0]), "x");
        record(ctx, "thaw", srv.label, "reconnect/warm", "ratio", rc / w, "x");
    }
}

void pgbench_like(context& ctx) {
    const char* v = std::getenv("WARMPOOL_TEST_PG");
    if (v == nullptr || *v == '\0') {
        say("  skipped: WARMPOOL_TEST_PG is not set (scripts/servers.sh sets it)\n");
        record(ctx, "pgbench", "PostgreSQL", "skipped", "skipped", 0, "WARMPOOL_TEST_PG not set");
        return;
    }
    const std::string cs = v;
    long long scale = 0;
    try {
        soci::session s(soci::postgresql, cs.substr(cs.find("://") + 3));
        s << "SELECT count(*) FROM pgbench_branches", soci::into(scale);
    } catch (const std::exception&) {
        scale = 0;
    }
    if (scale == 0) {
        say("  skipped: no pgbench tables; initialise them with pgbench -i -s 1\n");
        record(ctx, "pgbench", "PostgreSQL", "skipped", "skipped", 0, "no pgbench tables");
        return;
    }
    const double seconds = ctx.smoke ? 0.2 : std::atof(ctx.arg("seconds", "5").c_str());
    std::vector<int> clients;
    for (const char* p = ctx.arg("clients", "1,8").c_str(); *p != '\0';) {
        char* end = nullptr;
        clients.push_back(static_cast<int>(std::strtol(p, &end, 10)));
        p = (*end == ',') ? end + 1 : end;
    }
    // Transactions per second of n threads for `slice` seconds, each taking a connection from
    // `pool` per transaction, or (pool == nullptr) using its own session from `own`.
    const auto measure = [&](int n, warmpool::soci_pool* pool,
                             std::vector<std::unique_ptr<soci::session>>& own, double slice) {
        std::atomic<bool> stop{false}, go{false};
        std::atomic<long long> done{0};
        std::atomic<int> ready{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < n; ++t) {
            threads.emplace_back([&, t] {
                // pgbench -S: one SELECT of a random account per transaction, autocommit.
                thread_local std::minstd_rand rng(static_cast<unsigned>(12345 + t));
                std::uniform_int_distribution<int> pick(1, static_cast<int>(100000 * scale));
                const auto one = [&](soci::session& sql) {
                    int aid = pick(rng), abalance = 0;
                    sql << "SELECT abalance FROM pgbench_accounts WHERE aid = :aid", soci::use(aid),
                        soci::into(abalance);
                    keep(abalance);
                };
                ++ready;
                while (!go.load()) {
                    std::this_thread::yield();
                }
                long long mine = 0;
                while (!stop.load(std::memory_order_relaxed)) {
                    if (pool != nullptr) {
                        auto sql = pool->acquire();
                        one(*sql);
                    } else {
                        one(*own[static_cast<std::size_t>(t)]);
                    }
                    ++mine;
                }
                done += mine;
            });
        }
        while (ready.load() < n) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        const auto start = wall::now();
        go = true;
        std::this_thread::sleep_for(std::chrono::duration<double>(slice));
        stop = true;
        const double elapsed = seconds_since(start);
        for (auto& th : threads) {
            th.join();
        }
        return static_cast<double>(done.load()) / elapsed;
    };
    for (const int n : clients) {
        auto pool = warm_pool<warmpool::soci_pool>(cs, static_cast<std::size_t>(n));
        std::vector<std::unique_ptr<soci::session>> own; // the baseline: a session per thread
        for (int t = 0; t < n; ++t) {
            own.push_back(
                std::make_unique<soci::session>(soci::postgresql, cs.substr(cs.find("://") + 3)));
        }
        // Interleaved slices, as in the other figures: `seconds` of each in total.
        const int rounds = ctx.smoke ? 1 : 10;
        const double slice = seconds / rounds;
        std::vector<double> pooled, unpooled;
        for (int r = 0; r < rounds; ++r) {
            if (r % 2 == 0) {
                pooled.push_back(measure(n, pool.get(), own, slice));
                unpooled.push_back(measure(n, nullptr, own, slice));
            } else {
                unpooled.push_back(measure(n, nullptr, own, slice));
                pooled.push_back(measure(n, pool.get(), own, slice));
            }
        }
        const double p = median(pooled), u = median(unpooled);
        const double ratio = median_ratio(pooled, unpooled);
        say("  clients=%d  warmpool + SOCI %.0f tps, a SOCI session per thread (no pool) %.0f tps "
            "(%.2fx)\n",
            n, p, u, ratio);
        const std::string label = ctx.arg("case", "clients=" + std::to_string(n));
        record(ctx, "pgbench", label, "warmpool + SOCI", "tps", p, "tx/s");
        record(ctx, "pgbench", label, "SOCI, a session per thread", "tps", u, "tx/s");
        record(ctx, "pgbench", label, "pooled/unpooled", "ratio", ratio, "x");
    }
}

} // namespace bench
