// Figure 2: many threads over a small pool. Throughput, and how long each acquire waited.
// SPDX-License-Identifier: BSL-1.0

#include "bench.hpp"
#include "competitors.hpp"

#include <array>
#include <atomic>
#include <thread>

namespace bench {
namespace {

// Log-linear histogram of ticks (32 sub-buckets per power of two, ~3% resolution): recording
// costs a few instructions and no allocation, so a thread can time every acquire it makes.
class histogram {
public:
    void add(std::uint64_t v) noexcept {
        ++counts_[index(v)];
        max_ = std::max(max_, v);
        ++n_;
    }
    void merge(const histogram& o) noexcept {
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            counts_[i] += o.counts_[i];
        }
        max_ = std::max(max_, o.max_);
        n_ += o.n_;
    }
    std::uint64_t count() const noexcept { return n_; }
    double max() const noexcept { return static_cast<double>(max_); }
    double quantile(double q) const noexcept {
        if (n_ == 0) {
            return 0;
        }
        const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(n_ - 1));
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            seen += counts_[i];
            if (seen > rank) {
                return std::min(middle(i), max());
            }
        }
        return max();
    }

private:
    static constexpr int sub_bits = 5;
    static std::size_t index(std::uint64_t v) noexcept {
        if (v < (1u << sub_bits)) {
            return static_cast<std::size_t>(v);
        }
        const int e = 63 - __builtin_clzll(v);
        const auto sub = (v >> (e - sub_bits)) & ((1u << sub_bits) - 1);
        return static_cast<std::size_t>((e - sub_bits + 1) << sub_bits) + sub;
    }
    static double middle(std::size_t i) noexcept {
        if (i < (1u << sub_bits)) {
            return static_cast<double>(i);
        }
        const int e = static_cast<int>(i >> sub_bits) + sub_bits - 1;
        const auto sub = i & ((1u << sub_bits) - 1);
        const double low = static_cast<double>(((1ull << sub_bits) + sub) << (e - sub_bits));
        return low + static_cast<double>(1ull << (e - sub_bits)) / 2;
    }
    std::array<std::uint64_t, 64 << sub_bits> counts_{};
    std::uint64_t max_ = 0;
    std::uint64_t n_ = 0;
};

struct outcome {
    double throughput = 0; // completed checkouts per second, all threads
    histogram waits;       // ticks spent in acquire()
    double fairness = 0;   // fewest checkouts of one thread / most of one thread
};

// The fixed work done while holding the connection: enough to make a holder visible to others.
inline void spin(int n) {
    for (int i = 0; i < n; ++i) {
        keep(i);
    }
}

template <class Competitor>
outcome run(Competitor c, int threads, int work, std::chrono::milliseconds duration) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false}, stop{false};
    std::vector<histogram> waits(static_cast<std::size_t>(threads));
    std::vector<std::uint64_t> ops(static_cast<std::size_t>(threads));
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            histogram& h = waits[static_cast<std::size_t>(t)];
            std::uint64_t done = 0;
            ready.fetch_add(1);
            while (!go.load(std::memory_order_acquire)) {
                std::this_thread::yield();
            }
            while (!stop.load(std::memory_order_relaxed)) {
                const auto t0 = ticks::now();
                auto handle = c.acquire();
                const auto t1 = ticks::now();
                spin(work);
                c.release(handle);
                h.add(t1 - t0);
                ++done;
            }
            ops[static_cast<std::size_t>(t)] = done;
        });
    }
    while (ready.load() < threads) {
        std::this_thread::yield();
    }
    const auto start = wall::now();
    go.store(true, std::memory_order_release);
    std::this_thread::sleep_for(duration);
    stop.store(true);
    for (auto& th : pool) {
        th.join();
    }
    const double elapsed = seconds_since(start);
    outcome o;
    std::uint64_t total = 0, least = UINT64_MAX, most = 0;
    for (int t = 0; t < threads; ++t) {
        o.waits.merge(waits[static_cast<std::size_t>(t)]);
        total += ops[static_cast<std::size_t>(t)];
        least = std::min(least, ops[static_cast<std::size_t>(t)]);
        most = std::max(most, ops[static_cast<std::size_t>(t)]);
    }
    o.throughput = static_cast<double>(total) / elapsed;
    o.fairness = most == 0 ? 0 : static_cast<double>(least) / static_cast<double>(most);
    return o;
}

} // namespace

void contention(context& ctx) {
    const double tick_ns = ticks::ns_per_tick();
    const std::chrono::milliseconds duration{
        ctx.smoke ? 5 : std::max(20L, static_cast<long>(200 * ctx.scale))};
    const int reps = ctx.smoke ? 1 : 3;
    const int spin_iterations = 100;
    {
        const long n = 1'000'000;
        const double ns = ns_per_op(n, [&] { spin(spin_iterations); });
        say("  work 'spin' = %d iterations = %.0f ns; tick = %.3f ns\n", spin_iterations, ns,
            tick_ns);
        record(ctx, "contention", "spin", "work", "time", ns, "ns");
    }
    for (const int work : {0, spin_iterations}) {
        for (const std::size_t size : {1, 4, 16}) {
            for (const int threads : {1, 2, 4, 8, 16}) {
                auto warm = warm_pool<noop_pool>({}, size);
                soci::connection_pool soci_pool(size);
                std::vector<double> w_tp, s_tp, ratios;
                histogram w_waits, s_waits;
                std::vector<double> w_fair, s_fair;
                for (int r = 0; r < reps; ++r) {
                    // Alternate which goes first, as in the single-thread figures.
                    outcome w, s;
                    if (r % 2 == 0) {
                        w = run(warmpool_competitor<noop_pool>{*warm}, threads, work, duration);
                        s = run(soci_competitor{soci_pool}, threads, work, duration);
                    } else {
                        s = run(soci_competitor{soci_pool}, threads, work, duration);
                        w = run(warmpool_competitor<noop_pool>{*warm}, threads, work, duration);
                    }
                    w_tp.push_back(w.throughput);
                    s_tp.push_back(s.throughput);
                    ratios.push_back(w.throughput / s.throughput);
                    w_waits.merge(w.waits);
                    s_waits.merge(s.waits);
                    w_fair.push_back(w.fairness);
                    s_fair.push_back(s.fairness);
                }
                char label[96];
                std::snprintf(label, sizeof label, "pool=%zu threads=%d work=%s", size, threads,
                              work == 0 ? "none" : "spin");
                const auto emit = [&](const char* who, const std::vector<double>& tp,
                                      const histogram& h, const std::vector<double>& fair) {
                    record(ctx, "contention", label, who, "throughput", median(tp), "ops/s");
                    record(ctx, "contention", label, who, "p50", h.quantile(0.50) * tick_ns, "ns");
                    record(ctx, "contention", label, who, "p99", h.quantile(0.99) * tick_ns, "ns");
                    record(ctx, "contention", label, who, "max", h.max() * tick_ns, "ns");
                    record(ctx, "contention", label, who, "fairness", median(fair), "min/max");
                };
                emit("warmpool", w_tp, w_waits, w_fair);
                emit("soci::connection_pool", s_tp, s_waits, s_fair);
                const double tp_ratio = median(ratios);
                const double p99_w = w_waits.quantile(0.99), p99_s = s_waits.quantile(0.99);
                record(ctx, "contention", label, "warmpool/soci", "throughput", tp_ratio, "x");
                record(ctx, "contention", label, "warmpool/soci", "p99", p99_w / p99_s, "x");
                say("  %-32s warmpool %6.2f M/s p99 %8.0f ns | soci %6.2f M/s p99 %8.0f ns | "
                    "tput %.2fx\n",
                    label, median(w_tp) / 1e6, p99_w * tick_ns, median(s_tp) / 1e6, p99_s * tick_ns,
                    tp_ratio);
            }
        }
    }
}

} // namespace bench
