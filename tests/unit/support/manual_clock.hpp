// A clock the tests move by hand, with a wall clock of its own, so that freezes (the monotonic
// clock standing still while the wall clock runs) can be played out deterministically.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace warmpool_test {

class manual_clock {
public:
    using duration = std::chrono::nanoseconds;
    using rep = duration::rep;
    using period = duration::period;
    using time_point = std::chrono::time_point<manual_clock>;
    static constexpr bool is_steady = true;

    struct wall_clock {
        using duration = std::chrono::nanoseconds;
        using rep = duration::rep;
        using period = duration::period;
        using time_point = std::chrono::time_point<wall_clock>;
        static constexpr bool is_steady = false;
        static time_point now() noexcept { return time_point(duration(wall_ns_.load())); }
    };

    static time_point now() noexcept { return time_point(duration(mono_ns_.load())); }

    /// Both clocks move: ordinary time passing.
    static void advance(std::chrono::nanoseconds d) noexcept {
        mono_ns_ += d.count();
        wall_ns_ += d.count();
    }

    /// Only the wall clock moves: the process or VM was frozen and the monotonic clock stood
    /// still. A negative d steps the wall clock back, as NTP may.
    static void advance_wall_only(std::chrono::nanoseconds d) noexcept { wall_ns_ += d.count(); }

    /// With auto-advance on (the default), a pool waiting until a deadline finds the clock moved
    /// to that deadline at once: single-threaded tests run timeouts and backoff without sleeping.
    /// Multi-threaded tests turn it off and move time themselves.
    static void set_auto_advance(bool on) noexcept { auto_advance_ = on; }

    /// With polling off (and auto-advance off), a waiting pool thread wakes only when the pool
    /// notifies it: a wakeup the pool forgets to send shows as a thread that never wakes.
    static void set_polling(bool on) noexcept { polling_ = on; }

    static void reset() noexcept {
        mono_ns_ = 1'000'000'000'000; // far from zero, so nothing looks "never used"
        wall_ns_ = 1'700'000'000'000'000'000;
        auto_advance_ = true;
        polling_ = true;
        waits_ = 0;
    }

    static long waits() noexcept { return waits_.load(); }

    static void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                           time_point deadline) {
        ++waits_;
        if (auto_advance_) {
            const auto now = mono_ns_.load();
            const auto target = deadline.time_since_epoch().count();
            if (target > now) {
                advance(duration(target - now));
            }
            return;
        }
        // Woken by the pool, or polling for the test thread to move the clock; the pool re-checks
        // its state after every return, so a short real wait changes no outcome.
        if (polling_) {
            cv.wait_for(lock, std::chrono::milliseconds(1));
        } else {
            cv.wait(lock);
        }
    }

private:
    static inline std::atomic<long long> mono_ns_{1'000'000'000'000};
    static inline std::atomic<long long> wall_ns_{1'700'000'000'000'000'000};
    static inline std::atomic<bool> auto_advance_{true};
    static inline std::atomic<bool> polling_{true};
    static inline std::atomic<long> waits_{0};
};

} // namespace warmpool_test
