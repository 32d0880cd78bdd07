// Lockstep user threads for the simulation. Exactly one thread runs pool code at a time: the
// simulator, or the one user thread it handed control to. A user thread gives control back when
// its job ends or when the pool waits (sim_clock::wait_until parks it). The simulator resumes a
// parked thread when its deadline has passed or to let it look at the pool again. Since no two
// threads ever run pool code at once, what happens depends only on the simulator's choices,
// never on the OS scheduler.
//
// A parked thread really waits on the pool's condition variable, with the pool's lock, as it
// would in production; the simulator resumes it by setting a flag under that lock and notifying
// the same condition variable. A notification from the pool itself wakes the thread too, but it
// only records that it was notified (under the scheduler's lock) and waits again: the pool's
// state is not touched, so the run stays deterministic, and the simulator can ask whether a
// thread the pool was obliged to wake was in fact notified (a lost wakeup otherwise).
#pragma once

#include "sim_clock.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace warmpool_sim {

class sim_scheduler {
public:
    /// parked: waiting inside the pool (on its condition variable); busy: inside a backend call
    /// that lasts until the simulated clock reaches its deadline.
    enum class state { idle, running, parked, busy };

    /// `stuck` is called (on the simulator's thread) if a user thread neither finishes nor parks
    /// within `watchdog` of real time: it is blocked somewhere the simulator cannot see (a real
    /// sleep or lock). It should print what it knows; the process then aborts.
    explicit sim_scheduler(int threads, std::function<void(int)> stuck,
                           std::chrono::seconds watchdog = std::chrono::seconds(120))
        : stuck_(std::move(stuck)), watchdog_(watchdog) {
        users_.reserve(static_cast<std::size_t>(threads));
        for (int i = 0; i < threads; ++i) {
            users_.push_back(std::make_unique<user>(*this, i));
        }
        for (auto& u : users_) {
            u->thread = std::thread([p = u.get()] { p->loop(); });
        }
    }

    /// Every user thread must be idle.
    ~sim_scheduler() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_ = true;
            for (auto& u : users_) {
                u->go.notify_one();
            }
        }
        for (auto& u : users_) {
            u->thread.join();
        }
    }

    sim_scheduler(const sim_scheduler&) = delete;
    sim_scheduler& operator=(const sim_scheduler&) = delete;

    int size() const { return static_cast<int>(users_.size()); }

    state state_of(int i) const {
        std::lock_guard<std::mutex> lock(mutex_);
        return at(i).st;
    }

    sim_clock::time_point deadline_of(int i) const {
        std::lock_guard<std::mutex> lock(mutex_);
        return at(i).deadline;
    }

    /// Parked threads, longest parked first.
    std::vector<int> parked() const { return in_state(state::parked); }

    /// Busy threads, longest busy first.
    std::vector<int> busy() const { return in_state(state::busy); }

    std::vector<int> in_state(state which) const {
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<std::pair<std::uint64_t, int>> order;
        for (const auto& u : users_) {
            if (u->st == which) {
                order.emplace_back(u->parked_seq, u->index);
            }
        }
        std::sort(order.begin(), order.end());
        std::vector<int> out;
        for (const auto& o : order) {
            out.push_back(o.second);
        }
        return out;
    }

    bool all_idle() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return std::all_of(users_.begin(), users_.end(),
                           [](const auto& u) { return u->st == state::idle; });
    }

    /// Runs `job` on idle thread i until it finishes or parks.
    void start(int i, std::function<void()> job) {
        std::unique_lock<std::mutex> lock(mutex_);
        user& u = at(i);
        u.job = std::move(job);
        u.st = state::running;
        token_ = u.index;
        u.go.notify_one();
        wait_for_token(lock, u);
    }

    /// Lets parked thread i run until it finishes or parks again: to the pool, a wakeup.
    void resume(int i) {
        std::condition_variable* cv = nullptr;
        std::mutex* pool_lock = nullptr;
        user& u = at(i);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            u.st = state::running;
            token_ = u.index;
            cv = u.wait_cv;
            pool_lock = u.wait_mutex;
        }
        {
            // Not holding mutex_ here: a parked thread that the pool notified takes the pool's
            // lock first and mutex_ second.
            std::lock_guard<std::mutex> lock(*pool_lock);
            u.poked = true;
            cv->notify_all();
        }
        std::unique_lock<std::mutex> lock(mutex_);
        wait_for_token(lock, u);
    }

    /// Lets busy thread i return from its backend call (the clock has reached its deadline) and
    /// run until it finishes or parks.
    void finish_busy(int i) {
        std::unique_lock<std::mutex> lock(mutex_);
        user& u = at(i);
        u.st = state::running;
        token_ = u.index;
        u.go.notify_one();
        wait_for_token(lock, u);
    }

    /// Whether parked thread i was notified by the pool since it parked, waiting up to `limit`
    /// of real time for the notification to arrive (it wakes the thread asynchronously).
    bool notified(int i, std::chrono::milliseconds limit) {
        std::unique_lock<std::mutex> lock(mutex_);
        user& u = at(i);
        return back_.wait_for(lock, limit, [&] { return u.notified || u.st != state::parked; });
    }

    /// A number that changes whenever any thread's state or parked deadline changes.
    std::uint64_t fingerprint() const {
        std::lock_guard<std::mutex> lock(mutex_);
        std::uint64_t h = 1469598103934665603ull;
        const auto mix = [&h](std::uint64_t v) {
            h ^= v;
            h *= 1099511628211ull;
        };
        for (const auto& u : users_) {
            mix(static_cast<std::uint64_t>(u->st));
            mix(static_cast<std::uint64_t>(u->deadline.time_since_epoch().count()));
            mix(u->jobs_done);
        }
        return h;
    }

private:
    struct user final : sim_clock::parker {
        user(sim_scheduler& s, int i) : sched(s), index(i) {}

        sim_scheduler& sched;
        const int index;
        std::thread thread;
        std::condition_variable go; // an idle or busy thread waits here for its turn

        // Guarded by sched.mutex_.
        std::function<void()> job;
        state st = state::idle;
        sim_clock::time_point deadline = sim_clock::time_point::max();
        std::uint64_t parked_seq = 0;
        std::uint64_t jobs_done = 0;
        std::condition_variable* wait_cv = nullptr; // the pool's, while parked
        std::mutex* wait_mutex = nullptr;           // the pool's lock, while parked
        bool notified = false;                      // by the pool, since it parked

        // Guarded by the pool's lock (*wait_mutex).
        bool poked = false; // the simulator resumes it

        void loop() {
            sim_clock::current_parker() = this;
            std::unique_lock<std::mutex> lock(sched.mutex_);
            for (;;) {
                go.wait(lock, [&] { return sched.stopping_ || sched.token_ == index; });
                if (sched.stopping_) {
                    return;
                }
                std::function<void()> todo = std::move(job);
                job = nullptr;
                lock.unlock();
                todo(); // must not throw: the simulator's jobs catch everything
                lock.lock();
                st = state::idle;
                ++jobs_done;
                sched.give_back_locked();
            }
        }

        // Called by the pool with its lock held, through sim_clock::wait_until.
        void park(std::condition_variable& cv, std::unique_lock<std::mutex>& pool_lock,
                  sim_clock::time_point until) override {
            poked = false;
            {
                std::lock_guard<std::mutex> lock(sched.mutex_);
                st = state::parked;
                deadline = until;
                parked_seq = ++sched.seq_;
                wait_cv = &cv;
                wait_mutex = pool_lock.mutex();
                notified = false;
                sched.give_back_locked();
            }
            for (;;) {
                cv.wait(pool_lock); // the pool's lock is free while this thread waits
                if (poked) {
                    break; // the simulator's turn for it: back into the pool's code
                }
                // The pool notified it (or a rare spurious wakeup): note it and wait on.
                std::lock_guard<std::mutex> lock(sched.mutex_);
                notified = true;
                sched.back_.notify_all();
            }
            std::lock_guard<std::mutex> lock(sched.mutex_);
            wait_cv = nullptr;
            wait_mutex = nullptr;
            deadline = sim_clock::time_point::max();
        }

        // Called by the simulated backend, outside the pool's lock.
        void busy_until(sim_clock::time_point until) override {
            std::unique_lock<std::mutex> lock(sched.mutex_);
            st = state::busy;
            deadline = until;
            parked_seq = ++sched.seq_;
            sched.give_back_locked();
            go.wait(lock, [&] { return sched.token_ == index; });
            deadline = sim_clock::time_point::max();
        }
    };

    static constexpr int simulator = -1;

    user& at(int i) { return *users_[static_cast<std::size_t>(i)]; }
    const user& at(int i) const { return *users_[static_cast<std::size_t>(i)]; }

    void give_back_locked() {
        token_ = simulator;
        back_.notify_all();
    }

    void wait_for_token(std::unique_lock<std::mutex>& lock, user& u) {
        if (!back_.wait_for(lock, watchdog_, [&] { return token_ == simulator; })) {
            lock.unlock();
            stuck_(u.index);
            std::fprintf(stderr,
                         "sim: user thread %d is blocked outside the simulated clock; "
                         "aborting\n",
                         u.index);
            std::abort();
        }
    }

    mutable std::mutex mutex_;
    std::condition_variable back_; // the simulator waits here for control, or a notification
    std::vector<std::unique_ptr<user>> users_;
    int token_ = simulator;
    bool stopping_ = false;
    std::uint64_t seq_ = 0;
    std::function<void(int)> stuck_;
    std::chrono::seconds watchdog_;
};

} // namespace warmpool_sim
