#include "support/fixture.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

using namespace warmpool_test;

namespace {

// Spins (yielding) until the pool shows `n` waiters. Bounded so that a broken pool fails the
// test instead of hanging it; the bound is generous and no outcome depends on it.
void until_waiting(pool& p, std::size_t n) {
    for (long i = 0; i < 50'000'000 && p.stats().waiting < n; ++i) {
        std::this_thread::yield();
    }
    REQUIRE(p.stats().waiting == n);
}

// A pool of one connection, held by the test, on a clock that moves only when the test moves
// it: where every test of queued callers starts.
struct one_held : fixture {
    pool p;
    pool::lease held;

    explicit one_held(warmpool::options o = {}) : p(server, one(std::move(o))), held(p.acquire()) {}

    static warmpool::options one(warmpool::options o) {
        o.max_size = 1;
        manual_clock::set_auto_advance(false);
        return o;
    }
};

} // namespace

TEST_CASE("acquire times out with the counts, the wait and what to do in its message") {
    fixture f;
    warmpool::options o;
    o.max_size = 2;
    o.acquire_timeout = 250ms;
    pool p(f.server, o);
    auto a = p.acquire();
    auto b = p.acquire();
    std::string message;
    const auto before = manual_clock::now();
    try {
        (void)p.acquire();
    } catch (const warmpool::acquire_timeout& e) {
        message = e.what();
    }
    CHECK(manual_clock::now() - before == 250ms);
    CHECK(message.find("acquire timed out after 250 ms") != std::string::npos);
    CHECK(message.find("mock://db user=app password=***") != std::string::npos);
    CHECK(message.find("open 2, idle 0, in use 2, waiting 1, connecting 0, max_size 2") !=
          std::string::npos);
    CHECK(message.find("Raise max_size or acquire_timeout") != std::string::npos);
    const auto s = p.stats();
    CHECK(s.timeouts == 1);
    CHECK(s.waiting == 0);
    CHECK(s.waits == 1);
    CHECK(s.wait_time_max == std::chrono::microseconds(250'000));
}

TEST_CASE("an acquire timeout names the last connect error") {
    fixture f;
    warmpool::options o;
    o.max_size = 1;
    o.acquire_timeout = 100ms;
    pool p(f.server, o);
    f.server->fail_next(1, connect_outcome::permanent);
    CHECK_THROWS_AS((void)p.acquire(), warmpool::connect_error);
    auto a = p.acquire();
    try {
        (void)p.acquire();
        FAIL("expected a timeout");
    } catch (const warmpool::acquire_timeout& e) {
        CHECK(std::string(e.what()).find("Last connect error: mock: password authentication") !=
              std::string::npos);
    }
}

TEST_CASE("acquire(timeout) overrides options::acquire_timeout") {
    fixture f;
    warmpool::options o;
    o.max_size = 1;
    pool p(f.server, o);
    auto a = p.acquire();
    const auto before = manual_clock::now();
    CHECK_THROWS_AS((void)p.acquire(40ms), warmpool::acquire_timeout);
    CHECK(manual_clock::now() - before == 40ms);
}

TEST_CASE("a given-back connection reaches the waiter") {
    one_held f;
    pool& p = f.p;
    pool::lease& held = f.held;
    int got = 0;
    std::thread t([&] { got = p.acquire()->number; });
    until_waiting(p, 1);
    held.release();
    t.join();
    CHECK(got == 1);
    CHECK(f.server->opened == 1);
    CHECK(p.stats().timeouts == 0);
    CHECK(p.stats().waits == 1);
}

TEST_CASE("waiters are served first come, first served") {
    one_held f;
    pool& p = f.p;
    pool::lease& held = f.held;
    std::mutex order_mutex;
    std::vector<int> order;
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
        threads.emplace_back([&, i] {
            auto l = p.acquire();
            std::lock_guard<std::mutex> lock(order_mutex);
            order.push_back(i);
        });
        until_waiting(p, static_cast<std::size_t>(i) + 1); // queue them in a known order
    }
    held.release();
    for (auto& t : threads) {
        t.join();
    }
    CHECK(order == std::vector<int>{0, 1, 2, 3});
}

TEST_CASE("try_acquire does not take a connection ahead of queued waiters") {
    one_held f;
    pool& p = f.p;
    pool::lease& held = f.held;
    std::thread t([&] { auto l = p.acquire(); });
    until_waiting(p, 1);
    CHECK_FALSE(p.try_acquire().has_value());
    held.release();
    t.join();
}

TEST_CASE("an invalidated connection lets a waiter connect a new one") {
    one_held f;
    pool& p = f.p;
    pool::lease& held = f.held;
    int got = 0;
    std::thread t([&] { got = p.acquire()->number; });
    until_waiting(p, 1);
    held.invalidate();
    t.join();
    CHECK(got == 2);
    CHECK(f.server->max_open == 1);
}

TEST_CASE("a waiter times out when the clock passes its deadline") {
    warmpool::options o;
    o.acquire_timeout = 5s;
    one_held f(o); // the test's lease stays held throughout
    pool& p = f.p;
    std::atomic<bool> timed_out{false};
    std::thread t([&] {
        try {
            (void)p.acquire();
        } catch (const warmpool::acquire_timeout&) {
            timed_out = true;
        }
    });
    until_waiting(p, 1);
    manual_clock::advance(4s);
    CHECK_FALSE(timed_out.load());
    manual_clock::advance(1s);
    t.join();
    CHECK(timed_out.load());
    CHECK(p.stats().timeouts == 1);
    CHECK(p.stats().waiting == 0);
}

TEST_CASE("close wakes every waiter with pool_closed") {
    one_held f;
    pool& p = f.p;
    pool::lease& held = f.held;
    std::atomic<int> closed{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 3; ++i) {
        threads.emplace_back([&] {
            try {
                (void)p.acquire();
            } catch (const warmpool::pool_closed&) {
                ++closed;
            }
        });
    }
    until_waiting(p, 3);
    p.close();
    for (auto& t : threads) {
        t.join();
    }
    CHECK(closed == 3);
    held.release(); // given back after close: closed, not pooled
    const auto s = p.stats();
    CHECK(s.open == 0);
    CHECK(s.closed_pool_closed == 1);
    CHECK_THROWS_AS((void)p.acquire(), warmpool::pool_closed);
}

TEST_CASE("close closes idle connections at once and is idempotent") {
    fixture f;
    warmpool::options o;
    o.min_idle = 3;
    o.max_size = 3;
    pool p(f.server, o);
    p.warm_up();
    p.close();
    CHECK(f.server->destroyed == 3);
    CHECK(p.stats().closed_pool_closed == 3);
    p.close();
    CHECK(f.server->destroyed == 3);
    CHECK_THROWS_AS(p.warm_up(), warmpool::pool_closed);
}

namespace {

// A caller that acquires on its own thread and holds the lease until told to let go, so the
// test can look at the pool while the lease is held.
struct holder {
    std::promise<void> let_go;
    std::atomic<int> got{0};
    std::thread thread;

    explicit holder(pool& p) {
        thread = std::thread([this, &p, done = let_go.get_future()]() mutable {
            auto l = p.acquire();
            got = l->number;
            done.wait();
        });
    }
    ~holder() {
        let_go.set_value();
        thread.join();
    }
};

} // namespace

TEST_CASE("a caller that has waited handoff_after is handed the next connection before anyone") {
    warmpool::options o;
    o.handoff_after = 5ms;
    one_held f(o);
    pool& p = f.p;
    pool::lease& held = f.held;
    holder waiter(p);
    until_waiting(p, 1);
    manual_clock::advance(5ms);
    held.release();
    // Handed over under the lock at release: a newcomer finds nothing, however fast it is.
    CHECK_FALSE(p.try_acquire().has_value());
    CHECK(p.stats().idle == 0);
}

TEST_CASE("handoff_after = 0 hands every given-back connection to the longest waiter") {
    warmpool::options o;
    o.handoff_after = 0ms;
    one_held f(o);
    pool& p = f.p;
    pool::lease& held = f.held;
    holder waiter(p);
    until_waiting(p, 1);
    held.release();
    CHECK_FALSE(p.try_acquire().has_value());
}

TEST_CASE("connections left in the pool for waiters reach every waiter in turn") {
    warmpool::options o;
    o.acquire_timeout = 1s;
    o.handoff_after = 1h; // never hand over directly: leave it in the pool
    one_held f(o);
    pool& p = f.p;
    pool::lease& held = f.held;
    std::atomic<int> served{0};
    std::atomic<int> timed_out{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) {
        threads.emplace_back([&] {
            try {
                auto l = p.acquire();
                ++served;
            } catch (const warmpool::acquire_timeout&) {
                ++timed_out;
            }
        });
        until_waiting(p, static_cast<std::size_t>(i) + 1);
    }
    held.release();
    for (auto& t : threads) {
        t.join();
    }
    CHECK(served == 2);
    CHECK(timed_out == 0);
}

TEST_CASE("two connections given back at once wake two waiters, not one") {
    fixture f;
    manual_clock::set_auto_advance(false);
    manual_clock::set_polling(false); // a waiter wakes only when the pool notifies it
    warmpool::options o;
    o.max_size = 2;
    o.handoff_after = 1h; // both go back to the pool and waiters are woken to take them
    o.acquire_timeout = 1h;
    pool p(f.server, o);
    auto a = p.acquire();
    auto b = p.acquire();
    std::atomic<int> served{0};
    std::atomic<bool> gave_up{false};
    auto waiter = [&] {
        try {
            auto l = p.acquire();
            ++served;
            while (served.load() < 2 && !gave_up.load()) {
                std::this_thread::yield(); // hold it until both are served
            }
        } catch (const warmpool::pool_closed&) {
        }
    };
    std::thread w1(waiter);
    until_waiting(p, 1);
    std::thread w2(waiter);
    until_waiting(p, 2);
    a.release();
    b.release();
    for (long i = 0; i < 50'000'000 && served.load() < 2; ++i) {
        std::this_thread::yield();
    }
    const int got = served.load();
    if (got < 2) {
        gave_up = true;
        p.close(); // wakes the forgotten waiter with pool_closed, so the test ends
    }
    w1.join();
    w2.join();
    CHECK(got == 2);
}

TEST_CASE("acquire(milliseconds::max()) waits as long as it takes") {
    one_held f;
    std::atomic<bool> served{false};
    std::thread t([&] {
        auto l = f.p.acquire(std::chrono::milliseconds::max());
        served = true;
    });
    until_waiting(f.p, 1);
    manual_clock::advance(24h * 365 * 50); // fifty years on, it still waits
    for (int i = 0; i < 1000; ++i) {
        std::this_thread::yield();
    }
    CHECK_FALSE(served.load());
    CHECK(f.p.stats().timeouts == 0);
    f.held.release();
    t.join();
    CHECK(served.load());
}

TEST_CASE("a pool destroyed right after close() waits for the waiters it woke to leave") {
    fixture f;
    manual_clock::set_auto_advance(false);
    warmpool::options o;
    o.max_size = 1;
    auto p = std::make_unique<pool>(f.server, o);
    auto held = p->acquire();
    std::atomic<int> closed_out{0};
    std::vector<std::thread> waiters;
    for (int i = 0; i < 3; ++i) {
        waiters.emplace_back([&] {
            try {
                (void)p->acquire();
            } catch (const warmpool::pool_closed&) {
                ++closed_out;
            }
        });
    }
    until_waiting(*p, 3);
    p->close();
    held.release();
    p.reset(); // must not free the pool while a woken waiter is still inside acquire()
    for (auto& t : waiters) {
        t.join();
    }
    CHECK(closed_out.load() == 3);
}

TEST_CASE("a connection warm_up() opens while close() runs is closed, not left open") {
    fixture f;
    std::atomic<pool*> self{nullptr};
    warmpool::options o;
    o.min_idle = 2;
    o.on_event = [&](const warmpool::event& e) {
        if (e.type == warmpool::event_type::connected && self.load() != nullptr) {
            self.load()->close(); // close() runs between the connect and its pooling
        }
    };
    pool p(f.server, o);
    self = &p;
    CHECK_THROWS_AS(p.warm_up(), warmpool::pool_closed);
    CHECK(f.server->opened == 1); // the second connection of min_idle is never opened
    CHECK(f.server->open_now == 0);
    const auto s = p.stats();
    CHECK(s.open == 0);
    CHECK(s.created == 1);
    CHECK(s.closed_pool_closed == 1);
}
