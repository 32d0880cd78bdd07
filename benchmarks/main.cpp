// warmpool's benchmark driver: one program, scenarios by name.
//
//   warmpool_bench [--smoke] [--scale=X] [--out=FILE] [--name=value ...] [scenario ...]
//
// With no scenario named it runs every one. Results go to FILE (default stdout) as tab-separated
// rows: figure, case, subject, metric, value, unit. scripts/bench runs it and formats them.
// SPDX-License-Identifier: BSL-1.0

#include "bench.hpp"

#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>

namespace bench {

void say(const char* format, ...) {
    std::va_list args;
    va_start(args, format);
    std::vprintf(format, args);
    va_end(args);
    std::fflush(stdout);
}

void record(const context& ctx, const std::string& figure, const std::string& what,
            const std::string& subject, const std::string& metric, double value,
            const std::string& unit) {
    std::fprintf(ctx.out, "%s\t%s\t%s\t%s\t%.6g\t%s\n", figure.c_str(), what.c_str(),
                 subject.c_str(), metric.c_str(), value, unit.c_str());
    std::fflush(ctx.out);
}

std::vector<std::vector<double>> interleaved(int rounds, const std::vector<long>& per_round,
                                             const std::vector<std::function<void(long)>>& runs) {
    std::vector<std::vector<double>> times(runs.size());
    // One untimed pass: caches, branch predictors and lazily opened things warm up.
    for (std::size_t i = 0; i < runs.size(); ++i) {
        runs[i](std::max(1L, per_round[i] / 10));
    }
    for (int r = 0; r < rounds; ++r) {
        for (std::size_t i = 0; i < runs.size(); ++i) {
            // Alternate the order so neither subject always runs right after the other.
            const std::size_t k = (r % 2 == 0) ? i : runs.size() - 1 - i;
            const auto start = wall::now();
            runs[k](per_round[k]);
            times[k].push_back(seconds_since(start) * 1e9 / static_cast<double>(per_round[k]));
        }
    }
    return times;
}

std::vector<std::vector<double>> interleaved(int rounds, long per_round,
                                             const std::vector<std::function<void(long)>>& runs) {
    return interleaved(rounds, std::vector<long>(runs.size(), per_round), runs);
}

double median_ratio(const std::vector<double>& a, const std::vector<double>& b) {
    std::vector<double> r;
    for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
        r.push_back(a[i] / b[i]);
    }
    return median(r);
}

double median_difference(const std::vector<double>& a, const std::vector<double>& b) {
    std::vector<double> r;
    for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
        r.push_back(a[i] - b[i]);
    }
    return median(r);
}

double ticks::ns_per_tick() {
    static const double value = [] {
        const auto t0 = wall::now();
        const auto c0 = now();
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        const auto c1 = now();
        const double ns = std::chrono::duration<double, std::nano>(wall::now() - t0).count();
        return ns / static_cast<double>(c1 - c0);
    }();
    return value;
}

double quantile(std::vector<std::uint64_t>& samples, double q) {
    if (samples.empty()) {
        return 0;
    }
    auto k = static_cast<std::size_t>(q * static_cast<double>(samples.size() - 1) + 0.5);
    k = std::min(k, samples.size() - 1);
    std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(k),
                     samples.end());
    return static_cast<double>(samples[k]);
}

} // namespace bench

namespace {

const bench::scenario scenarios[] = {
    {"checkout", "1: acquire + give back, one thread, pool of 4 (no-op traits, SQLite)",
     bench::checkout},
    {"contention", "2: 1-16 threads over pools of 1, 4, 16: throughput and wait percentiles",
     bench::contention},
    {"single_slot", "3: options::single_slot() warm invocation vs a static soci::session",
     bench::single_slot},
    {"reuse", "4: pooled SELECT 1 vs connect + SELECT 1 + close (PostgreSQL, MariaDB)",
     bench::reuse},
    {"thaw", "5: first acquire after the validation window / after the server dropped it",
     bench::thaw},
    {"pgbench_like", "6: pgbench -S's transaction through warmpool + SOCI (--clients=1,8)",
     bench::pgbench_like},
    {"profile", "cycles of one --subject (noop, sqlite, soci) for callgrind; not run by default",
     bench::profile},
};

int usage(int status) {
    std::printf("usage: warmpool_bench [--smoke] [--scale=X] [--out=FILE] [--name=value ...] "
                "[scenario ...]\nscenarios:\n");
    for (const auto& s : scenarios) {
        std::printf("  %-13s %s\n", s.name, s.about);
    }
    return status;
}

} // namespace

int main(int argc, char** argv) {
    bench::context ctx;
    ctx.out = stdout;
    std::vector<const bench::scenario*> chosen;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--smoke") {
            ctx.smoke = true;
        } else if (a == "-h" || a == "--help") {
            return usage(0);
        } else if (a.rfind("--", 0) == 0) {
            const auto eq = a.find('=');
            if (eq == std::string::npos) {
                std::fprintf(stderr, "warmpool_bench: %s needs =value\n", a.c_str());
                return usage(2);
            }
            const std::string name = a.substr(2, eq - 2);
            const std::string value = a.substr(eq + 1);
            if (name == "out") {
                ctx.out = std::fopen(value.c_str(), "a");
                if (ctx.out == nullptr) {
                    std::fprintf(stderr, "warmpool_bench: cannot open %s: %s\n", value.c_str(),
                                 std::strerror(errno));
                    return 2;
                }
            } else if (name == "scale") {
                ctx.scale = std::atof(value.c_str());
            } else {
                ctx.args[name] = value;
            }
        } else {
            const bench::scenario* found = nullptr;
            for (const auto& s : scenarios) {
                if (a == s.name) {
                    found = &s;
                }
            }
            if (found == nullptr) {
                std::fprintf(stderr, "warmpool_bench: no scenario %s\n", a.c_str());
                return usage(2);
            }
            chosen.push_back(found);
        }
    }
    if (chosen.empty()) {
        for (const auto& s : scenarios) {
            if (std::strcmp(s.name, "profile") != 0) {
                chosen.push_back(&s);
            }
        }
    }
    int failures = 0;
    for (const bench::scenario* s : chosen) {
        bench::say("== %s: %s\n", s->name, s->about);
        try {
            s->run(ctx);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "warmpool_bench: %s failed: %s\n", s->name, e.what());
            ++failures;
        }
    }
    if (ctx.out != stdout) {
        std::fclose(ctx.out);
    }
    return failures == 0 ? 0 : 1;
}
