// warmpool's benchmark driver: shared utilities.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace bench {

/// What every scenario gets: how hard to try, and where to put its numbers.
struct context {
    bool smoke = false;       // a tiny amount of everything, numbers not meant to be read
    double scale = 1.0;       // multiplies iteration counts and durations (--scale)
    std::FILE* out = nullptr; // results, one tab-separated row each (see record())
    std::map<std::string, std::string> args; // --name=value options not known to main()

    /// n scaled, at least `floor`; in smoke mode `smoke_n`.
    long iterations(long n, long smoke_n = 1, long floor = 1) const {
        if (smoke) {
            return smoke_n;
        }
        return std::max(floor, static_cast<long>(static_cast<double>(n) * scale));
    }

    std::string arg(const std::string& name, const std::string& fallback) const {
        const auto it = args.find(name);
        return it == args.end() ? fallback : it->second;
    }
};

/// One result row: figure, case, subject, metric, value, unit. scripts/bench turns the rows
/// into docs/benchmarks/results.md and the plots.
void record(const context& ctx, const std::string& figure, const std::string& what,
            const std::string& subject, const std::string& metric, double value,
            const std::string& unit);

/// Keeps the optimiser from deleting work whose result is otherwise unused.
template <class T>
inline void keep(T const& value) {
    asm volatile("" : : "r,m"(value) : "memory");
}

inline double median(std::vector<double> v) {
    if (v.empty()) {
        return 0;
    }
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

using wall = std::chrono::steady_clock;

inline double seconds_since(wall::time_point start) {
    return std::chrono::duration<double>(wall::now() - start).count();
}

/// Nanoseconds per call of `body`, over `n` calls.
template <class F>
inline double ns_per_op(long n, F&& body) {
    const auto start = wall::now();
    for (long i = 0; i < n; ++i) {
        body();
    }
    return seconds_since(start) * 1e9 / static_cast<double>(n);
}

/// Interleaved rounds: every round times each subject once, in turn, so load from other
/// processes on a shared machine falls on all of them alike; per-round ratios are then taken
/// between subjects of the same round. Returns times[subject][round] in ns per op.
std::vector<std::vector<double>> interleaved(int rounds, long per_round,
                                             const std::vector<std::function<void(long)>>& runs);

/// As above, with a different number of operations per round for each subject (for subjects
/// whose costs differ by orders of magnitude).
std::vector<std::vector<double>> interleaved(int rounds, const std::vector<long>& per_round,
                                             const std::vector<std::function<void(long)>>& runs);

/// Median over rounds of a[r] / b[r].
double median_ratio(const std::vector<double>& a, const std::vector<double>& b);

/// Median over rounds of a[r] - b[r].
double median_difference(const std::vector<double>& a, const std::vector<double>& b);

/// A cheap timestamp for per-operation latencies: the TSC where there is one (a few ns, against
/// ~26 ns for steady_clock on these virtual machines, so timing every acquire disturbs less).
struct ticks {
    static std::uint64_t now() noexcept {
#if defined(__x86_64__) || defined(__i386__)
        return __rdtsc();
#else
        return static_cast<std::uint64_t>(wall::now().time_since_epoch().count());
#endif
    }
    /// Nanoseconds per tick, measured once against steady_clock.
    static double ns_per_tick();
};

/// The value at quantile q (0..1) of samples, which it reorders.
double quantile(std::vector<std::uint64_t>& samples, double q);

/// A scenario: name, what it measures, and the function that runs it.
struct scenario {
    const char* name;
    const char* about;
    void (*run)(context&);
};

void checkout(context&);
void contention(context&);
void single_slot(context&);
void reuse(context&);
void thaw(context&);
void pgbench_like(context&);
void profile(context&);

/// Prints to stdout, flushed, so progress shows as it happens under scripts/bench's tee.
void say(const char* format, ...) __attribute__((format(printf, 1, 2)));

} // namespace bench
