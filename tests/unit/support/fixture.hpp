// Common set-up for the core's unit tests.
#pragma once

#include "manual_clock.hpp"
#include "mock_traits.hpp"

#include <warmpool/warmpool.hpp>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace warmpool_test {

using pool = warmpool::basic_pool<mock_traits, manual_clock>;
using namespace std::chrono_literals;

/// A fresh manual clock and mock server per test, and an event log.
struct fixture {
    std::shared_ptr<mock_server> server = std::make_shared<mock_server>();
    std::vector<warmpool::event> events;
    std::vector<std::string> messages;
    std::mutex events_mutex;
    std::condition_variable events_changed;

    fixture() { manual_clock::reset(); }

    /// Options that record every event into `events`.
    warmpool::options recorded(warmpool::options o = {}) {
        o.on_event = [this](const warmpool::event& e) {
            std::lock_guard<std::mutex> lock(events_mutex);
            events.push_back(e);
            messages.emplace_back(e.message);
            events_changed.notify_all();
        };
        return o;
    }

    int count(warmpool::event_type t) {
        std::lock_guard<std::mutex> lock(events_mutex);
        return count_locked(t);
    }

    /// Blocks until `n` events of type `t` were recorded (another thread of the pool's produces
    /// them). The real-time bound only turns a broken pool into a failure instead of a hang.
    bool wait_for(warmpool::event_type t, int n) {
        std::unique_lock<std::mutex> lock(events_mutex);
        return events_changed.wait_for(lock, std::chrono::seconds(60),
                                       [&] { return count_locked(t) >= n; });
    }

private:
    int count_locked(warmpool::event_type t) const {
        int n = 0;
        for (const auto& e : events) {
            n += (e.type == t) ? 1 : 0;
        }
        return n;
    }

public:
};

} // namespace warmpool_test
