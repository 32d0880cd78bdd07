// acquire_until(): an absolute deadline caps the wait, every ping, every connect attempt and
// every backoff pause, and nothing starts after it.
#include "support/fixture.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace warmpool_test;

namespace {

warmpool::options no_expiry() {
    warmpool::options o;
    o.idle_timeout = 0ms;
    o.max_lifetime = 0ms;
    return o;
}

bool contains(const std::string& s, const char* part) {
    return s.find(part) != std::string::npos;
}

} // namespace

TEST_SUITE("deadline") {

    TEST_CASE("a deadline already past still gets an idle connection that needs no round trip") {
        fixture f;
        pool p(f.server, no_expiry());
        mock_connection* c = nullptr;
        {
            auto l = p.acquire();
            c = l.get();
        }
        manual_clock::advance(100ms); // inside the validation window: no ping due
        auto l = p.acquire_until(manual_clock::now() - 1s);
        CHECK(l.get() == c);
        CHECK(c->pings == 0);
    }

    TEST_CASE("a ping due after the deadline is not started; the connection stays idle, unpinged") {
        fixture f;
        pool p(f.server, no_expiry());
        mock_connection* c = nullptr;
        {
            auto l = p.acquire();
            c = l.get();
        }
        manual_clock::advance(10min);
        try {
            (void)p.acquire_until(manual_clock::now());
            FAIL("expected acquire_timeout");
        } catch (const warmpool::acquire_timeout& e) {
            CHECK(contains(e.what(), "no time to validate"));
        }
        CHECK(c->pings == 0);
        auto s = p.stats();
        CHECK(s.idle == 1);
        CHECK(s.acquired == 1);
        CHECK(s.timeouts == 1);
        CHECK(s.closed == 0);
        auto l = p.acquire(); // a caller with time left validates and takes it
        CHECK(l.get() == c);
        CHECK(c->pings == 1);
    }

    TEST_CASE("the ping is bounded by the time left when that is less than validation_timeout") {
        fixture f;
        auto o = no_expiry();
        o.validation_timeout = 5000ms;
        pool p(f.server, o);
        mock_connection* c = nullptr;
        {
            auto l = p.acquire();
            c = l.get();
        }
        manual_clock::advance(10min);
        auto l = p.acquire_until(manual_clock::now() + 300ms);
        CHECK(c->pings == 1);
        CHECK(c->last_ping_timeout == 300ms);
    }

    TEST_CASE("a hung ping ends at the deadline, and no replacement connect starts after it") {
        fixture f;
        auto o = no_expiry();
        o.validation_timeout = 5000ms;
        pool p(f.server, o);
        {
            auto l = p.acquire();
            l->ping_hangs = true;
        }
        manual_clock::advance(10min);
        const auto deadline = manual_clock::now() + 400ms;
        CHECK_THROWS_AS((void)p.acquire_until(deadline), warmpool::acquire_timeout);
        CHECK(manual_clock::now() == deadline); // the ping used the time left, not 5 s
        CHECK(f.server->connects == 1);         // the first one only: no connect after the deadline
        CHECK(p.stats().validation_failures == 1);
    }

    TEST_CASE("a connect attempt is given the time left as its timeout") {
        fixture f;
        pool p(f.server, no_expiry());
        auto l = p.acquire_until(manual_clock::now() + 1500ms);
        CHECK(f.server->last_connect_timeout == 1500ms);
    }

    TEST_CASE("with no time left, no connect is attempted") {
        fixture f;
        pool p(f.server, no_expiry());
        try {
            (void)p.acquire_until(manual_clock::now());
            FAIL("expected acquire_timeout");
        } catch (const warmpool::acquire_timeout& e) {
            CHECK(contains(e.what(), "no time to open a connection"));
        }
        CHECK(f.server->connects == 0);
        auto s = p.stats();
        CHECK(s.connecting == 0);
        CHECK(s.timeouts == 1);
        auto l = p.acquire(); // the capacity was given back
        CHECK(l);
    }

    TEST_CASE("backoff between connect attempts never sleeps past the deadline") {
        fixture f;
        auto o = no_expiry();
        o.connect_backoff_base = 50ms;
        o.connect_backoff_cap = 50ms;
        pool p(f.server, o);
        f.server->fail_next(1000, connect_outcome::transient);
        // Connects cost no time here: the clock moves only by the pool's own backoff pauses.
        const auto deadline = manual_clock::now() + 500ms;
        CHECK_THROWS_AS((void)p.acquire_until(deadline), warmpool::connect_error);
        CHECK(manual_clock::now() <= deadline);
        CHECK(f.server->connects >= 2);
        CHECK(p.stats().connecting == 0);
    }

    TEST_CASE("waiting for a busy pool ends exactly at the deadline") {
        fixture f;
        auto o = no_expiry();
        o.max_size = 1;
        pool p(f.server, o);
        auto held = p.acquire();
        const auto deadline = manual_clock::now() + 250ms;
        CHECK_THROWS_AS((void)p.acquire_until(deadline), warmpool::acquire_timeout);
        CHECK(manual_clock::now() == deadline);
        CHECK(p.stats().waiting == 0);
    }

    TEST_CASE("a wall-clock deadline is turned into the pool's clock once, at the call") {
        fixture f;
        auto o = no_expiry();
        o.validation_timeout = 5000ms;
        pool p(f.server, o);
        mock_connection* c = nullptr;
        {
            auto l = p.acquire();
            c = l.get();
        }
        manual_clock::advance(10min);
        auto l = p.acquire_until(manual_clock::wall_clock::now() + 2s);
        CHECK(c->pings == 1);
        CHECK(c->last_ping_timeout == 2000ms);
    }

    TEST_CASE("a wall-clock deadline in the past is no time at all") {
        fixture f;
        pool p(f.server, no_expiry());
        CHECK_THROWS_AS((void)p.acquire_until(manual_clock::wall_clock::now() - 1h),
                        warmpool::acquire_timeout);
        CHECK(f.server->connects == 0);
    }

    TEST_CASE("std::chrono clocks: both overloads compile and a generous deadline just works") {
        // The default pool's clocks are steady_clock and system_clock: distinct overloads.
        using real_pool = warmpool::basic_pool<mock_traits>;
        auto server = std::make_shared<mock_server>();
        real_pool p(server);
        { auto l = p.acquire_until(std::chrono::steady_clock::now() + 10s); }
        auto l = p.acquire_until(std::chrono::system_clock::now() + 10s);
        CHECK(l);
    }

} // TEST_SUITE
