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

TEST_CASE("the rollback on give-back is bounded by validation_timeout; a hung one closes") {
    fixture f;
    warmpool::options o;
    o.validation_timeout = 500ms;
    pool p(f.server, o);
    const auto before = manual_clock::now();
    {
        auto l = p.acquire();
        l->in_tx = true;
        l->rollback_hangs = true;
    }
    CHECK(manual_clock::now() - before == 500ms);
    CHECK(f.server->destroyed == 1);
    CHECK(p.stats().closed_broken == 1);
    CHECK(p.stats().rollbacks == 1);
}

TEST_CASE("reset_on_release resets every connection given back, after any rollback") {
    fixture f;
    warmpool::options o;
    o.reset_on_release = true;
    pool p(f.server, f.recorded(o));
    mock_connection* c = nullptr;
    {
        auto l = p.acquire();
        c = l.get();
        l->session_dirty = true;
        l->in_tx = true; // the mock's reset refuses to run inside a transaction
    }
    CHECK(c->rollbacks == 1);
    CHECK(c->resets == 1);
    CHECK_FALSE(c->session_dirty);
    CHECK(p.stats().resets == 1);
    CHECK(f.count(event_type::reset) == 1);
    auto l = p.acquire();
    CHECK(l.get() == c);
}

TEST_CASE("a connection whose reset fails is closed, not pooled") {
    fixture f;
    warmpool::options o;
    o.reset_on_release = true;
    pool p(f.server, o);
    {
        auto l = p.acquire();
        l->reset_ok = false;
    }
    CHECK(f.server->destroyed == 1);
    CHECK(p.stats().closed_broken == 1);
}

TEST_CASE("without reset_on_release nothing is reset") {
    fixture f;
    pool p(f.server);
    mock_connection* c = nullptr;
    {
        auto l = p.acquire();
        c = l.get();
        l->session_dirty = true;
    }
    CHECK(c->resets == 0);
    CHECK(p.stats().resets == 0);
}

TEST_CASE("the release veto closes a connection instead of pooling it") {
    fixture f;
    pool p(f.server, f.recorded());
    {
        auto l = p.acquire();
        l->reusable = false;
    }
    CHECK(f.server->destroyed == 1);
    CHECK(p.stats().closed_rejected_on_release == 1);
    bool reported = false;
    for (const auto& e : f.events) {
        reported = reported || (e.type == event_type::closed &&
                                e.reason == warmpool::close_reason::rejected_on_release);
    }
    CHECK(reported);
}

namespace {
// The contract's required members only: no reset(), no reusable().
struct minimal_traits {
    using connection = int;
    using config = int;
    static std::unique_ptr<int> connect(const int&, std::chrono::milliseconds) {
        return std::make_unique<int>(0);
    }
    static bool is_broken(int&) noexcept { return false; }
    static bool peer_closed(int&) noexcept { return false; }
    static bool ping(int&, std::chrono::milliseconds) noexcept { return true; }
    static bool in_transaction(int&) noexcept { return false; }
    static bool rollback(int&, std::chrono::milliseconds) noexcept { return true; }
    static std::string describe(const int&) { return "minimal"; }
};
} // namespace

TEST_CASE("reset_on_release is refused at construction for traits without reset()") {
    warmpool::options o;
    o.reset_on_release = true;
    std::string message;
    try {
        warmpool::basic_pool<minimal_traits, manual_clock> p(0, o);
    } catch (const std::invalid_argument& e) {
        message = e.what();
    }
    CHECK(message.find("options::reset_on_release") != std::string::npos);
    warmpool::basic_pool<minimal_traits, manual_clock> fine(0); // off: accepted
    CHECK(*fine.acquire() == 0);
}
