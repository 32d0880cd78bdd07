// warmpool's benchmark driver: the pools compared, behind one small interface.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <warmpool/warmpool.hpp>

#include <soci/connection-pool.h>
#include <soci/soci.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>

namespace bench {

/// Traits whose connection is an int and whose checks cost nothing: what is left is the pool.
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

using noop_pool = warmpool::basic_pool<noop_traits>;

/// A warmpool pool of `size` connections, all open before timing starts.
template <class Pool>
std::unique_ptr<Pool> warm_pool(typename Pool::config_type cfg, std::size_t size,
                                warmpool::options o = {}) {
    o.max_size = size;
    o.min_idle = size;
    auto pool = std::make_unique<Pool>(std::move(cfg), std::move(o));
    pool->warm_up();
    return pool;
}

// Each competitor: handle acquire(); void release(handle&). Used by the contention scenario,
// where the acquire is timed alone.

template <class Pool>
struct warmpool_competitor {
    static constexpr const char* name = "warmpool";
    using handle = typename Pool::lease;
    Pool& pool;
    handle acquire() { return pool.acquire(); }
    void release(handle& h) { h.release(); }
};

struct soci_competitor {
    static constexpr const char* name = "soci::connection_pool";
    using handle = std::size_t;
    soci::connection_pool& pool;
    handle acquire() { return pool.lease(); }
    void release(handle& h) { pool.give_back(h); }
};

} // namespace bench
