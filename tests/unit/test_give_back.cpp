#include "support/fixture.hpp"

#include <doctest/doctest.h>

#include <stdexcept>

using namespace warmpool_test;
using warmpool::close_reason;
using warmpool::event_type;

TEST_CASE("an open transaction is rolled back on give-back") {
    fixture f;
    pool p(f.server, f.recorded());
    mock_connection* c = nullptr;
    {
        auto l = p.acquire();
        c = l.get();
        l->in_tx = true;
    }
    CHECK(c->rollbacks == 1);
    CHECK_FALSE(c->in_tx);
    CHECK(p.stats().rollbacks == 1);
    CHECK(f.count(event_type::rolled_back) == 1);
    auto l = p.acquire();
    CHECK(l.get() == c); // clean again, so pooled
}

TEST_CASE("a transaction left open by an exception does not reach the next user") {
    fixture f;
    warmpool::options o;
    o.max_size = 1;
    pool p(f.server, o);
    try {
        auto l = p.acquire();
        l->in_tx = true; // BEGIN; INSERT …
        throw std::runtime_error("handler failed");
    } catch (const std::runtime_error&) {
    }
    auto l = p.acquire();
    CHECK_FALSE(l->in_tx);
    CHECK(l->rollbacks == 1);
}

TEST_CASE("no rollback is sent when no transaction is open") {
    fixture f;
    pool p(f.server);
    mock_connection* c = nullptr;
    {
        auto l = p.acquire();
        c = l.get();
    }
    CHECK(c->rollbacks == 0);
    CHECK(p.stats().rollbacks == 0);
}

TEST_CASE("a connection whose rollback fails is closed, not pooled") {
    fixture f;
    pool p(f.server, f.recorded());
    {
        auto l = p.acquire();
        l->in_tx = true;
        l->rollback_ok = false;
    }
    auto s = p.stats();
    CHECK(s.open == 0);
    CHECK(s.closed_broken == 1);
    CHECK(f.server->destroyed == 1);
    auto l = p.acquire();
    CHECK(l->number == 2);
}

TEST_CASE("a connection broken while leased is closed on give-back") {
    fixture f;
    pool p(f.server, f.recorded());
    {
        auto l = p.acquire();
        l->broken = true;
    }
    CHECK(p.stats().closed_broken == 1);
    CHECK(p.stats().open == 0);
    bool saw = false;
    for (const auto& e : f.events) {
        saw = saw || (e.type == event_type::closed && e.reason == close_reason::broken);
    }
    CHECK(saw);
}

TEST_CASE("invalidate closes the connection instead of giving it back") {
    fixture f;
    pool p(f.server);
    auto l = p.acquire();
    l->in_tx = true;
    mock_connection* c = l.get();
    (void)c;
    l.invalidate();
    CHECK_FALSE(l);
    CHECK(f.server->destroyed == 1); // no rollback attempted on a connection being thrown away
    CHECK(p.stats().closed_invalidated == 1);
    CHECK(p.stats().open == 0);
    l.invalidate(); // no-op on an empty lease
    auto m = p.acquire();
    CHECK(m->number == 2);
}

TEST_CASE("released events carry how long the lease was held") {
    fixture f;
    pool p(f.server, f.recorded());
    {
        auto l = p.acquire();
        manual_clock::advance(250ms);
    }
    REQUIRE(f.count(event_type::released) == 1);
    for (const auto& e : f.events) {
        if (e.type == event_type::released) {
            CHECK(e.elapsed == std::chrono::microseconds(250'000));
            CHECK(e.connection_id == 1);
        }
    }
}
