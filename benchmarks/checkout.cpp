// Figures 1 and 3: the cost of one checkout cycle on one thread, nothing else in the way.
// SPDX-License-Identifier: BSL-1.0

#include "bench.hpp"
#include "competitors.hpp"

#include <warmpool/soci.hpp>

#include <soci/sqlite3/soci-sqlite3.h>

#include <cstdlib>
#include <stdexcept>

namespace bench {
namespace {

constexpr std::size_t pool_size = 4;

void expect(bool ok, const char* what) {
    if (!ok) {
        throw std::runtime_error(what);
    }
}

// warmpool, SOCI's pool and the mutex floor, interleaved; `label` names the backend.
template <class WarmPool>
void compare(context& ctx, const char* label, WarmPool& warm, soci::connection_pool& soci_pool) {
    std::mutex floor;
    const long n = ctx.iterations(200'000, 100);
    const int rounds = ctx.smoke ? 1 : std::max(3, static_cast<int>(15 * ctx.scale));
    const auto t = interleaved(rounds, n,
                               {
                                   [&](long k) {
                                       for (long i = 0; i < k; ++i) {
                                           auto lease = warm.acquire();
                                           keep(lease.get());
                                       }
                                   },
                                   [&](long k) {
                                       for (long i = 0; i < k; ++i) {
                                           const std::size_t pos = soci_pool.lease();
                                           keep(pos);
                                           soci_pool.give_back(pos);
                                       }
                                   },
                                   [&](long k) {
                                       for (long i = 0; i < k; ++i) {
                                           floor.lock();
                                           keep(floor);
                                           floor.unlock();
                                       }
                                   },
                               });
    const double w = median(t[0]), s = median(t[1]), m = median(t[2]);
    const double vs_soci = median_ratio(t[0], t[1]);
    const double vs_floor = median_ratio(t[0], t[2]);
    say("  %-8s warmpool %6.1f ns  soci %6.1f ns  mutex %5.1f ns  warmpool/soci %.2fx  "
        "warmpool/mutex %.2fx\n",
        label, w, s, m, vs_soci, vs_floor);
    record(ctx, "checkout", label, "warmpool", "time", w, "ns/op");
    record(ctx, "checkout", label, "soci::connection_pool", "time", s, "ns/op");
    record(ctx, "checkout", label, "std::mutex lock+unlock", "time", m, "ns/op");
    record(ctx, "checkout", label, "warmpool/soci", "ratio", vs_soci, "x");
    record(ctx, "checkout", label, "warmpool/mutex", "ratio", vs_floor, "x");
    expect(warm.stats().acquired > 0 && warm.stats().created == pool_size,
           "the warm pool opened connections during the cycle");
}

} // namespace

void checkout(context& ctx) {
    {
        auto warm = warm_pool<noop_pool>({}, pool_size);
        // SOCI's pool never looks at its sessions: leaving them unopened costs it nothing.
        soci::connection_pool soci_pool(pool_size);
        compare(ctx, "no-op", *warm, soci_pool);
    }
    {
        auto warm = warm_pool<warmpool::soci_pool>("sqlite3://db=:memory:", pool_size);
        soci::connection_pool soci_pool(pool_size);
        for (std::size_t i = 0; i < pool_size; ++i) {
            soci_pool.at(i).open(soci::sqlite3, "db=:memory:");
        }
        compare(ctx, "SQLite", *warm, soci_pool);
    }
}

namespace {
// The baseline of figure 3: what a serverless handler does without a pool.
soci::session& static_session() {
    static soci::session s(soci::sqlite3, "db=:memory:");
    return s;
}
} // namespace

void single_slot(context& ctx) {
    warmpool::soci_pool pool("sqlite3://db=:memory:", warmpool::options::single_slot());
    { auto first = pool.acquire(); } // the lazy connect happens before timing
    static_session();
    const long n = ctx.iterations(200'000, 100);
    const int rounds = ctx.smoke ? 1 : std::max(3, static_cast<int>(15 * ctx.scale));
    const auto t = interleaved(rounds, n,
                               {
                                   [&](long k) {
                                       for (long i = 0; i < k; ++i) {
                                           auto lease = pool.acquire();
                                           keep(lease.get());
                                       }
                                   },
                                   [&](long k) {
                                       for (long i = 0; i < k; ++i) {
                                           soci::session& s = static_session();
                                           keep(&s);
                                       }
                                   },
                               });
    const double w = median(t[0]), raw = median(t[1]);
    const double added = median_difference(t[0], t[1]);
    say("  single_slot %6.1f ns  static session %5.1f ns  added %6.1f ns\n", w, raw, added);
    record(ctx, "single_slot", "SQLite", "warmpool single_slot()", "time", w, "ns/op");
    record(ctx, "single_slot", "SQLite", "static soci::session", "time", raw, "ns/op");
    record(ctx, "single_slot", "SQLite", "added by warmpool", "difference", added, "ns");
    const auto st = pool.stats();
    expect(st.created == 1 && st.pings == 0, "the single slot reconnected or pinged while warm");
}

// For instruction counts, which unlike times repeat exactly from run to run:
//   valgrind --tool=callgrind --toggle-collect='*bench::profiled_cycles*'
//       warmpool_bench profile --subject=sqlite --iterations=100000
// (one command line); instructions per cycle = callgrind's total / iterations.
template <class F>
__attribute__((noinline)) void profiled_cycles(long n, F&& cycle) {
    for (long i = 0; i < n; ++i) {
        cycle();
    }
}

void profile(context& ctx) {
    const std::string subject = ctx.arg("subject", "noop");
    const long n = ctx.smoke ? 100 : std::atol(ctx.arg("iterations", "100000").c_str());
    if (subject == "noop") {
        auto warm = warm_pool<noop_pool>({}, pool_size);
        profiled_cycles(n, [&] {
            auto lease = warm->acquire();
            keep(lease.get());
        });
    } else if (subject == "sqlite") {
        auto warm = warm_pool<warmpool::soci_pool>("sqlite3://db=:memory:", pool_size);
        profiled_cycles(n, [&] {
            auto lease = warm->acquire();
            keep(lease.get());
        });
    } else if (subject == "soci") {
        soci::connection_pool soci_pool(pool_size);
        profiled_cycles(n, [&] {
            const std::size_t pos = soci_pool.lease();
            keep(pos);
            soci_pool.give_back(pos);
        });
    } else {
        throw std::invalid_argument("--subject must be noop, sqlite or soci");
    }
    say("  %ld checkout cycles of %s\n", n, subject.c_str());
}

} // namespace bench
