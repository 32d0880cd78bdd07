#include "support/fixture.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>

using namespace warmpool_test;

TEST_CASE("no thread is started unless background housekeeping is asked for") {
    // Observable through the clock: a housekeeping thread would wait on it.
    fixture f;
    manual_clock::set_auto_advance(false);
    const auto waits = manual_clock::waits();
    {
        pool p(f.server);
        auto l = p.acquire();
    }
    CHECK(manual_clock::waits() == waits);
}

TEST_CASE("background housekeeping closes idle connections and stops on close") {
    fixture f;
    manual_clock::set_auto_advance(false);
    warmpool::options o;
    o.max_size = 2;
    o.idle_timeout = 1min;
    o.background_housekeeping = true;
    o.housekeeping_interval = 10s;
    pool p(f.server, f.recorded(o));
    {
        auto a = p.acquire();
        auto b = p.acquire();
    }
    // Move the clock only once the housekeeper is waiting on it, or it would start its interval
    // after the move and never see it.
    for (long i = 0; i < 100'000'000 && manual_clock::waits() == 0; ++i) {
        std::this_thread::yield();
    }
    REQUIRE(manual_clock::waits() > 0);
    manual_clock::advance(2min);
    // The housekeeper notices the moved clock on its own thread.
    REQUIRE(f.wait_for(warmpool::event_type::closed, 2));
    CHECK(p.stats().open == 0);
    CHECK(p.stats().closed_idle_timeout == 2);
    p.close(); // joins the housekeeper
    CHECK(f.server->destroyed == 2);
}

TEST_CASE("close() called on the housekeeping thread leaves it for the destructor to join") {
    fixture f;
    manual_clock::set_auto_advance(false);
    std::atomic<pool*> self{nullptr};
    std::atomic<bool> closed_from_event{false};
    warmpool::options o;
    o.min_idle = 1;
    o.background_housekeeping = true;
    o.housekeeping_interval = 10s;
    o.on_event = [&](const warmpool::event& e) {
        // The housekeeper's top-up connects; its event closes the pool from that thread.
        if (e.type == warmpool::event_type::connected && self.load() != nullptr) {
            self.load()->close();
            closed_from_event = true;
        }
    };
    {
        pool p(f.server, o);
        self = &p;
        for (long i = 0; i < 100'000'000 && manual_clock::waits() == 0; ++i) {
            std::this_thread::yield();
        }
        REQUIRE(manual_clock::waits() > 0);
        manual_clock::advance(11s);
        for (long i = 0; i < 100'000'000 && !closed_from_event.load(); ++i) {
            std::this_thread::yield();
        }
        REQUIRE(closed_from_event.load());
    } // the destructor must wait for the housekeeper, which is still inside housekeep()
    CHECK(f.server->open_now == 0);
}
