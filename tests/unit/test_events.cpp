#include "support/fixture.hpp"

#include <doctest/doctest.h>

#include <stdexcept>

using namespace warmpool_test;
using warmpool::close_reason;
using warmpool::event_type;

TEST_CASE("events tell the life of a connection in order") {
    fixture f;
    pool p(f.server, f.recorded());
    {
        auto l = p.acquire();
        l->in_tx = true;
    }
    {
        auto l = p.acquire();
        l.invalidate();
    }
    std::vector<event_type> types;
    for (const auto& e : f.events) {
        types.push_back(e.type);
    }
    CHECK(types == std::vector<event_type>{event_type::connected, event_type::acquired,
                                           event_type::rolled_back, event_type::released,
                                           event_type::acquired, event_type::released,
                                           event_type::closed});
    CHECK(f.events.back().reason == close_reason::invalidated);
    CHECK(f.events.front().connection_id == 1);
}

TEST_CASE("an observer that throws cannot break the pool") {
    fixture f;
    warmpool::options o;
    o.on_event = [](const warmpool::event&) {
        throw std::runtime_error("observer failed");
    };
    pool p(f.server, o);
    {
        auto l = p.acquire();
        CHECK(l);
    }
    CHECK(p.stats().idle == 1);
}

TEST_CASE("a lease held past leak_threshold is reported once, and again when it returns") {
    fixture f;
    warmpool::options o;
    o.leak_threshold = 1min;
    pool p(f.server, f.recorded(o));
    auto leaked = p.acquire();
    manual_clock::advance(59s);
    p.housekeep();
    CHECK(f.count(event_type::leak_suspected) == 0);
    manual_clock::advance(1s);
    p.housekeep();
    p.housekeep();
    CHECK(f.count(event_type::leak_suspected) == 1);
    CHECK(p.stats().leaks_suspected == 1);
    leaked.release();
    CHECK(f.count(event_type::leak_returned) == 1);
}

TEST_CASE("the next acquire notices a leak when no housekeeping runs") {
    fixture f;
    warmpool::options o;
    o.leak_threshold = 1min;
    pool p(f.server, f.recorded(o));
    auto leaked = p.acquire();
    manual_clock::advance(2min);
    auto other = p.acquire();
    CHECK(f.count(event_type::leak_suspected) == 1);
    CHECK(f.messages.size() == f.events.size());
}

TEST_CASE("names of reasons and events are stable") {
    CHECK(warmpool::to_string(close_reason::idle_timeout) == "idle_timeout");
    CHECK(warmpool::to_string(close_reason::validation_failed) == "validation_failed");
    CHECK(warmpool::to_string(event_type::leak_suspected) == "leak_suspected");
    CHECK(warmpool::to_string(event_type::connected) == "connected");
}
