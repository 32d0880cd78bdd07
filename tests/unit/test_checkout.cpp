#include "support/fixture.hpp"

#include <doctest/doctest.h>

#include <optional>

using namespace warmpool_test;

TEST_CASE("nothing connects before the first acquire") {
    fixture f;
    pool p(f.server);
    CHECK(f.server->connects == 0);
    CHECK(p.stats().open == 0);
    {
        auto l = p.acquire();
        CHECK(l);
        CHECK(f.server->connects == 1);
        CHECK(p.stats().in_use == 1);
    }
    const auto s = p.stats();
    CHECK(s.open == 1);
    CHECK(s.idle == 1);
    CHECK(s.in_use == 0);
    CHECK(s.created == 1);
    CHECK(s.acquired == 1);
}

TEST_CASE("a given-back connection is reused, the most recently used first") {
    fixture f;
    pool p(f.server);
    auto a = p.acquire();
    auto b = p.acquire();
    auto c = p.acquire();
    const int na = a->number, nb = b->number, nc = c->number;
    CHECK(na != nb);
    CHECK(nb != nc);
    a.release();
    c.release();
    b.release(); // b is now the warmest
    CHECK(p.acquire()->number == nb);
    auto x = p.acquire();
    auto y = p.acquire();
    CHECK(x->number == nb);
    CHECK(y->number == nc); // then c, given back before b
    CHECK(f.server->opened == 3);
}

TEST_CASE("a lease moves, reports its connection and gives it back once") {
    fixture f;
    pool p(f.server);
    auto a = p.acquire();
    CHECK(a.connection_id() == 1);
    CHECK(a.get() == &*a);
    CHECK(a.get() == a.operator->());
    auto b = std::move(a);
    CHECK_FALSE(a); // NOLINT(bugprone-use-after-move): moved-from leases are empty
    CHECK(a.get() == nullptr);
    CHECK(a.connection_id() == 0);
    CHECK(b);
    pool::lease c;
    CHECK_FALSE(c);
    c = std::move(b);
    CHECK(c);
    CHECK(p.stats().in_use == 1);
    c.release();
    CHECK_FALSE(c);
    c.release(); // no-op
    CHECK(p.stats().idle == 1);
    CHECK(p.stats().in_use == 0);
}

TEST_CASE("move-assigning over a held lease gives the old connection back") {
    fixture f;
    pool p(f.server);
    auto a = p.acquire();
    auto b = p.acquire();
    a = std::move(b);
    const auto s = p.stats();
    CHECK(s.in_use == 1);
    CHECK(s.idle == 1);
}

TEST_CASE("try_acquire connects when it may and returns nothing when all are in use") {
    fixture f;
    warmpool::options o;
    o.max_size = 2;
    pool p(f.server, o);
    auto a = p.try_acquire();
    auto b = p.try_acquire();
    REQUIRE(a);
    REQUIRE(b);
    CHECK((*a)->number == 1);
    const auto waits_before = manual_clock::waits();
    std::optional<pool::lease> c = p.try_acquire();
    CHECK_FALSE(c.has_value());
    CHECK(manual_clock::waits() == waits_before); // it did not wait
    a->release();
    auto d = p.try_acquire();
    REQUIRE(d);
    CHECK((*d)->number == 1);
    CHECK(p.stats().timeouts == 0);
}

TEST_CASE("one connection is never held by two leases at once") {
    fixture f;
    warmpool::options o;
    o.max_size = 3;
    pool p(f.server, o);
    std::vector<pool::lease> held;
    for (int round = 0; round < 5; ++round) {
        for (int i = 0; i < 3; ++i) {
            held.push_back(p.acquire());
            CHECK(++held.back()->holders == 1);
        }
        for (auto& l : held) {
            --l->holders;
        }
        held.clear();
    }
    CHECK(f.server->opened == 3);
    CHECK(p.stats().acquired == 15);
}
