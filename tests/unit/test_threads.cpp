#include "support/fixture.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

using namespace warmpool_test;

TEST_CASE("many threads through a small pool: never more than max_size open, never shared") {
    fixture f;
    manual_clock::set_auto_advance(false);
    warmpool::options o;
    o.max_size = 3;
    o.acquire_timeout = 1h; // on the manual clock, which does not move here
    pool p(f.server, o);
    constexpr int threads = 8;
    constexpr int rounds = 2000;
    std::atomic<int> shared{0};
    std::atomic<int> done{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            for (int i = 0; i < rounds; ++i) {
                auto l = p.acquire();
                if (++l->holders != 1) {
                    ++shared;
                }
                if ((i + t) % 7 == 0) {
                    l->in_tx = true; // rolled back on the way in
                }
                --l->holders;
                if ((i + t) % 97 == 0) {
                    l.invalidate();
                }
                ++done;
            }
        });
    }
    for (auto& w : workers) {
        w.join();
    }
    const auto s = p.stats();
    CHECK(shared == 0);
    CHECK(done == threads * rounds);
    CHECK(s.acquired == threads * rounds);
    CHECK(f.server->max_open <= 3);
    CHECK(s.open <= 3);
    CHECK(s.in_use == 0);
    CHECK(s.waiting == 0);
    CHECK(s.connecting == 0);
    CHECK(s.timeouts == 0);
    CHECK(s.created == s.closed + s.open);
    CHECK(s.closed_invalidated == s.closed);
}

TEST_CASE("threads waiting on a pool that keeps failing to connect all get an answer") {
    fixture f;
    manual_clock::set_auto_advance(false);
    warmpool::options o;
    o.max_size = 2;
    pool p(f.server, o);
    f.server->fail_next(6, connect_outcome::permanent);
    std::atomic<int> failures{0};
    std::atomic<int> successes{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < 6; ++t) {
        workers.emplace_back([&] {
            try {
                auto l = p.acquire();
                ++successes;
            } catch (const warmpool::connect_error&) {
                ++failures;
            }
        });
    }
    for (auto& w : workers) {
        w.join();
    }
    CHECK(failures + successes == 6);
    CHECK(failures >= 1);
    CHECK(p.stats().connecting == 0);
    CHECK(p.stats().waiting == 0);
}
