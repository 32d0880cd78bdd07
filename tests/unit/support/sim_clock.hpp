// The simulation's clock: a monotonic clock and a wall clock that move only when the simulator
// or the simulated backend moves them, and a wait_until that hands control back to the
// simulator instead of sleeping.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace warmpool_sim {

class sim_clock {
public:
    using duration = std::chrono::nanoseconds;
    using rep = duration::rep;
    using period = duration::period;
    using time_point = std::chrono::time_point<sim_clock>;
    static constexpr bool is_steady = true;

    struct wall_clock {
        using duration = std::chrono::nanoseconds;
        using rep = duration::rep;
        using period = duration::period;
        using time_point = std::chrono::time_point<wall_clock>;
        static constexpr bool is_steady = false;
        static time_point now() noexcept { return time_point(duration(wall_ns_.load())); }
    };

    /// What a thread the simulator drives does when the pool waits: it waits on the pool's own
    /// condition variable (so the simulator can see whether the pool notified it) until the
    /// simulator resumes it. Threads not driven by the simulator have none.
    struct parker {
        virtual void park(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                          time_point deadline) = 0;

        /// The backend keeps the thread busy (a slow connect, a hung ping) until the clock
        /// reaches `until`; other threads run meanwhile.
        virtual void busy_until(time_point until) = 0;

    protected:
        ~parker() = default;
    };

    static time_point now() noexcept { return time_point(duration(mono_ns_.load())); }

    /// Ordinary time passing: both clocks move.
    static void advance(std::chrono::nanoseconds d) noexcept {
        mono_ns_ += d.count();
        wall_ns_ += d.count();
    }

    /// Only the wall clock moves: forward, a freeze (the process or VM stopped while the
    /// monotonic clock stood still); backward, a step back as NTP may make.
    static void advance_wall_only(std::chrono::nanoseconds d) noexcept { wall_ns_ += d.count(); }

    static void reset() noexcept {
        mono_ns_ = 1'000'000'000'000; // far from zero, so nothing looks "never used"
        wall_ns_ = 1'700'000'000'000'000'000;
    }

    /// The parker of the calling thread (thread-local); nullptr for threads of their own.
    static parker*& current_parker() noexcept {
        static thread_local parker* p = nullptr;
        return p;
    }

    /// A thread driven by the simulator parks and gives control back; the simulator resumes it
    /// at its deadline or to let it look at the pool again (a spurious wakeup, which the pool
    /// must tolerate). Any other thread (the stress test's) really waits, briefly: the pool
    /// re-checks its state after every return.
    static void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                           time_point deadline) {
        if (parker* p = current_parker()) {
            p->park(cv, lock, deadline);
            return;
        }
        cv.wait_for(lock, std::chrono::milliseconds(1));
    }

private:
    static inline std::atomic<long long> mono_ns_{1'000'000'000'000};
    static inline std::atomic<long long> wall_ns_{1'700'000'000'000'000'000};
};

} // namespace warmpool_sim
