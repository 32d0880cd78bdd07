#include "support/fixture.hpp"

#include <doctest/doctest.h>

using namespace warmpool_test;

TEST_CASE("an idle connection past idle_timeout is closed at the next acquire") {
    fixture f;
    warmpool::options o;
    o.idle_timeout = 1min;
    pool p(f.server, o);
    { auto l = p.acquire(); }
    manual_clock::advance(1min);
    auto l = p.acquire();
    CHECK(l->number == 2);
    CHECK(l->pings == 0); // a new connection needs no ping
    CHECK(p.stats().closed_idle_timeout == 1);
    CHECK(p.stats().validation_failures == 0);
}

TEST_CASE("housekeeping closes idle connections past idle_timeout, down to min_idle") {
    fixture f;
    warmpool::options o;
    o.max_size = 4;
    o.min_idle = 1;
    o.idle_timeout = 1min;
    pool p(f.server, o);
    {
        auto a = p.acquire();
        auto b = p.acquire();
        auto c = p.acquire();
    }
    manual_clock::advance(30s);
    p.housekeep();
    CHECK(p.stats().open == 3);
    manual_clock::advance(30s);
    p.housekeep();
    const auto s = p.stats();
    CHECK(s.open == 1);
    CHECK(s.closed_idle_timeout == 2);
}

TEST_CASE("each connection's lifetime is shortened by at most 2.5%") {
    fixture f;
    warmpool::options o;
    o.max_size = 20;
    o.max_lifetime = 1000s;
    o.idle_timeout = 0ms;
    pool p(f.server, o);
    {
        std::vector<pool::lease> all;
        for (int i = 0; i < 20; ++i) {
            all.push_back(p.acquire());
        }
    }
    manual_clock::advance(975s - 1ms);
    p.housekeep();
    CHECK(p.stats().closed_max_lifetime == 0); // none expires before 97.5%
    manual_clock::advance(25s + 1ms);
    p.housekeep();
    CHECK(p.stats().closed_max_lifetime == 20); // all have by 100%
}

TEST_CASE("a connection past max_lifetime is closed when given back") {
    fixture f;
    warmpool::options o;
    o.max_lifetime = 10min;
    pool p(f.server, o);
    {
        auto l = p.acquire();
        manual_clock::advance(10min);
    }
    CHECK(p.stats().closed_max_lifetime == 1);
    CHECK(p.stats().open == 0);
}

TEST_CASE("a connection past max_lifetime is not handed out") {
    fixture f;
    warmpool::options o;
    o.max_lifetime = 10min;
    o.idle_timeout = 0ms;
    pool p(f.server, o);
    { auto l = p.acquire(); }
    manual_clock::advance(10min);
    auto l = p.acquire();
    CHECK(l->number == 2);
    CHECK(p.stats().closed_max_lifetime == 1);
}

TEST_CASE("warm_up opens min_idle connections now") {
    fixture f;
    warmpool::options o;
    o.max_size = 5;
    o.min_idle = 3;
    pool p(f.server, o);
    CHECK(f.server->connects == 0);
    p.warm_up();
    auto s = p.stats();
    CHECK(s.open == 3);
    CHECK(s.idle == 3);
    CHECK(s.acquired == 0);
    p.warm_up(); // already there
    CHECK(f.server->connects == 3);
}

TEST_CASE("warm_up reports a connect failure") {
    fixture f;
    warmpool::options o;
    o.min_idle = 1;
    f.server->fail_next(1, connect_outcome::permanent);
    pool p(f.server, o);
    CHECK_THROWS_AS(p.warm_up(), warmpool::connect_error);
    CHECK(p.stats().connecting == 0);
}

TEST_CASE("housekeeping tops up to min_idle and swallows connect failures") {
    fixture f;
    warmpool::options o;
    o.min_idle = 2;
    o.max_lifetime = 5min;
    pool p(f.server, o);
    p.warm_up();
    manual_clock::advance(5min);
    f.server->fail_next(1, connect_outcome::permanent);
    CHECK_NOTHROW(p.housekeep());
    CHECK(p.stats().closed_max_lifetime == 2);
    CHECK(p.stats().connect_failures == 1);
    p.housekeep();
    CHECK(p.stats().open == 2);
}
