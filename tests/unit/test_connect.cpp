#include "support/fixture.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace warmpool_test;
using warmpool::event_type;

namespace {

template <class F>
std::string connect_failure(F&& f) {
    try {
        f();
    } catch (const warmpool::connect_error& e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST_CASE("transient connect failures are retried with backoff until one succeeds") {
    fixture f;
    pool p(f.server, f.recorded());
    f.server->fail_next(3, connect_outcome::transient);
    const auto before = manual_clock::now();
    auto l = p.acquire();
    CHECK(l->number == 1);
    CHECK(f.server->connects == 4);
    CHECK(p.stats().connect_failures == 3);
    CHECK(f.count(event_type::connect_failed) == 3);
    // Full jitter: each pause is within [0, min(cap, base * 2^(n-1))] = 10 + 20 + 40 ms at most.
    CHECK(manual_clock::now() - before <= 70ms);
}

TEST_CASE("a permanent connect failure fails at once, without retry") {
    fixture f;
    pool p(f.server);
    f.server->fail_next(1, connect_outcome::permanent);
    const auto message = connect_failure([&] { (void)p.acquire(); });
    CHECK(f.server->connects == 1);
    CHECK(message.find("could not connect to mock://db user=app password=***") !=
          std::string::npos);
    CHECK(message.find("password authentication failed") != std::string::npos);
    CHECK(message.find("1 attempt") != std::string::npos);
    CHECK(message.find("not retried") != std::string::npos);
    CHECK(p.stats().connect_failures == 1);
    CHECK(p.stats().connecting == 0);
    // The capacity came back: the next acquire connects.
    auto l = p.acquire();
    CHECK(l);
}

TEST_CASE("an exception other than connect_error counts as permanent") {
    fixture f;
    pool p(f.server);
    f.server->fail_next(1, connect_outcome::other_exception);
    const auto message = connect_failure([&] { (void)p.acquire(); });
    CHECK(message.find("driver exploded") != std::string::npos);
    CHECK(f.server->connects == 1);
}

TEST_CASE("connect_attempts = 1 disables retry; the backend's own message reaches the caller") {
    fixture f;
    warmpool::options o;
    o.connect_attempts = 1;
    pool p(f.server, o);
    f.server->fail_next(1, connect_outcome::transient);
    const auto message = connect_failure([&] { (void)p.acquire(); });
    CHECK(f.server->connects == 1);
    CHECK(message.find("too many connections") != std::string::npos);
    CHECK(message.find("connect_attempts (1) reached") != std::string::npos);
}

TEST_CASE("connect_attempts bounds the retries") {
    fixture f;
    warmpool::options o;
    o.connect_attempts = 4;
    pool p(f.server, o);
    f.server->fail_next(10, connect_outcome::transient);
    CHECK_THROWS_AS((void)p.acquire(), warmpool::connect_error);
    CHECK(f.server->connects == 4);
}

TEST_CASE("retries stop at the acquire deadline") {
    fixture f;
    warmpool::options o;
    o.acquire_timeout = 1s;
    o.connect_backoff_base = 100ms;
    o.connect_backoff_cap = 100ms;
    pool p(f.server, o);
    f.server->fail_next(1000, connect_outcome::transient);
    const auto before = manual_clock::now();
    const auto message = connect_failure([&] { (void)p.acquire(); });
    CHECK(manual_clock::now() - before <= 1s);
    CHECK(f.server->connects > 1);
    CHECK(f.server->connects < 1000);
    CHECK(message.find("acquire deadline (1000 ms)") != std::string::npos);
}

TEST_CASE("the connect attempt is told how much time is left") {
    fixture f;
    warmpool::options o;
    o.acquire_timeout = 7s;
    pool p(f.server, o);
    auto l = p.acquire();
    CHECK(f.server->last_connect_timeout == 7s);
}

TEST_CASE("a failed connect hands its capacity to the next waiter") {
    fixture f;
    warmpool::options o;
    o.max_size = 1;
    pool p(f.server, o);
    f.server->fail_next(1, connect_outcome::permanent);
    CHECK_THROWS_AS((void)p.acquire(), warmpool::connect_error);
    CHECK(p.stats().connecting == 0);
    CHECK(p.stats().open == 0);
    auto l = p.acquire();
    CHECK(p.stats().open == 1);
}

TEST_CASE("try_acquire makes one connect attempt and never backs off") {
    fixture f;
    warmpool::options o;
    o.acquire_timeout = 30s;
    pool p(f.server, o);
    f.server->fail_next(5, connect_outcome::transient);
    const auto before = manual_clock::now();
    std::string message;
    try {
        (void)p.try_acquire();
    } catch (const warmpool::connect_error& e) {
        message = e.what();
        CHECK(e.transient());
    }
    CHECK(f.server->connects == 1);
    CHECK(manual_clock::now() == before); // no backoff pause
    CHECK(message.find("try_acquire() makes one attempt") != std::string::npos);
    CHECK(p.stats().connecting == 0);
}
