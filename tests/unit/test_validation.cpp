#include "support/fixture.hpp"

#include <doctest/doctest.h>

using namespace warmpool_test;
using warmpool::event_type;

namespace {

warmpool::options no_expiry() {
    warmpool::options o;
    o.idle_timeout = 0ms;
    o.max_lifetime = 0ms;
    return o;
}

} // namespace

TEST_CASE("a connection used within the validation window is handed out without a ping") {
    fixture f;
    pool p(f.server, no_expiry());
    mock_connection* c = nullptr;
    {
        auto l = p.acquire();
        c = l.get();
    }
    manual_clock::advance(499ms);
    auto l = p.acquire();
    CHECK(l.get() == c);
    CHECK(c->pings == 0);
    CHECK(p.stats().pings == 0);
}

TEST_CASE("a connection idle past the validation window is pinged, bounded by validation_timeout") {
    fixture f;
    auto o = no_expiry();
    o.validation_timeout = 1234ms;
    pool p(f.server, o);
    mock_connection* c = nullptr;
    {
        auto l = p.acquire();
        c = l.get();
    }
    manual_clock::advance(500ms);
    auto l = p.acquire();
    CHECK(l.get() == c);
    CHECK(c->pings == 1);
    CHECK(c->last_ping_timeout == 1234ms);
    CHECK(p.stats().pings == 1);
    CHECK(p.stats().validation_failures == 0);
}

TEST_CASE("a connection that fails its ping is closed and replaced; the caller never sees it") {
    fixture f;
    pool p(f.server, f.recorded(no_expiry()));
    {
        auto l = p.acquire();
        l->ping_ok = false;
    }
    manual_clock::advance(10min);
    auto l = p.acquire();
    CHECK(l->number == 2);
    CHECK(l->ping_ok);
    const auto s = p.stats();
    CHECK(s.validation_failures == 1);
    CHECK(s.closed_validation_failed == 1);
    CHECK(s.created == 2);
    CHECK(s.open == 1);
    CHECK(s.acquired == 2);
    CHECK(f.server->destroyed == 1);
    CHECK(f.count(event_type::validation_failed) == 1);
}

TEST_CASE("a hung ping gives up after validation_timeout and the caller gets a fresh connection") {
    fixture f;
    auto o = no_expiry();
    o.validation_timeout = 2s;
    o.acquire_timeout = 10s;
    pool p(f.server, o);
    {
        auto l = p.acquire();
        l->ping_hangs = true;
    }
    manual_clock::advance(1h);
    const auto before = manual_clock::now();
    auto l = p.acquire();
    CHECK(l->number == 2);
    CHECK(manual_clock::now() - before == 2s); // the ping's whole budget, nothing more
    CHECK(p.stats().validation_failures == 1);
}

TEST_CASE("a connection whose server closed its socket is replaced even inside the window") {
    fixture f;
    pool p(f.server, no_expiry());
    {
        auto l = p.acquire();
        l->peer_gone = true;
    }
    manual_clock::advance(1ms);
    auto l = p.acquire();
    CHECK(l->number == 2);
    CHECK(l->pings == 0);
    CHECK(p.stats().validation_failures == 1);
    CHECK(p.stats().pings == 0);
}

TEST_CASE("socket_check_after skips the socket poll for connections given back moments ago") {
    fixture f;
    auto o = no_expiry();
    o.socket_check_after = 100ms;
    pool p(f.server, o);
    {
        auto l = p.acquire();
        l->peer_gone = true;
    }
    manual_clock::advance(10ms);
    {
        auto l = p.acquire();
        CHECK(l->number == 1);
    } // not polled yet
    manual_clock::advance(100ms);
    auto l = p.acquire();
    CHECK(l->number == 2);
}

TEST_CASE("a connection the backend reports broken is replaced at checkout") {
    fixture f;
    pool p(f.server, no_expiry());
    mock_connection* c = nullptr;
    {
        auto l = p.acquire();
        c = l.get();
    }
    c->broken = true; // broke while idle
    auto l = p.acquire();
    CHECK(l->number == 2);
    CHECK(p.stats().validation_failures == 1);
}

TEST_CASE("a freeze is noticed on the wall clock when the monotonic clock stood still") {
    fixture f;
    pool p(f.server, no_expiry());
    { auto l = p.acquire(); }
    manual_clock::advance_wall_only(15min); // paused VM: the monotonic clock did not move
    auto l = p.acquire();
    CHECK(l->pings == 1);
}

TEST_CASE("a wall clock stepped backwards does not hide monotonic idle time") {
    fixture f;
    pool p(f.server, no_expiry());
    { auto l = p.acquire(); }
    manual_clock::advance(1s);
    manual_clock::advance_wall_only(-1h);
    auto l = p.acquire();
    CHECK(l->pings == 1);
}

TEST_CASE("several dead idle connections are all skipped in one acquire") {
    fixture f;
    auto o = no_expiry();
    o.max_size = 3;
    pool p(f.server, o);
    {
        auto a = p.acquire();
        auto b = p.acquire();
        auto c = p.acquire();
        a->peer_gone = b->peer_gone = c->peer_gone = true;
    }
    auto l = p.acquire();
    CHECK(l->number == 4);
    // Only the connection that was checked out was replaced; the others wait to be checked.
    CHECK(p.stats().validation_failures == 1);
    auto m = p.acquire();
    auto n = p.acquire();
    CHECK(m->number == 5);
    CHECK(n->number == 6);
    CHECK(p.stats().validation_failures == 3);
    CHECK(p.stats().open == 3);
}

TEST_CASE("the acquire deadline covers a failed ping and the reconnect after it") {
    fixture f;
    auto o = no_expiry();
    o.validation_timeout = 2s;
    o.acquire_timeout = 3s;
    o.connect_backoff_base = 100ms;
    o.connect_backoff_cap = 100ms;
    pool p(f.server, o);
    {
        auto l = p.acquire();
        l->ping_hangs = true;
    }
    manual_clock::advance(1h);
    f.server->fail_next(1000, connect_outcome::transient);
    const auto before = manual_clock::now();
    CHECK_THROWS_AS((void)p.acquire(), warmpool::connect_error);
    CHECK(manual_clock::now() - before <= 3s); // 2 s of ping, then retries within the last 1 s
    CHECK(f.server->connects > 1);
}

TEST_CASE("a ping that runs past the acquire deadline is not followed by a connect") {
    // acquire() overruns its timeout by one ping or one connect attempt, never both.
    fixture f;
    auto o = no_expiry();
    o.validation_timeout = 5s;
    o.acquire_timeout = 1s;
    pool p(f.server, o);
    {
        auto l = p.acquire();
        l->ping_hangs = true;
    }
    manual_clock::advance(1h);
    const int connects = f.server->connects;
    const auto before = manual_clock::now();
    std::string message;
    try {
        (void)p.acquire();
    } catch (const warmpool::acquire_timeout& e) {
        message = e.what();
    }
    CHECK(manual_clock::now() - before == 5s); // the ping under way at the deadline, alone
    CHECK(f.server->connects == connects);
    CHECK(message.find("validation_timeout (5000 ms)") != std::string::npos);
    CHECK(p.stats().open == 0);
    CHECK(p.stats().connecting == 0);
    auto l = p.acquire(); // the capacity was given back: the next caller connects
    CHECK(l->number == 2);
}

TEST_CASE("a wall-clock jump past idle_timeout forces a ping, never a close") {
    fixture f;
    warmpool::options o;
    o.max_size = 3;
    o.idle_timeout = 10min;
    pool p(f.server, o);
    {
        auto a = p.acquire();
        auto b = p.acquire();
        auto c = p.acquire();
    }
    manual_clock::advance_wall_only(2h); // NTP step, or a thaw the monotonic clock slept through
    p.housekeep();
    CHECK(p.stats().open == 3); // no reconnect storm
    auto l = p.acquire();
    CHECK(l->number <= 3);
    CHECK(l->pings == 1);
    CHECK(p.stats().closed_idle_timeout == 0);
}

TEST_CASE("a wall clock stepped back past the window forces a ping; coarse-clock jitter does not") {
    fixture f;
    auto o = no_expiry();
    o.validation_window = 500ms;
    pool p(f.server, o);
    { auto l = p.acquire(); }
    manual_clock::advance_wall_only(-4ms); // the coarse clocks tick apart by a few ms
    {
        auto l = p.acquire();
        CHECK(l->pings == 0);
    }
    manual_clock::advance_wall_only(-1h); // a real step back: a later freeze could hide behind it
    auto l = p.acquire();
    CHECK(l->pings == 1);
}
