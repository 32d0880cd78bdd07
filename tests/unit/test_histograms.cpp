// pool_stats' latency histograms: fixed buckets, and what the pool records in them.
#include "support/fixture.hpp"

#include <doctest/doctest.h>

using namespace warmpool_test;
using warmpool::latency_histogram;
using us = std::chrono::microseconds;

namespace {

std::size_t bucket_of(const latency_histogram& h) {
    for (std::size_t i = 0; i < h.counts.size(); ++i) {
        if (h.counts[i] != 0) {
            return i;
        }
    }
    return h.counts.size();
}

} // namespace

TEST_SUITE("histograms") {

    TEST_CASE("a value on a bound falls in that bound's bucket; above the last, in the overflow") {
        struct probe {
            us value;
            std::size_t bucket;
        };
        for (const probe p : {probe{us{0}, 0}, probe{us{10}, 0}, probe{us{11}, 1},
                              probe{us{1000}, 6}, probe{us{1001}, 7}, probe{us{10'000'000}, 18},
                              probe{us{10'000'001}, 19}, probe{us{-5}, 0}}) {
            latency_histogram h;
            h.record(p.value);
            CAPTURE(p.value.count());
            CHECK(bucket_of(h) == p.bucket);
            CHECK(h.count == 1);
            CHECK(h.sum == std::max(p.value, us{0}));
        }
    }

    TEST_CASE("the bounds rise strictly, 1-2.5-5 per decade from 10 us to 10 s") {
        const auto& b = latency_histogram::upper_bounds;
        CHECK(b.front() == us{10});
        CHECK(b.back() == us{10'000'000});
        for (std::size_t i = 1; i < b.size(); ++i) {
            CHECK(b[i] > b[i - 1]);
        }
    }

    TEST_CASE("the pool records connect, acquire and use times") {
        fixture f;
        warmpool::options o;
        o.idle_timeout = 0ms;
        o.max_lifetime = 0ms;
        pool p(f.server, o);
        f.server->connect_cost = 24ms;
        {
            auto l = p.acquire(); // a cold acquire: one 24 ms connect
            manual_clock::advance(100ms);
        }
        {
            auto l = p.acquire(); // warm: no clock read, recorded as 0
        }
        const auto s = p.stats();
        CHECK(s.create_time.count == 1);
        CHECK(s.create_time.sum == us{24'000});
        CHECK(s.create_time.counts[10] == 1); // (10 ms, 25 ms]
        CHECK(s.acquire_time.count == 2);
        CHECK(s.acquire_time.counts[0] == 1);  // the warm one
        CHECK(s.acquire_time.counts[10] == 1); // the cold one, its connect included
        CHECK(s.use_time.count == 2);
        CHECK(s.use_time.counts[12] == 1); // (50 ms, 100 ms]
        CHECK(s.use_time.counts[0] == 1);
    }

    TEST_CASE("a failed acquire records nothing; timeouts count it") {
        fixture f;
        warmpool::options o;
        o.max_size = 1;
        pool p(f.server, o);
        auto held = p.acquire();
        CHECK_THROWS_AS((void)p.acquire(50ms), warmpool::acquire_timeout);
        held.release();
        const auto s = p.stats();
        CHECK(s.acquire_time.count == 1);
        CHECK(s.timeouts == 1);
    }

} // TEST_SUITE
