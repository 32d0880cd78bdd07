// Snapshot and restore: close_idle() before the snapshot, abandon_connections() and
// world_changed() (after_restore() does both) after it.
#include "support/fixture.hpp"

#include <doctest/doctest.h>

using namespace warmpool_test;
using warmpool::close_reason;
using warmpool::event_type;

namespace {

warmpool::options no_expiry() {
    warmpool::options o;
    o.idle_timeout = 0ms;
    o.max_lifetime = 0ms;
    return o;
}

int closes_for(fixture& f, close_reason why) {
    int n = 0;
    for (const auto& e : f.events) {
        n += (e.type == event_type::closed && e.reason == why) ? 1 : 0;
    }
    return n;
}

} // namespace

TEST_SUITE("restore") {

    TEST_CASE("close_idle() closes idle connections politely and leaves leases alone") {
        fixture f;
        auto o = no_expiry();
        o.max_size = 3;
        pool p(f.server, f.recorded(o));
        auto held = p.acquire();
        { auto a = p.acquire(), b = p.acquire(); }
        REQUIRE(p.stats().idle == 2);
        p.close_idle();
        auto s = p.stats();
        CHECK(s.idle == 0);
        CHECK(s.open == 1);
        CHECK(s.closed_drained == 2);
        CHECK(f.server->polite_closes == 2);
        CHECK(f.server->silent_closes == 0);
        CHECK(closes_for(f, close_reason::drained) == 2);
        held.release();
        CHECK(p.stats().idle == 1); // the lease came back to a pool that still works
    }

    TEST_CASE("abandon_connections() forgets idle connections without a word to the server") {
        fixture f;
        auto o = no_expiry();
        o.max_size = 2;
        pool p(f.server, f.recorded(o));
        { auto a = p.acquire(), b = p.acquire(); }
        p.abandon_connections();
        auto s = p.stats();
        CHECK(s.open == 0);
        CHECK(s.closed_abandoned == 2);
        CHECK(s.closed == 2);
        CHECK(f.server->silent_closes == 2);
        CHECK(f.server->polite_closes == 0);
        CHECK(closes_for(f, close_reason::abandoned) == 2);
        auto l = p.acquire(); // a new connection, not one of the forgotten
        CHECK(l->number == 3);
    }

    TEST_CASE("a lease held across abandon_connections() is forgotten when given back, untouched") {
        fixture f;
        pool p(f.server, f.recorded(no_expiry()));
        {
            auto l = p.acquire();
            l->in_tx = true; // a transaction left open: still no rollback on a dead socket
            p.abandon_connections();
        }
        CHECK(f.server->silent_closes == 1);
        CHECK(f.server->polite_closes == 0);
        auto s = p.stats();
        CHECK(s.rollbacks == 0);
        CHECK(s.closed_abandoned == 1);
        CHECK(s.open == 0);
        auto l = p.acquire();
        CHECK(l->number == 2);
        CHECK(l->rollbacks == 0);
    }

    TEST_CASE("a connect under way when abandon_connections() runs is forgotten and made again") {
        fixture f;
        pool p(f.server, f.recorded(no_expiry()));
        f.server->during_connect = [&] {
            f.server->during_connect = nullptr;
            p.abandon_connections(); // the snapshot was taken mid-connect; this is the restore
        };
        auto l = p.acquire();
        CHECK(l->number == 2);
        CHECK(f.server->silent_closes == 1);
        auto s = p.stats();
        CHECK(s.created == 2);
        CHECK(s.closed_abandoned == 1);
        CHECK(s.connect_failures == 0); // no failure of the server's
        CHECK(s.open == 1);
    }

    TEST_CASE("after world_changed() every kept connection is pinged at its next checkout, once") {
        fixture f;
        pool p(f.server, no_expiry());
        mock_connection* c = nullptr;
        {
            auto l = p.acquire();
            c = l.get();
        }
        p.world_changed(); // well inside the validation window, yet the timestamps mean nothing now
        { auto l = p.acquire(); }
        CHECK(c->pings == 1);
        { auto l = p.acquire(); }
        CHECK(c->pings == 1); // trusted again once checked
    }

    TEST_CASE("world_changed() reaches leases too: pinged at their next checkout after give-back") {
        fixture f;
        pool p(f.server, no_expiry());
        mock_connection* c = nullptr;
        {
            auto l = p.acquire();
            c = l.get();
            p.world_changed();
        }
        auto l = p.acquire();
        CHECK(c->pings == 1);
    }

    TEST_CASE("world_changed() restarts idle clocks but never extends a lifetime") {
        fixture f;
        warmpool::options o;
        o.idle_timeout = 10s;
        o.max_lifetime = 60s;
        pool p(f.server, o);
        int c = 0;
        {
            auto l = p.acquire();
            c = l->number;
        }
        manual_clock::advance(9s);
        p.world_changed();
        manual_clock::advance(5s); // 14 s by the old timestamps: idled out had they been trusted
        {
            auto l = p.acquire();
            CHECK(l->number == c);
        }
        manual_clock::advance(50s); // 64 s after the connect: past max_lifetime whatever happened
        auto l = p.acquire();
        CHECK(l->number != c);
        CHECK(p.stats().closed_max_lifetime == 1);
    }

    TEST_CASE("a wall clock that jumped with the restore cannot make a connection look fresh") {
        fixture f;
        pool p(f.server, no_expiry());
        { auto l = p.acquire(); }
        manual_clock::advance_wall_only(-1h); // both clocks are whatever the new host says
        p.after_restore();
        auto l = p.acquire();
        CHECK(l->number == 2); // forgotten, not reused
        CHECK(f.server->silent_closes == 1);
    }

    TEST_CASE("the restore sequence: close_idle() before, after_restore() after") {
        fixture f;
        auto o = no_expiry();
        pool p(f.server, f.recorded(o));
        { auto l = p.acquire(); } // init: the connection opened by the function's init code
        p.close_idle();           // before the snapshot: the server frees the slot now
        p.after_restore();        // nothing left to forget
        auto l = p.acquire();
        CHECK(l->number == 2);
        auto s = p.stats();
        CHECK(s.closed_drained == 1);
        CHECK(s.closed_abandoned == 0);
        CHECK(f.server->polite_closes == 1);
    }

    TEST_CASE("peer_state::unsure forces a ping inside the validation window") {
        fixture f;
        pool p(f.server, no_expiry());
        {
            auto l = p.acquire();
            l->peer_unsure = true;
        }
        {
            auto l = p.acquire();
            CHECK(l->number == 1);
            CHECK(l->pings == 1);
            l->ping_ok = false;
        }
        auto l = p.acquire(); // unsure again, and now the ping fails: replaced
        CHECK(l->number == 2);
        CHECK(p.stats().validation_failures == 1);
    }

    TEST_CASE("the operations are safe on a closed pool and idempotent") {
        fixture f;
        pool p(f.server, no_expiry());
        { auto l = p.acquire(); }
        p.close();
        p.close_idle();
        p.abandon_connections();
        p.world_changed();
        p.after_restore();
        CHECK(p.stats().open == 0);
        CHECK(f.server->polite_closes == 1);
    }

} // TEST_SUITE

TEST_SUITE("restore races") {

    // Each test plays abandon_connections() landing while the pool is busy with a connection that
    // was open before it: that connection must be forgotten, silently, never kept or reused.

    TEST_CASE(
        "a connection warm_up() opened across abandon_connections() is forgotten, not pooled") {
        fixture f;
        auto o = no_expiry();
        o.min_idle = 1;
        pool* pp = nullptr;
        bool once = true;
        o.on_event = [&](const warmpool::event& e) {
            if (e.type == event_type::connected && once) {
                once = false;
                pp->abandon_connections(); // after the connect, before warm_up pools it
            }
        };
        pool p(f.server, o);
        pp = &p;
        p.warm_up();
        auto l = p.acquire();
        CHECK(l->number == 2);
        CHECK(f.server->silent_closes == 1);
        CHECK(p.stats().closed_abandoned == 1);
    }

    TEST_CASE("a lease whose give-back is under way when abandon_connections() runs is forgotten") {
        fixture f;
        pool p(f.server, no_expiry());
        {
            auto l = p.acquire();
            l->in_tx = true;
            f.server->during_rollback = [&] {
                p.abandon_connections();
            };
        }
        CHECK(f.server->silent_closes == 1);
        CHECK(p.stats().closed_abandoned == 1);
        auto l = p.acquire();
        CHECK(l->number == 2);
    }

    TEST_CASE("a checkout out of time when abandon_connections() runs does not put it back") {
        fixture f;
        pool p(f.server, no_expiry());
        { auto l = p.acquire(); }
        manual_clock::advance(10min);
        f.server->during_peer_check = [&] {
            p.abandon_connections();
        };
        CHECK_THROWS_AS((void)p.acquire_until(manual_clock::now()), warmpool::acquire_timeout);
        CHECK(p.stats().idle == 0);
        CHECK(f.server->silent_closes == 1);
        auto l = p.acquire();
        CHECK(l->number == 2);
    }

    TEST_CASE("a connection that fails its ping while abandon_connections() runs closes silently") {
        fixture f;
        pool p(f.server, no_expiry());
        {
            auto l = p.acquire();
            l->ping_ok = false;
        }
        manual_clock::advance(10min);
        f.server->during_ping = [&] {
            p.abandon_connections();
        };
        auto l = p.acquire();
        CHECK(l->number == 2);
        CHECK(f.server->silent_closes == 1);
        CHECK(f.server->polite_closes == 0);
        CHECK(p.stats().closed_abandoned == 1);
    }

    TEST_CASE(
        "abandon_connections() during a backoff pause spares the connection opened after it") {
        fixture f;
        auto o = no_expiry();
        pool* pp = nullptr;
        o.on_event = [&](const warmpool::event& e) {
            if (e.type == event_type::connect_failed) {
                pp->abandon_connections();
            }
        };
        pool p(f.server, o);
        pp = &p;
        f.server->fail_next(1, connect_outcome::transient);
        auto l = p.acquire();
        CHECK(l->number == 1);
        auto s = p.stats();
        CHECK(s.closed_abandoned == 0);
        CHECK(s.created == 1);
    }

    TEST_CASE("a connection abandoned mid-connect is reported opened, then closed, and timed") {
        fixture f;
        pool p(f.server, f.recorded(no_expiry()));
        f.server->during_connect = [&] {
            f.server->during_connect = nullptr;
            p.abandon_connections();
        };
        auto l = p.acquire();
        CHECK(f.count(event_type::connected) == 2);
        CHECK(f.count(event_type::closed) == 1);
        auto s = p.stats();
        CHECK(s.created == 2);
        CHECK(s.create_time.count == 2);
    }

    TEST_CASE("world_changed() during a lease caps its lifetime at give-back") {
        fixture f;
        warmpool::options o;
        o.idle_timeout = 0ms;
        o.max_lifetime = 60s;
        pool p(f.server, o);
        {
            auto l = p.acquire();
            manual_clock::advance(-1h); // the restored host's monotonic clock is an hour behind
            p.world_changed();
        }
        manual_clock::advance(61s);
        auto l = p.acquire();
        CHECK(l->number == 2);
        CHECK(p.stats().closed_max_lifetime == 1);
    }

    TEST_CASE("wall-clock deadlines of any duration and range neither overflow nor wait forever") {
        using real_pool = warmpool::basic_pool<mock_traits>;
        using sys = std::chrono::system_clock;
        auto server = std::make_shared<mock_server>();
        warmpool::options o;
        o.max_size = 1;
        real_pool p(server, o);
        { auto l = p.acquire(); }
        {
            // As read from Lambda-Runtime-Deadline-Ms: milliseconds since the epoch.
            const std::chrono::time_point<sys, std::chrono::milliseconds> deadline(
                std::chrono::duration_cast<std::chrono::milliseconds>(
                    sys::now().time_since_epoch() + 10s));
            auto l = p.acquire_until(deadline);
            CHECK(l->number == 1);
            // The pool is busy now: far-past deadlines fail at once instead of overflowing.
            CHECK_THROWS_AS((void)p.acquire_until(sys::time_point::min()),
                            warmpool::acquire_timeout);
            CHECK_THROWS_AS(
                (void)p.acquire_until(std::chrono::time_point<sys, std::chrono::hours>::min()),
                warmpool::acquire_timeout);
        }
        auto l = p.acquire_until(sys::time_point::max()); // far future: no limit, no overflow
        CHECK(l);
    }

} // TEST_SUITE
