// One version of warmpool's checkout cycle, for checkout_cost.sh: compiled once per version with
// that version's include/ first on the path, its namespace renamed by WARMPOOL_AB_NAMESPACE and
// its entry points named by WARMPOOL_AB_RUN and WARMPOOL_AB_PROFILE, so that several versions
// link into one program and can be timed in alternating rounds.
// (#include <...> names are not macro-expanded, so the rename leaves the paths alone.)
#define warmpool WARMPOOL_AB_NAMESPACE
#include <warmpool/warmpool.hpp>
#undef warmpool

#include <chrono>
#include <memory>
#include <string>

namespace {

// Every check returns at once: what is left is the pool (as benchmarks/competitors.hpp).
struct noop_traits {
    struct connection {
        int uses = 0;
    };
    struct config {};

    static std::unique_ptr<connection> connect(const config&, std::chrono::milliseconds) {
        return std::make_unique<connection>();
    }
    static bool is_broken(connection&) noexcept { return false; }
    static bool peer_closed(connection&) noexcept { return false; }
    static bool ping(connection&, std::chrono::milliseconds) noexcept { return true; }
    static bool in_transaction(connection&) noexcept { return false; }
    static bool rollback(connection&, std::chrono::milliseconds) noexcept { return true; }
    static std::string describe(const config&) { return "noop"; }
};

using pool_type = WARMPOOL_AB_NAMESPACE::basic_pool<noop_traits>;

pool_type& warm_pool() {
    static pool_type* pool = [] {
        WARMPOOL_AB_NAMESPACE::options o;
        o.max_size = 4;
        o.min_idle = 4;
        auto* p = new pool_type(noop_traits::config{}, o);
        p->warm_up();
        return p;
    }();
    return *pool;
}

template <class T>
void keep(const T& value) {
    asm volatile("" : : "r,m"(value) : "memory");
}

} // namespace

/// Nanoseconds per acquire + give-back over n cycles.
double WARMPOOL_AB_RUN(long n) {
    pool_type& pool = warm_pool();
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < n; ++i) {
        auto lease = pool.acquire();
        keep(lease.get());
    }
    const std::chrono::duration<double, std::nano> took = std::chrono::steady_clock::now() - start;
    return took.count() / static_cast<double>(n);
}

/// The same cycles, in a function of their own for callgrind's --toggle-collect.
__attribute__((noinline)) void WARMPOOL_AB_PROFILE(long n) {
    pool_type& pool = warm_pool();
    for (long i = 0; i < n; ++i) {
        auto lease = pool.acquire();
        keep(lease.get());
    }
}
