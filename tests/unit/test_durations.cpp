#include "support/fixture.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

using namespace warmpool_test;

TEST_CASE("durations past options::forever are taken as forever, in every field") {
    fixture f;
    const auto huge = std::chrono::milliseconds::max();
    warmpool::options o;
    o.acquire_timeout = huge;
    o.handoff_after = huge;
    o.validation_window = huge;
    o.validation_timeout = huge;
    o.socket_check_after = huge;
    o.idle_timeout = huge;
    o.max_lifetime = huge;
    o.connect_backoff_base = huge;
    o.connect_backoff_cap = huge;
    o.leak_threshold = huge;
    o.housekeeping_interval = huge;
    pool p(f.server, o);
    CHECK(p.get_options().acquire_timeout == warmpool::options::forever);
    CHECK(p.get_options().max_lifetime == warmpool::options::forever);
    (void)p.acquire();
    manual_clock::advance(24h * 365 * 10);
    p.housekeep();
    auto l = p.acquire();
    CHECK(l->number == 1); // neither idle nor lifetime limit has passed
    CHECK(l->pings == 0);  // nor the validation window
}

TEST_CASE("a max_lifetime of years expires in years, not at once") {
    // 427 days and more overflowed the jitter computation in nanoseconds.
    fixture f;
    warmpool::options o;
    o.max_lifetime = 24h * 1000;
    o.idle_timeout = 0ms;
    pool p(f.server, o);
    (void)p.acquire();
    manual_clock::advance(24h * 900);
    CHECK(p.acquire()->number == 1);
    manual_clock::advance(24h * 101);
    CHECK(p.acquire()->number == 2);
    CHECK(p.stats().closed_max_lifetime == 1);
}

TEST_CASE("waiting on the steady clock until the end of time sleeps instead of spinning") {
    // The standard library adds the time left to its own now(), which overflows near
    // time_point::max(): the wait returned at once, a busy spin holding the lock.
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    int returns = 0;
    std::thread notifier([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        std::lock_guard<std::mutex> lock(m);
        done = true;
        cv.notify_all();
    });
    {
        std::unique_lock<std::mutex> lock(m);
        while (!done) {
            warmpool::detail::wait_until<std::chrono::steady_clock>(
                cv, lock, std::chrono::steady_clock::time_point::max());
            ++returns;
        }
    }
    notifier.join();
    CHECK(returns < 10); // once, barring spurious wakeups; a spin returns many thousand times
}
