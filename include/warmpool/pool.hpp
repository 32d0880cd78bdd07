// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <warmpool/detail/clock.hpp>
#include <warmpool/detail/fork.hpp>
#include <warmpool/errors.hpp>
#include <warmpool/events.hpp>
#include <warmpool/options.hpp>
#include <warmpool/stats.hpp>
#include <warmpool/traits.hpp>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace warmpool {

/// A bounded pool of connections of one backend, described by Traits (see warmpool/traits.hpp).
///
/// Every member is safe to call from any thread. The pool never connects, pings, rolls back or
/// closes a connection while holding its lock, and starts no thread unless
/// options::background_housekeeping is on. Leases must not outlive the pool.
template <class Traits, class Clock = std::chrono::steady_clock>
class basic_pool {
    static_assert(detail::check_traits<Traits>(), "see warmpool/traits.hpp");

public:
    using traits_type = Traits;
    using clock_type = Clock;
    using connection_type = typename Traits::connection;
    using config_type = typename Traits::config;
    using time_point = typename Clock::time_point;
    /// The clock that keeps running while the process is frozen: std::chrono::system_clock for
    /// std::chrono::steady_clock, or Clock::wall_clock (see warmpool/detail/clock.hpp).
    using wall_clock = typename detail::wall_clock_of<Clock>::type;
    using wall_time_point = typename wall_clock::time_point;

    class lease;

    /// Validates `opts` (std::invalid_argument naming the field) and connects nothing: the first
    /// connection opens on the first acquire() or warm_up().
    explicit basic_pool(config_type config, options opts = {})
        : config_(std::move(config)), opts_(validated(std::move(opts))),
          target_(Traits::describe(config_)), rng_(seed()) {
        check_fleet_support();
        // Reserved up front so bookkeeping under the lock never allocates.
        all_.reserve(opts_.max_size);
        idle_.reserve(opts_.max_size);
        detail::lock_around_forks(&mutex_);
        fork_epoch_ = detail::fork_epoch.load(std::memory_order_relaxed);
        if (opts_.background_housekeeping) {
            try {
                housekeeper_ = std::make_unique<std::thread>([this] { housekeeping_loop(); });
            } catch (...) {
                detail::stop_locking_around_forks(&mutex_);
                throw;
            }
        }
    }

    /// Closes the pool, waits until every caller it woke has left acquire(), and waits for the
    /// housekeeping thread. Every lease must have been given back before. Must not run on the
    /// pool's own housekeeping thread (from on_event).
    ~basic_pool() {
        close();
        std::unique_ptr<std::thread> housekeeper;
        {
            // close() noticed any fork, and woke every waiter with pool_closed: each takes itself
            // off waiters_ under the lock on its way out, and the last one wakes us.
            std::unique_lock<std::mutex> lock(mutex_);
            while (!waiters_.empty()) {
                wakeup_.wait(lock);
            }
            housekeeper = std::move(housekeeper_);
        }
        if (housekeeper && housekeeper->joinable()) {
            assert(housekeeper->get_id() != std::this_thread::get_id() &&
                   "warmpool: a pool destroyed on its own housekeeping thread");
            housekeeper->join();
        }
        assert(in_use_count() == 0 && "warmpool: a lease outlived its pool");
        // Slots leased out when this process forked: their holders lived in the parent. The
        // connections are the parent's, so they are released unclosed (see notice_fork_locked).
        for (auto& s : inherited_) {
            (void)s->conn.release();
        }
        detail::stop_locking_around_forks(&mutex_);
    }

    basic_pool(const basic_pool&) = delete;
    basic_pool& operator=(const basic_pool&) = delete;

    /// A working connection, waiting up to options::acquire_timeout.
    /// Throws acquire_timeout, connect_error (permanent failure, or retries exhausted) or
    /// pool_closed.
    [[nodiscard]] lease acquire() {
        return *checkout(deadline{opts_.acquire_timeout}, /*may_wait=*/true);
    }

    /// As acquire(), with `timeout` instead of options::acquire_timeout (milliseconds::max()
    /// waits as long as it takes). No ping and no connect attempt starts after the deadline, so
    /// the call returns within `timeout` plus the one call under way then: a ping (at most
    /// validation_timeout) or a connect attempt (at most the connect timeout given the traits).
    [[nodiscard]] lease acquire(std::chrono::milliseconds timeout) {
        if (timeout.count() < 0) {
            throw std::invalid_argument("warmpool: acquire timeout is " +
                                        std::to_string(timeout.count()) + " ms; it must be >= 0");
        }
        // milliseconds::max() and the like mean "as long as it takes".
        return *checkout(deadline{std::min(timeout, options::forever)}, /*may_wait=*/true);
    }

    /// As acquire(), by an absolute deadline of the pool's clock: the wait, every ping (at most
    /// min(validation_timeout, time left)), every connect attempt (given the time left as its
    /// timeout) and every backoff pause end by it, and nothing starts after it. A deadline
    /// already past still gets an idle connection that needs no round trip to be trusted.
    [[nodiscard]] lease acquire_until(time_point deadline_at) {
        return *checkout(absolute(deadline_at), /*may_wait=*/true);
    }

    /// As acquire_until(time_point), by the pool's wall clock (std::chrono::system_clock for
    /// the default pool): e.g. AWS Lambda's Lambda-Runtime-Deadline-Ms. The deadline is turned
    /// into the pool's clock once, at the call; a wall-clock step after that does not move it.
    /// Any duration: e.g. time_point<system_clock, milliseconds> straight from a header.
    template <class Duration, class W = wall_clock,
              class = std::enable_if_t<!std::is_same<W, Clock>::value>>
    [[nodiscard]] lease acquire_until(std::chrono::time_point<W, Duration> deadline_at) {
        // In floating-point milliseconds: no deadline, however far in the past or future, can
        // overflow the subtraction; beyond options::forever it means no limit.
        using fms = std::chrono::duration<long double, std::milli>;
        const auto now = Clock::now();
        const long double left = fms(deadline_at.time_since_epoch()).count() -
                                 fms(wall_clock::now().time_since_epoch()).count();
        time_point at = now;
        if (left >= static_cast<long double>(options::forever.count())) {
            at = saturating_add(now, options::forever);
        } else if (left > 0) {
            at = saturating_add(now, ms{static_cast<ms::rep>(std::ceil(left))});
        }
        return *checkout(absolute(at), /*may_wait=*/true);
    }

    /// A working connection if one is idle or may be opened now; std::nullopt when every
    /// connection is in use. Never waits for another user and never retries: it may ping an
    /// idle connection, or make one connect attempt (throwing connect_error if it fails).
    [[nodiscard]] std::optional<lease> try_acquire() {
        return checkout(deadline{opts_.acquire_timeout}, /*may_wait=*/false);
    }

    /// Opens connections until options::min_idle are open, now. Throws connect_error if one
    /// cannot be opened within options::acquire_timeout.
    void warm_up() { top_up(/*rethrow=*/true); }

    /// Applies idle_timeout, max_lifetime, leak detection and min_idle now. Connect failures
    /// while topping up are counted and reported as events, not thrown.
    void housekeep() noexcept {
        std::vector<std::unique_ptr<slot>> doomed;
        std::vector<event> leaks;
        std::uint64_t forks = 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            notice_fork_locked();
            forks = take_forks_locked();
            if (closed_) {
                announce(forks);
                return;
            }
            const auto now = detail::cheap_now<Clock>();
            scan_leaks_locked(now, leaks);
            // Oldest idle first; keep min_idle open.
            for (std::size_t i = 0; i < idle_.size();) {
                slot* s = idle_[i];
                close_reason why = close_reason::none;
                if (now >= s->expires) {
                    why = close_reason::max_lifetime;
                } else if (opts_.idle_timeout.count() > 0 && all_.size() > opts_.min_idle &&
                           idle_since(*s, now) >= opts_.idle_timeout) {
                    why = close_reason::idle_timeout;
                }
                if (why == close_reason::none) {
                    ++i;
                    continue;
                }
                idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(i));
                s->close_why = why;
                doomed.push_back(remove_locked(s));
            }
        }
        announce(forks);
        flush(leaks);
        destroy(std::move(doomed));
        top_up(/*rethrow=*/false);
    }

    /// Closes the pool: every waiter wakes with pool_closed, idle connections close now, leases
    /// given back later close then, and any later acquire throws pool_closed. Idempotent.
    void close() noexcept {
        std::vector<std::unique_ptr<slot>> doomed;
        std::unique_ptr<std::thread> housekeeper;
        std::uint64_t forks = 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            const bool was_open = !closed_;
            closed_ = true; // first: a child closing its inherited pool starts no housekeeper
            notice_fork_locked();
            forks = take_forks_locked();
            if (was_open) {
                for (slot* s : idle_) {
                    s->close_why = close_reason::pool_closed;
                    doomed.push_back(remove_locked(s));
                }
                idle_.clear();
                for (waiter* w : waiters_) {
                    w->cv.notify_one();
                }
                wakeup_.notify_all();
            }
            // Called on the housekeeping thread itself (from on_event), the thread is left for
            // the destructor to join: it returns once it sees closed_.
            if (housekeeper_ && housekeeper_->get_id() != std::this_thread::get_id()) {
                housekeeper = std::move(housekeeper_);
            }
        }
        if (housekeeper) {
            housekeeper->join();
        }
        announce(forks);
        destroy(std::move(doomed));
    }

    // --- snapshot and restore ----------------------------------------------------------------
    // A process restored from a memory snapshot (AWS Lambda SnapStart, a VM or container
    // checkpoint) finds its connections' sockets dead or, worse, shared with every other copy
    // restored from the same snapshot; its clocks may have jumped; and every copy holds the same
    // random number generator state. Before the snapshot: close_idle(). After the restore:
    // after_restore(). A forked child needs none of this: the pool notices fork() by itself.

    /// Closes every idle connection now, politely (each backend's goodbye, bounded like any
    /// close). Call it before a snapshot, so the server frees the slots at once instead of
    /// keeping them until its idle timeout. Leases are untouched. close_reason::drained.
    void close_idle() noexcept { close_all_idle(close_reason::drained); }

    /// Forgets every connection without sending anything on its socket (the peer is gone, or
    /// shared with other restored copies; nothing may block on it): idle connections at once,
    /// leased ones when given back, and connects under way when they finish. Each is counted
    /// and reported closed with close_reason::abandoned; the traits' abandon() (if any) makes
    /// its destruction silent. Later acquires open new connections.
    void abandon_connections() noexcept { close_all_idle(close_reason::abandoned); }

    /// The world changed under the pool (a snapshot restore, a VM migration): reseeds the
    /// jitter generator, so that copies restored from one snapshot do not back off or expire in
    /// lockstep, and stops trusting the timestamps it kept. Every kept connection is pinged at
    /// its next checkout whatever its idle time, its idle clock restarts now (a monotonic clock
    /// that jumped could make it look fresh or ancient), and its lifetime ends no later than a
    /// new jittered max_lifetime from now.
    void world_changed() noexcept {
        const auto fresh_seed = seed();
        std::lock_guard<std::mutex> lock(mutex_);
        rng_.seed(fresh_seed);
        ++world_epoch_;
        fleet_capacity_known_ = false; // the server's limits are read again at the next sample
        const auto now = detail::cheap_now<Clock>();
        const auto wall = detail::cheap_now<wall_clock>();
        for (const auto& p : all_) {
            slot* s = p.get();
            if (s->idle) {
                s->last_used = now;
                s->last_used_wall = wall;
                s->expires = std::min(s->expires, expiry_locked(now));
            } else {
                // A lease's use time and leak clock restart too; its lifetime is cut at
                // give-back (settle_locked), since its holder may be reading it now.
                s->leased_at = now;
            }
        }
    }

    /// After a snapshot restore: abandon_connections(), then world_changed().
    void after_restore() noexcept {
        abandon_connections();
        world_changed();
    }

    /// A consistent snapshot of gauges and counters.
    [[nodiscard]] pool_stats stats() const {
        pool_stats s;
        std::uint64_t forks = 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            // In a child after fork(), every call shows the child's pool, this one included:
            // forgetting the parent's connections is bookkeeping, not an observable change.
            auto* self = const_cast<basic_pool*>(this);
            self->notice_fork_locked();
            forks = self->take_forks_locked();
            s = stats_;
            s.open = all_.size();
            s.idle = idle_.size();
            s.in_use = all_.size() - idle_.size();
            s.waiting = waiters_.size();
            s.connecting = connecting_;
            s.max_size = opts_.max_size;
        }
        announce(forks);
        return s;
    }

    [[nodiscard]] const options& get_options() const noexcept { return opts_; }

    /// The target as Traits::describe() gave it: for logs, without secrets.
    [[nodiscard]] const std::string& target() const noexcept { return target_; }

private:
    using ms = std::chrono::milliseconds;

    struct slot {
        std::unique_ptr<connection_type> conn;
        std::uint64_t id = 0;
        std::uint64_t fork_epoch = 0;
        std::size_t index = 0; // position in all_, for O(1) removal
        time_point expires = time_point::max();
        time_point last_used{};
        wall_time_point last_used_wall{};
        time_point leased_at{};
        wall_time_point leased_at_wall{}; // the wall clock read at checkout, for give_back()
        std::chrono::microseconds acquire_wait{0}; // how long the lease's acquire took
        std::uint64_t abandon_epoch = 0;           // abandon_connections() calls when it was opened
        std::uint64_t world_epoch = 0;             // world_changed() calls when it was last checked
        bool idle = false;                         // in idle_
        bool leak_reported = false;
        close_reason close_why = close_reason::none;
    };

    // A caller queued in acquire(). It lives on that caller's stack; whoever serves it does so
    // under the lock and notifies its own condition variable, so wakeups go first come, first
    // served and to exactly one thread.
    struct waiter {
        std::condition_variable cv;
        slot* handed = nullptr;   // a connection given to it directly
        bool may_connect = false; // a unit of capacity reserved for it to connect with
        time_point since{};       // when it started waiting, by Clock
    };

    // When acquire() started needing the clock; read lazily so the warm path reads none. An
    // absolute deadline (acquire_until) is started from the outset.
    struct deadline {
        ms timeout;
        bool hard = false; // acquire_until(): no ping, connect or pause may end after `at`
        bool started = false;
        time_point start{};
        time_point at{};

        explicit deadline(ms t) noexcept : timeout(t) {}

        // Time left at `now`, in whole milliseconds (zero or less: none).
        ms left(time_point now) const noexcept {
            return now >= at ? ms{0} : std::chrono::duration_cast<ms>(at - now);
        }

        time_point get() {
            if (!started) {
                started = true;
                start = Clock::now();
                at = saturating_add(start, timeout);
            }
            return at;
        }
    };

    static deadline absolute(time_point at) {
        deadline dl{ms{0}};
        dl.hard = true;
        dl.started = true;
        dl.start = Clock::now();
        dl.at = at;
        dl.timeout = dl.left(dl.start);
        return dl;
    }

    static options validated(options o) {
        o.validate();
        if (o.reset_on_release && !detail::has_reset<Traits>::value) {
            throw std::invalid_argument(
                "warmpool::options::reset_on_release is on, but these traits have no reset(): "
                "turn it off, or give the traits a reset() (see warmpool/traits.hpp)");
        }
        // Past about 100 years a duration means "no limit"; clamped once here, every later
        // conversion to the clocks' nanoseconds and every deadline stays far from overflow.
        for (options::duration* d :
             {&o.acquire_timeout, &o.handoff_after, &o.validation_window, &o.validation_timeout,
              &o.socket_check_after, &o.idle_timeout, &o.max_lifetime, &o.connect_backoff_base,
              &o.connect_backoff_cap, &o.leak_threshold, &o.housekeeping_interval,
              &o.fleet.sample_interval, &o.fleet.capacity_ttl, &o.fleet.reap_idle_after}) {
            *d = std::min(*d, options::forever);
        }
        return o;
    }

    // options::fleet needs the traits' fleet_sample(), and a backend that has a server to share.
    void check_fleet_support() const {
        if (!opts_.fleet.enabled) {
            return;
        }
        if constexpr (!detail::has_fleet_sample<Traits>::value) {
            throw std::invalid_argument(
                "warmpool::options::fleet.enabled is on, but these traits have no "
                "fleet_sample(): turn it off, or give the traits one (see warmpool/traits.hpp)");
        } else if constexpr (detail::has_fleet_unsupported<Traits>::value) {
            const std::string why = Traits::fleet_unsupported(config_);
            if (!why.empty()) {
                throw std::invalid_argument("warmpool::options::fleet.enabled is on, but " + why);
            }
        }
    }

    static std::uint_fast32_t seed() noexcept {
        try {
            return std::random_device{}();
        } catch (...) {
            return static_cast<std::uint_fast32_t>(
                std::chrono::system_clock::now().time_since_epoch().count());
        }
    }

    // t + d, or time_point::max() where that would overflow; d is compared in milliseconds,
    // so converting it to the clock's finer unit happens only once it is known to fit.
    static time_point saturating_add(time_point t, ms d) noexcept {
        if (d.count() <= 0) {
            return t;
        }
        // A clock whose readings are negative (a test's, or one with a late epoch) leaves
        // max() - t out of range, while t + d, with d at most options::forever, fits.
        if (t.time_since_epoch().count() >= 0 &&
            d >= std::chrono::duration_cast<ms>(time_point::max() - t)) {
            return time_point::max();
        }
        return t + std::chrono::duration_cast<typename Clock::duration>(d);
    }

    template <class D>
    static std::chrono::microseconds micros(D d) noexcept {
        return std::chrono::duration_cast<std::chrono::microseconds>(d);
    }

    template <class D>
    static long long millis(D d) noexcept {
        return static_cast<long long>(std::chrono::duration_cast<ms>(d).count());
    }

    // Idle time on the monotonic clock: what closes a connection for idle_timeout.
    static ms idle_since(const slot& s, time_point now) noexcept {
        return std::chrono::duration_cast<ms>(now - s.last_used);
    }

    // The larger of monotonic and wall-clock idle time, for deciding whether to ping: a process
    // frozen while the monotonic clock stood still (a paused VM, a suspended laptop) still shows
    // its real idle time on the wall clock, and a wall clock stepped backwards still leaves the
    // monotonic one. A wall-clock step can only cause a ping, never a close.
    // A wall clock more than validation_window behind the last use was stepped back (during the
    // idle time or the lease): it can no longer show a freeze, so the connection counts as idle
    // long enough for a ping. Less than that is the two coarse clocks ticking apart (give-back
    // derives the last use's wall time from the monotonic clock), not a step.
    ms suspect_idle(const slot& s, time_point now, wall_time_point wall) const noexcept {
        const auto walled = std::chrono::duration_cast<ms>(wall - s.last_used_wall);
        if (walled < -opts_.validation_window) {
            return options::forever;
        }
        return std::max(idle_since(s, now), walled);
    }

    // --- checkout ----------------------------------------------------------------------------

    std::optional<lease> checkout(deadline dl, bool may_wait) {
        std::unique_lock<std::mutex> lock(mutex_);
        if (fork_epoch_seen() != fork_epoch_) { // rare: announced at once, whatever comes next
            forget_parent_locked();
            const auto forks = take_forks_locked();
            lock.unlock();
            announce(forks);
            lock.lock();
        }
        if (opts_.leak_threshold.count() > 0) {
            std::vector<event> leaks;
            scan_leaks_locked(detail::cheap_now<Clock>(), leaks);
            if (!leaks.empty()) {
                lock.unlock();
                flush(leaks);
                lock.lock();
            }
        }
        bool waited = false;
        if (closed_) {
            throw pool_closed("warmpool: acquire on a closed pool (" + target_ + ")");
        }
        slot* s = nullptr; // stays null when this caller is to connect a new one
        // An idle connection with callers queued exists only while the oldest of them has
        // waited less than handoff_after (see hand_over_locked): a newcomer may take it.
        if (!idle_.empty()) {
            s = idle_.back(); // most recently used: the warmest connection
            idle_.pop_back();
        } else if (waiters_.empty() && capacity_used_locked() < opts_.max_size) {
            ++connecting_;
        } else if (!may_wait) {
            return std::nullopt;
        } else {
            waited = true;
            s = wait_locked(lock, dl);
        }
        time_point now{};
        bool distrust = false; // world_changed() since it was last checked
        if (s != nullptr) {
            now = detail::cheap_now<Clock>();
            s->leased_at = now;
            s->idle = false;
            distrust = s->world_epoch != world_epoch_;
            s->world_epoch = world_epoch_;
            ++stats_.acquired;
        }
        lock.unlock();

        if (s != nullptr) {
            const close_reason bad = check(*s, now, dl, distrust);
            if (bad == close_reason::none) {
                acquired(*s, dl, waited);
                return lease(this, s);
            }
            if (bad == no_time_to_check) {
                unlease_unchecked(s, distrust);
                throw_late(dl, " The deadline left no time to validate the idle connection "
                               "(a ping takes up to validation_timeout, " +
                                   std::to_string(opts_.validation_timeout.count()) + " ms).");
            }
            // The caller never sees a dead connection: close it and connect a replacement
            // with the same unit of capacity, so no one queued behind can take it.
            discard_and_reconnect(s, bad);
            if (may_wait) {
                give_up_if_late(dl, " The idle connection failed its check after the deadline "
                                    "had passed, so no replacement was opened; keep "
                                    "validation_timeout (" +
                                        std::to_string(opts_.validation_timeout.count()) +
                                        " ms) well below the acquire timeout.");
            }
        } else if (waited) {
            give_up_if_late(dl, " Room to connect came free only after the deadline.");
        }
        // try_acquire() never waits, so it never backs off to retry either: one attempt.
        slot* fresh = connect_with_retry(dl, may_wait ? opts_.connect_attempts : 1);
        acquired(*fresh, dl, waited);
        return lease(this, fresh);
    }

    // No ping or connect starts after the deadline: so acquire() overruns its timeout by the one
    // call under way at the deadline, never by two. Called holding a unit of capacity for a
    // connect, which it gives back before throwing.
    void give_up_if_late(deadline& dl, const std::string& why) {
        if (!dl.started || Clock::now() <= dl.at) {
            return;
        }
        release_capacity();
        throw_late(dl, why);
    }

    [[noreturn]] void throw_late(const deadline& dl, const std::string& why) {
        std::string message;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            ++stats_.timeouts;
            message = timeout_message_locked(dl.timeout);
        }
        throw acquire_timeout(message + why);
    }

    // An idle connection taken for a checkout that ran out of time before it could be checked:
    // it goes back untouched, as if never taken.
    void unlease_unchecked(slot* s, bool distrust) noexcept {
        std::unique_ptr<slot> doomed;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            --stats_.acquired;
            if (distrust) {
                s->world_epoch = world_epoch_ - 1; // still to be pinged at its next checkout
            }
            if (closed_ || abandoned_locked(*s)) {
                s->close_why =
                    abandoned_locked(*s) ? close_reason::abandoned : close_reason::pool_closed;
                doomed = remove_locked(s);
            } else {
                hand_over_locked(s, detail::cheap_now<Clock>());
            }
        }
        destroy_one(std::move(doomed));
    }

    // close_idle() and abandon_connections(): every idle connection closed for `why` (closed
    // silently by destroy_one() when abandoned). Abandoning also marks every connection open or
    // connecting now, so that leases and connects under way are forgotten when they come back.
    void close_all_idle(close_reason why) noexcept {
        std::vector<std::unique_ptr<slot>> doomed;
        std::uint64_t forks = 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            notice_fork_locked();
            forks = take_forks_locked();
            if (why == close_reason::abandoned) {
                abandon_epoch_.store(abandon_epoch_.load(std::memory_order_relaxed) + 1,
                                     std::memory_order_relaxed);
            }
            for (slot* s : idle_) {
                s->close_why = why;
                doomed.push_back(remove_locked(s));
            }
            idle_.clear();
        }
        announce(forks);
        destroy(std::move(doomed));
    }

    // The connection was open when abandon_connections() last ran: it must be forgotten, not
    // kept, used or closed with a goodbye. Checked wherever a connection is kept or closed.
    bool abandoned_locked(const slot& s) const noexcept {
        return s.abandon_epoch != abandon_epoch_.load(std::memory_order_relaxed);
    }

    // Blocks until this caller is handed a connection (returned), is granted capacity to connect
    // (nullptr), the pool closes (throws pool_closed) or the deadline passes (throws
    // acquire_timeout).
    slot* wait_locked(std::unique_lock<std::mutex>& lock, deadline& dl) {
        waiter w;
        waiters_.push_back(&w);
        const auto until = dl.get();
        w.since = dl.start;
        while (w.handed == nullptr && !w.may_connect && !closed_) {
            if (!idle_.empty() && waiters_.front() == &w) {
                // Woken by hand_over_locked for a connection it left in the pool; a newcomer
                // may have been quicker, in which case this caller waits on, still first.
                waiters_.pop_front();
                w.handed = idle_.back();
                idle_.pop_back();
                wake_front_for_idle_locked(); // two came back at once: the next takes the other
                break;
            }
            if (Clock::now() >= until) {
                std::string message = timeout_message_locked(dl.timeout); // counts this waiter
                remove_waiter_locked(&w);
                wake_front_for_idle_locked(); // the next in line may take it now
                ++stats_.timeouts;
                note_wait_locked(dl);
                throw acquire_timeout(message);
            }
            detail::wait_until<Clock>(w.cv, lock, until);
        }
        if (w.handed == nullptr && !w.may_connect) {
            remove_waiter_locked(&w);
            throw pool_closed("warmpool: the pool was closed while waiting for a connection to " +
                              target_);
        }
        // Served waiters were already dequeued by whoever served them.
        note_wait_locked(dl);
        return w.handed;
    }

    void note_wait_locked(deadline& dl) {
        const auto waited = micros(Clock::now() - dl.start);
        ++stats_.waits;
        stats_.wait_time_total += waited;
        stats_.wait_time_max = std::max(stats_.wait_time_max, waited);
    }

    void remove_waiter_locked(waiter* w) {
        const auto it = std::find(waiters_.begin(), waiters_.end(), w);
        if (it != waiters_.end()) {
            waiters_.erase(it);
        }
        if (closed_ && waiters_.empty()) {
            wakeup_.notify_all(); // the destructor waits for the last woken waiter to leave
        }
    }

    // What check() answers when a ping was due but the deadline left no time for one: the
    // connection is neither trusted nor condemned (never counted or reported as a close).
    static constexpr close_reason no_time_to_check = static_cast<close_reason>(0xff);

    // Runs outside the lock on a connection taken from the idle list. Cheap checks first: the
    // expiry and the backend's local state cost nothing, the socket poll one system call, the
    // ping a round trip, bounded by validation_timeout and by what is left of the deadline.
    // `distrust`: world_changed() was called since the connection was last checked, so its
    // idle time means nothing and it is pinged.
    close_reason check(slot& s, time_point now, deadline& dl, bool distrust) noexcept {
        const auto wall = detail::cheap_now<wall_clock>();
        s.leased_at_wall = wall;
        if (now >= s.expires) {
            return close_reason::max_lifetime;
        }
        if (opts_.idle_timeout.count() > 0 && idle_since(s, now) >= opts_.idle_timeout) {
            return close_reason::idle_timeout;
        }
        const ms idle = suspect_idle(s, now, wall);
        connection_type& c = *s.conn;
        bool dead = Traits::is_broken(c);
        bool must_ping = distrust || idle >= opts_.validation_window;
        const char* what = "the backend reported the connection broken";
        if (!dead && idle >= opts_.socket_check_after) {
            switch (detail::to_peer_state(Traits::peer_closed(c))) {
            case peer_state::closed:
                dead = true;
                what = "the server closed the connection while it was idle";
                break;
            case peer_state::unsure:
                must_ping = true; // the socket shows something only a round trip can tell
                break;
            case peer_state::open:
                break;
            }
        }
        if (!dead && must_ping) {
            // The acquire deadline runs from here at the latest: a replacement connect after a
            // failed ping gets only what is left of it.
            (void)dl.get();
            ms budget = opts_.validation_timeout;
            if (dl.hard) {
                budget = std::min(budget, dl.left(Clock::now()));
                if (budget.count() <= 0) {
                    return no_time_to_check;
                }
            }
            count([](pool_stats& st) { ++st.pings; });
            if (!Traits::ping(c, budget)) {
                dead = true;
                what = "the ping failed or timed out";
            }
        }
        if (!dead) {
            return close_reason::none;
        }
        count([](pool_stats& st) { ++st.validation_failures; });
        emit({event_type::validation_failed, s.id, close_reason::validation_failed, micros(idle),
              what});
        return close_reason::validation_failed;
    }

    // The acquire's duration goes into pool_stats::acquire_time when the lease comes back,
    // under the lock give-back takes anyway: recording it now would cost the warm path a lock.
    // A checkout that neither waited, pinged nor connected read no clock and counts as 0.
    void acquired(slot& s, deadline& dl, bool waited) noexcept {
        s.acquire_wait =
            (waited || dl.started) ? micros(Clock::now() - dl.start) : std::chrono::microseconds{0};
        if (opts_.on_event) {
            emit({event_type::acquired, s.id, close_reason::none, s.acquire_wait, {}});
        }
    }

    // A connection that failed its checkout check is closed; its capacity turns into a connect
    // for the same caller.
    void discard_and_reconnect(slot* s, close_reason why) {
        std::unique_ptr<slot> doomed;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            --stats_.acquired; // it was never handed out
            s->close_why = abandoned_locked(*s) ? close_reason::abandoned : why;
            doomed = remove_locked(s);
            --closing_; // the unit passes straight to this caller's connect
            ++connecting_;
        }
        destroy_one(std::move(doomed), /*free_capacity=*/false);
    }

    // Called holding one unit of capacity (counted in connecting_). Opens a connection with
    // full-jitter backoff on transient failures, making at most `max_attempts` attempts (0 = as
    // many as the deadline allows); on giving up, frees the capacity for the next waiter and
    // throws.
    slot* connect_with_retry(deadline& dl, unsigned max_attempts) {
        std::unique_ptr<slot> fresh;
        try {
            fresh = std::make_unique<slot>();
        } catch (...) {
            release_capacity();
            throw;
        }
        std::unique_ptr<connection_type> conn;
        std::string last_error;
        unsigned attempts = 0;
        const auto until = dl.get();
        std::uint64_t abandon_epoch = 0; // abandon_connections() calls when the attempt began
        std::chrono::microseconds created_in{0};
        for (;;) { // until a connection is registered
            // close() ran while this caller pinged, since it was granted room, or while the
            // connection it opened was abandoned.
            if (closed_) {
                release_capacity();
                throw pool_closed("warmpool: the pool was closed before connecting to " + target_);
            }
            for (;;) {
                if (dl.hard && dl.left(Clock::now()).count() <= 0) {
                    if (attempts == 0) {
                        release_capacity();
                        throw_late(dl, " The deadline left no time to open a connection.");
                    }
                    give_up_connect(
                        connect_failure_message(last_error, true, attempts, max_attempts, dl) +
                            " The deadline passed before another attempt could start.",
                        true);
                }
                ++attempts;
                bool transient = false;
                abandon_epoch = abandon_epoch_.load(std::memory_order_relaxed);
                const auto attempt_start = Clock::now();
                try {
                    const auto left = std::chrono::duration_cast<ms>(until - attempt_start);
                    conn = Traits::connect(config_, std::max(left, ms{1}));
                    if (!conn) {
                        throw connect_error("the backend returned no connection", false);
                    }
                    created_in = micros(Clock::now() - attempt_start);
                    break;
                } catch (const connect_error& e) {
                    transient = e.transient();
                    last_error = e.what();
                } catch (const std::exception& e) {
                    last_error = e.what();
                } catch (...) {
                    last_error = "unknown exception from the backend's connect";
                }
                {
                    std::lock_guard<std::mutex> lock(mutex_);
                    ++stats_.connect_failures;
                    last_connect_error_ = last_error;
                }
                emit({event_type::connect_failed, 0, close_reason::none,
                      micros(Clock::now() - attempt_start), last_error});

                const bool out_of_attempts = max_attempts != 0 && attempts >= max_attempts;
                if (!transient || out_of_attempts) {
                    give_up_connect(
                        connect_failure_message(last_error, transient, attempts, max_attempts, dl),
                        transient);
                }
                const auto pause = backoff(attempts);
                if (saturating_add(Clock::now(), pause) >= until) {
                    give_up_connect(
                        connect_failure_message(last_error, transient, attempts, max_attempts, dl) +
                            " The acquire deadline (" + std::to_string(dl.timeout.count()) +
                            " ms) left no time for another attempt.",
                        transient);
                }
                std::unique_lock<std::mutex> lock(mutex_);
                const auto resume = saturating_add(Clock::now(), pause);
                while (!closed_ && Clock::now() < resume) {
                    detail::wait_until<Clock>(wakeup_, lock, resume);
                }
                if (closed_) {
                    lock.unlock();
                    release_capacity();
                    throw pool_closed("warmpool: the pool was closed while connecting to " +
                                      target_);
                }
            }

            const auto now = detail::cheap_now<Clock>();
            slot* s = fresh.get();
            std::unique_ptr<slot> doomed; // opened while close() ran: counted, then closed
            std::uint64_t stale_id = 0;   // opened across abandon_connections(): forgotten
            fresh->conn = std::move(conn);
            {
                std::lock_guard<std::mutex> lock(mutex_);
                ++stats_.created;
                stats_.create_time.record(created_in);
                if (abandon_epoch != abandon_epoch_.load(std::memory_order_relaxed)) {
                    // A restore from a snapshot taken mid-connect: the socket may be dead or shared
                    // with other copies. Counted as opened and abandoned; this caller connects
                    // again at once, with the same unit of capacity: no failure of the server's.
                    stale_id = ++last_id_;
                    ++stats_.closed;
                    ++stats_.closed_abandoned;
                } else {
                    --connecting_;
                    s->id = ++last_id_;
                    s->fork_epoch = fork_epoch_;
                    s->abandon_epoch = abandon_epoch;
                    s->world_epoch = world_epoch_;
                    s->expires = expiry_locked(now);
                    s->last_used = now;
                    s->last_used_wall = detail::cheap_now<wall_clock>();
                    s->leased_at = now;
                    s->leased_at_wall = s->last_used_wall;
                    s->index = all_.size();
                    all_.push_back(std::move(fresh));
                    if (closed_) {
                        s->close_why = close_reason::pool_closed;
                        doomed = remove_locked(s);
                    } else {
                        ++stats_.acquired;
                    }
                }
            }
            if (stale_id != 0) {
                emit({event_type::connected, stale_id, close_reason::none, created_in, {}});
                forget(std::move(fresh->conn));
                emit({event_type::closed, stale_id, close_reason::abandoned, {}, {}});
                continue;
            }
            emit({event_type::connected,
                  s->id,
                  close_reason::none,
                  micros(Clock::now() - dl.start),
                  {}});
            if (doomed) {
                destroy_one(std::move(doomed)); // outside the lock, like every close
                throw pool_closed("warmpool: the pool was closed while connecting to " + target_);
            }
            return s;
        }
    }

    // Destroys a connection the pool abandons, silently where the traits know how.
    static void forget(std::unique_ptr<connection_type> conn) noexcept {
        if (!conn) {
            return;
        }
        if constexpr (detail::has_abandon<Traits>::value) {
            Traits::abandon(*conn);
        }
        conn.reset();
    }

    [[noreturn]] void give_up_connect(const std::string& message, bool transient) {
        release_capacity();
        throw connect_error(message, transient);
    }

    void release_capacity() noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        --connecting_;
        wake_next_for_capacity_locked();
    }

    std::string connect_failure_message(const std::string& last, bool transient, unsigned attempts,
                                        unsigned max_attempts, deadline& dl) const {
        std::string m = "warmpool: could not connect to " + target_ + ": " + last + " (";
        m += std::to_string(attempts) + (attempts == 1 ? " attempt" : " attempts");
        m += " in " + std::to_string(millis(Clock::now() - dl.start)) + " ms).";
        if (!transient) {
            m += " The failure is permanent, so it was not retried: check the connect string, "
                 "credentials and database name.";
        } else if (max_attempts == 1 && opts_.connect_attempts != 1) {
            m += " try_acquire() makes one attempt and never retries.";
        } else if (max_attempts != 0 && attempts >= max_attempts) {
            m += " options::connect_attempts (" + std::to_string(max_attempts) + ") reached.";
        }
        return m;
    }

    ms backoff(unsigned attempt) {
        // Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))].
        const auto base = opts_.connect_backoff_base.count();
        const auto cap = opts_.connect_backoff_cap.count();
        long long ceiling = base;
        for (unsigned i = 1; i < attempt && ceiling < cap; ++i) {
            ceiling *= 2;
        }
        ceiling = std::min<long long>(ceiling, cap);
        std::lock_guard<std::mutex> lock(mutex_);
        std::uniform_int_distribution<long long> pick(0, ceiling);
        return ms{pick(rng_)};
    }

    time_point expiry_locked(time_point now) {
        if (opts_.max_lifetime.count() <= 0) {
            return time_point::max();
        }
        // Up to 2.5% earlier, so connections opened together do not expire together.
        // In milliseconds: even options::forever times 250 fits, where nanoseconds would not.
        std::uniform_int_distribution<long long> pick(0, 250);
        const ms shave = opts_.max_lifetime * pick(rng_) / 10'000;
        return saturating_add(now, opts_.max_lifetime - shave);
    }

    // --- give back ---------------------------------------------------------------------------

    void give_back(slot* s, bool invalidate) noexcept {
        const std::uint64_t id = s->id; // s may be freed or handed on once the lock is released
        // A lease held across fork() and given back in the child: the connection is the
        // parent's. Nothing is sent on it, counted or reported; the slot is freed.
        if (s->fork_epoch != fork_epoch_seen()) {
            std::uint64_t forks = 0;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                notice_fork_locked();
                forget_inherited_locked(s);
                forks = take_forks_locked();
            }
            announce(forks);
            return;
        }
        // Otherwise the slot was made in this process after the pool's last look at the fork
        // count, which has not moved since: there is no fork to notice here.
        close_reason why = invalidate ? close_reason::invalidated : close_reason::none;
        if (s->abandon_epoch != abandon_epoch_.load(std::memory_order_relaxed)) {
            // Leased when abandon_connections() ran: not a byte more on it, rollback included.
            why = close_reason::abandoned;
        }
        release_work work = why == close_reason::none ? tidy(*s, why) : release_work{};
        std::unique_ptr<slot> doomed;
        std::chrono::microseconds held{0};
        bool leak_returned = false;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            settle_locked(s, why, work, held, leak_returned, doomed);
        }
        if (opts_.on_event) {
            if (work.rolled_back) {
                emit({event_type::rolled_back, id, why, held, {}});
            }
            if (work.reset) {
                emit({event_type::reset, id, why, held, {}});
            }
            if (leak_returned) {
                emit({event_type::leak_returned, id, close_reason::none, held, {}});
            }
            if (work.fleet) {
                emit_fleet(id, *work.fleet);
            }
            emit({event_type::released, id, close_reason::none, held, {}});
        }
        destroy_one(std::move(doomed));
    }

    // A fleet sample taken at give-back (options::fleet), and what settle_locked made of it.
    struct fleet_result {
        fleet_reading reading;
        std::chrono::microseconds took{0};
        std::size_t capacity = 0; // the binding limit (0: unknown, no decision)
        std::size_t in_use = 0;   // against it, zombies just ended excluded
        bool user_limit = false;  // the binding limit is the user's, not the server's
        bool over = false;        // at or above close_above
        bool closing = false;     // so this connection is closed (fleet_pressure)
    };

    struct release_work {
        bool rolled_back = false;
        bool reset = false;
        std::optional<fleet_result> fleet;
    };

    // Under the lock, the bookkeeping of a give-back: counts, then pools the connection (or
    // hands it to a waiter) or takes it out to be closed.
    void settle_locked(slot* s, close_reason& why, release_work& work,
                       std::chrono::microseconds& held, bool& leak_returned,
                       std::unique_ptr<slot>& doomed) {
        const auto now = detail::cheap_now<Clock>();
        held = micros(now - s->leased_at);
        stats_.acquire_time.record(s->acquire_wait);
        stats_.use_time.record(held);
        leak_returned = s->leak_reported;
        s->leak_reported = false;
        if (work.rolled_back) {
            ++stats_.rollbacks;
        }
        if (work.reset) {
            ++stats_.resets;
        }
        if (abandoned_locked(*s)) {
            why = close_reason::abandoned; // abandon_connections() ran during the give-back
        } else if (why == close_reason::none && closed_) {
            why = close_reason::pool_closed;
        } else if (why == close_reason::none && s->world_epoch != world_epoch_) {
            // world_changed() ran during the lease: its lifetime, read from a clock that may
            // have jumped, ends no later than a new one from now (it is pinged at its next
            // checkout, since its world_epoch stays behind).
            s->expires = std::min(s->expires, expiry_locked(now));
        }
        if (why == close_reason::none && now >= s->expires) {
            why = close_reason::max_lifetime;
        }
        if (work.fleet) {
            settle_fleet_locked(*work.fleet, why, now);
        }
        if (why != close_reason::none) {
            s->close_why = why;
            doomed = remove_locked(s);
            return;
        }
        s->last_used = now;
        // The wall clock read at checkout plus the monotonic time held saves a clock read. A
        // freeze during the lease can only make the next idle time look longer than it is (one
        // ping more); a wall clock stepped back during it shows at the next checkout as a wall
        // clock behind this value, which forces a ping too (suspect_idle).
        s->last_used_wall =
            s->leased_at_wall +
            std::chrono::duration_cast<typename wall_clock::duration>(now - s->leased_at);
        hand_over_locked(s, now);
    }

    // Outside the lock, on a connection given back: what must happen before anyone else may use
    // it. Sets `why` when it must be closed instead. Each step is bounded by validation_timeout,
    // so giving a lease back never blocks longer than that per round trip, even on a hung server.
    // abandon_connections() may run during any step (a restore landing mid-rollback): each step
    // after the first is skipped once it has, so nothing more is sent on the socket.
    release_work tidy(slot& s, close_reason& why) noexcept {
        connection_type& c = *s.conn;
        const auto abandoned = [&] {
            if (s.abandon_epoch == abandon_epoch_.load(std::memory_order_relaxed)) {
                return false;
            }
            why = close_reason::abandoned;
            return true;
        };
        release_work done;
        if (Traits::is_broken(c)) {
            why = close_reason::broken;
            return done;
        }
        if (Traits::in_transaction(c)) {
            // One user's unfinished transaction must never reach the next user.
            done.rolled_back = true;
            if (!Traits::rollback(c, opts_.validation_timeout)) {
                why = close_reason::broken;
                return done;
            }
        }
        if constexpr (detail::has_reset<Traits>::value) {
            if (opts_.reset_on_release && !abandoned()) {
                done.reset = true;
                if (!Traits::reset(c, config_, opts_.validation_timeout)) {
                    why = close_reason::broken;
                    return done;
                }
            }
        }
        if constexpr (detail::has_reusable<Traits>::value) {
            if (!abandoned() && !Traits::reusable(c, config_)) {
                why = close_reason::rejected_on_release;
            }
        }
        if (opts_.fleet.enabled && why == close_reason::none && !abandoned()) {
            sample_fleet(c, why, done);
        }
        return done;
    }

    // --- the fleet policy (warmpool/fleet.hpp) ------------------------------------------------

    // Outside the lock, last at give-back: on a sampled give-back, one round trip asks the
    // server how full it is (and ends zombies, when asked). Unsampled give-backs only take the
    // lock for the coin. A query that failed in a way that leaves the connection unreadable
    // (timeout, I/O error) closes it, as a failed rollback does.
    void sample_fleet(connection_type& c, close_reason& why, release_work& done) noexcept {
        if constexpr (detail::has_fleet_sample<Traits>::value) {
            fleet_request req;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                const time_point now = Clock::now();
                if (!fleet_due_locked(now)) {
                    return;
                }
                fleet_last_sample_ = now;
                fleet_sampled_ = true;
                req.with_capacity = !fleet_capacity_known_ ||
                                    now - fleet_capacity_read_ >= opts_.fleet.capacity_ttl;
                req.reap = opts_.fleet.reap;
                if (req.reap) {
                    req.reap_idle_after = opts_.fleet.reap_idle_after;
                    req.reap_max = opts_.fleet.reap_max;
                }
            }
            fleet_result r;
            const time_point start = Clock::now();
            r.reading = Traits::fleet_sample(c, config_, req, opts_.validation_timeout);
            r.took = micros(Clock::now() - start);
            if (!r.reading.ok && !r.reading.usable) {
                why = close_reason::broken;
            }
            done.fleet.emplace(std::move(r));
        } else {
            (void)c;
            (void)why;
            (void)done;
        }
    }

    // Whether this give-back samples: never within sample_interval of the last sample; always
    // the pool's first (it knows nothing yet: a cold start) and while the last sample found the
    // server at or above close_above (under pressure each give-back's slot matters, and the
    // next sample tells when it is over); otherwise a coin weighted by sample_fraction (none at
    // 1, so a fraction of 1 is deterministic).
    bool fleet_due_locked(time_point now) {
        const fleet_options& f = opts_.fleet;
        if (fleet_sampled_ && f.sample_interval.count() > 0 &&
            now - fleet_last_sample_ < f.sample_interval) {
            return false;
        }
        if (!fleet_sampled_ || fleet_pressure_ || f.sample_fraction >= 1.0) {
            return true;
        }
        std::uniform_real_distribution<double> coin(0.0, 1.0);
        return coin(rng_) < f.sample_fraction;
    }

    // Under the lock at give-back: counts the sample, refreshes the cached capacity, and closes
    // the connection when the fleet is at or above close_above of the binding limit (the
    // server's or the user's, whichever is fuller). Not when a caller waits for it: handing it
    // over takes no slot from the server, while closing it would make that caller open one.
    void settle_fleet_locked(fleet_result& r, close_reason& why, time_point now) {
        ++stats_.fleet_samples;
        if (!r.reading.ok) {
            ++stats_.fleet_sample_failures;
            return;
        }
        stats_.fleet_reaped += r.reading.reaped;
        // Limits come when asked (capacity_ttl), and whenever the traits send them anyway:
        // which of the user's limits binds can change with the counts (PostgreSQL's role and
        // database limits), so a reading's user limit goes with its own counts.
        if (r.reading.server_capacity > 0) {
            fleet_server_capacity_ = r.reading.server_capacity;
            fleet_user_capacity_ = r.reading.user_capacity;
            fleet_capacity_read_ = now;
            fleet_capacity_known_ = true;
        }
        if (!fleet_capacity_known_) {
            return; // the server's limit could not be read: no basis for a decision
        }
        // The traits' counts leave out the zombies this sample ended (fleet_reading).
        r.capacity = fleet_server_capacity_;
        r.in_use = r.reading.server_in_use;
        if (fleet_user_capacity_ > 0) {
            const std::size_t user_in_use = r.reading.user_in_use;
            // user_in_use / user_cap > in_use / capacity, without division.
            if (static_cast<double>(user_in_use) * static_cast<double>(r.capacity) >
                static_cast<double>(r.in_use) * static_cast<double>(fleet_user_capacity_)) {
                r.capacity = fleet_user_capacity_;
                r.in_use = user_in_use;
                r.user_limit = true;
            }
        }
        stats_.fleet_capacity = r.capacity;
        stats_.fleet_in_use = r.in_use;
        r.over = static_cast<double>(r.in_use) >=
                 opts_.fleet.close_above * static_cast<double>(r.capacity);
        fleet_pressure_ = r.over;
        if (r.over && why == close_reason::none && waiters_.empty()) {
            why = close_reason::fleet_pressure;
            r.closing = true;
        }
    }

    void emit_fleet(std::uint64_t id, const fleet_result& r) const noexcept {
        try {
            if (!r.reading.ok) {
                // The traits' text says whether the connection can be kept (fleet_reading).
                const std::string text = "the fleet sample failed: " + r.reading.error;
                emit({event_type::fleet_sample_failed, id, close_reason::none, r.took, text});
                return;
            }
            std::string text;
            if (r.capacity == 0) {
                text = "server connections: " + std::to_string(r.reading.server_in_use) +
                       " in use, limit unknown: no decision";
            } else {
                const auto percent = r.in_use * 100 / r.capacity;
                text = "connections: " + std::to_string(r.in_use) + " in use of " +
                       std::to_string(r.capacity) + " (" + std::to_string(percent) + "%, " +
                       (r.user_limit ? "the user's limit" : "the server's limit") + ")";
            }
            if (r.reading.reaped > 0) {
                text += "; ended " + std::to_string(r.reading.reaped) + " zombie connection" +
                        (r.reading.reaped == 1 ? "" : "s");
            }
            if (!r.reading.reap_error.empty()) {
                text += "; zombies not ended: " + r.reading.reap_error;
            }
            if (r.capacity != 0) {
                const auto threshold = static_cast<long>(opts_.fleet.close_above * 100.0 + 0.5);
                text += r.closing ? "; at or above fleet.close_above (" +
                                        std::to_string(threshold) + "%): this connection is closed"
                        : r.over ? "; at or above fleet.close_above (" + std::to_string(threshold) +
                                       "%), but a caller is waiting for this connection: kept"
                                 : "; kept";
            }
            emit({event_type::fleet_sampled, id, close_reason::none, r.took, text});
        } catch (...) {
            // Out of memory for the message: the event is dropped, the pool carries on.
        }
    }

    // A connection becomes free. A caller that has waited handoff_after or longer gets it
    // directly, first come, first served. Below that it goes back on top of the idle stack (most
    // recently used last, so checkout takes the warmest) and the longest waiter is woken to take
    // it, unless a running thread takes it first: handing every connection to a sleeping thread
    // would cost a wakeup per checkout whenever callers outnumber connections, while a bounded
    // head start keeps the wait of the longest waiter within about handoff_after.
    void hand_over_locked(slot* s, time_point now) {
        if (!waiters_.empty()) {
            waiter* w = waiters_.front();
            if (opts_.handoff_after.count() == 0 ||
                Clock::now() - w->since >= opts_.handoff_after) {
                waiters_.pop_front();
                s->leased_at = now;
                s->idle = false;
                w->handed = s;
                w->cv.notify_one();
                wake_front_for_idle_locked(); // another may be idle, left for this one
                return;
            }
            w->cv.notify_one(); // the connection goes to idle_ below: the front waiter takes it
        }
        s->idle = true;
        idle_.push_back(s);
    }

    // Keeps one promise: while a connection is idle and callers are queued, the longest waiter
    // has been woken to take it. Called wherever either list changes; a waiter that takes one
    // calls it again, so two connections given back at once wake two waiters, not one.
    void wake_front_for_idle_locked() {
        if (!idle_.empty() && !waiters_.empty()) {
            waiters_.front()->cv.notify_one();
        }
    }

    // Open connections, connects in progress and closes in progress: what the server may see.
    std::size_t capacity_used_locked() const noexcept {
        return all_.size() + connecting_ + closing_;
    }

    // Capacity became free (a connection closed or a connect gave up): the longest waiter may
    // connect with it.
    void wake_next_for_capacity_locked() {
        if (closed_ || waiters_.empty() || capacity_used_locked() >= opts_.max_size) {
            return;
        }
        waiter* w = waiters_.front();
        waiters_.pop_front();
        ++connecting_;
        w->may_connect = true;
        w->cv.notify_one();
    }

    // --- bookkeeping -------------------------------------------------------------------------

    // Takes a slot out of all_ and counts the close. The caller closes the connection
    // outside the lock with destroy_one(), which frees its unit of capacity only once the
    // connection is gone, so the server never sees more than max_size of the pool's connections.
    std::unique_ptr<slot> remove_locked(slot* s) {
        std::unique_ptr<slot> out = take_locked(s);
        ++stats_.closed;
        switch (out->close_why) {
        case close_reason::idle_timeout:
            ++stats_.closed_idle_timeout;
            break;
        case close_reason::max_lifetime:
            ++stats_.closed_max_lifetime;
            break;
        case close_reason::validation_failed:
            ++stats_.closed_validation_failed;
            break;
        case close_reason::broken:
            ++stats_.closed_broken;
            break;
        case close_reason::invalidated:
            ++stats_.closed_invalidated;
            break;
        case close_reason::rejected_on_release:
            ++stats_.closed_rejected_on_release;
            break;
        case close_reason::abandoned:
            ++stats_.closed_abandoned;
            break;
        case close_reason::drained:
            ++stats_.closed_drained;
            break;
        case close_reason::fleet_pressure:
            ++stats_.closed_fleet_pressure;
            break;
        case close_reason::pool_closed:
        case close_reason::none:
            ++stats_.closed_pool_closed;
            break;
        }
        ++closing_;
        return out;
    }

    // A lease held across fork() came back in the child: free the slot, and leak the parent's
    // connection object on purpose, since destroying it would send a goodbye on the parent's
    // socket.
    void forget_inherited_locked(slot* s) noexcept {
        const auto it = std::find_if(inherited_.begin(), inherited_.end(),
                                     [s](const std::unique_ptr<slot>& p) { return p.get() == s; });
        if (it != inherited_.end()) {
            (void)(*it)->conn.release();
            inherited_.erase(it);
        }
    }

    // Takes a slot out of all_ in O(1), moving the last one into its place.
    std::unique_ptr<slot> take_locked(slot* s) {
        const std::size_t i = s->index;
        std::unique_ptr<slot> out = std::move(all_[i]);
        if (i + 1 != all_.size()) {
            all_[i] = std::move(all_.back());
            all_[i]->index = i;
        }
        all_.pop_back();
        return out;
    }

    std::uint64_t fork_epoch_seen() const noexcept {
        return detail::fork_epoch.load(std::memory_order_relaxed);
    }

    // In a child process after fork(): nothing the parent had is the child's. Every connection
    // is the parent's and every waiter, connect and housekeeping thread lived in the parent. The
    // child forgets them all without destroying, counting or handing out any: idle connections
    // are leaked on the spot; slots leased out are kept aside in inherited_ (a lease the forking
    // thread holds may still be given back) and freed, their connections leaked, by give-back or
    // the destructor. The condition variable a parent thread may have been waiting on is never
    // destroyed: that would wait forever for a waiter that does not exist in this process.
    void notice_fork_locked() {
        if (fork_epoch_seen() != fork_epoch_) { // one relaxed load on every call: keep it inline
            forget_parent_locked();
        }
    }

    void forget_parent_locked() {
        fork_epoch_ = fork_epoch_seen();
        for (auto& p : all_) {
            if (p->idle) {
                (void)p->conn.release();
            } else {
                inherited_.push_back(std::move(p));
            }
        }
        all_.clear();
        idle_.clear();
        waiters_.clear();
        connecting_ = 0;
        closing_ = 0;
        ++stats_.forks;
        (void)housekeeper_.release();
        // A parent thread may have been waiting on wakeup_: destroying it would wait for that
        // thread forever. A new one is built in its storage instead, the old never destroyed.
        new (&wakeup_) std::condition_variable();
        if (opts_.background_housekeeping && !closed_) {
            housekeeper_ = std::make_unique<std::thread>([this] { housekeeping_loop(); });
        }
        ++unannounced_forks_;
    }

    void scan_leaks_locked(time_point now, std::vector<event>& out) {
        if (opts_.leak_threshold.count() <= 0) {
            return;
        }
        const auto threshold =
            std::chrono::duration_cast<typename Clock::duration>(opts_.leak_threshold);
        for (const auto& p : all_) {
            slot& s = *p;
            if (s.idle || s.leak_reported || now - s.leased_at < threshold) {
                continue;
            }
            s.leak_reported = true;
            ++stats_.leaks_suspected;
            out.push_back({event_type::leak_suspected, s.id, close_reason::none,
                           micros(now - s.leased_at), "a lease has been held past leak_threshold"});
        }
    }

    void flush(std::vector<event>& events) noexcept {
        for (const event& e : events) {
            emit(e);
        }
        events.clear();
    }

    void top_up(bool rethrow) {
        for (;;) {
            bool more = false;
            std::uint64_t forks = 0;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                notice_fork_locked();
                forks = take_forks_locked();
                more = !closed_ && all_.size() + connecting_ < opts_.min_idle &&
                       capacity_used_locked() < opts_.max_size;
                connecting_ += more ? 1 : 0;
            }
            announce(forks);
            if (closed_ && rethrow) {
                throw pool_closed("warmpool: warm_up on a closed pool (" + target_ + ")");
            }
            if (!more) {
                return;
            }
            deadline dl{opts_.acquire_timeout};
            slot* s = nullptr;
            try {
                s = connect_with_retry(dl, opts_.connect_attempts);
            } catch (...) {
                if (rethrow) {
                    throw;
                }
                return;
            }
            // The new connection counted as acquired; undo that and pool it, unless close()
            // ran meanwhile: then it closes like every other idle connection did.
            std::unique_ptr<slot> doomed;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                notice_fork_locked();
                forks = take_forks_locked();
                --stats_.acquired;
                if (s->fork_epoch != fork_epoch_) {
                    forget_inherited_locked(s); // forked while connecting: the parent's
                } else if (closed_ || abandoned_locked(*s)) {
                    s->close_why = closed_ ? close_reason::pool_closed : close_reason::abandoned;
                    doomed = remove_locked(s);
                } else {
                    hand_over_locked(s, detail::cheap_now<Clock>());
                }
            }
            announce(forks);
            destroy_one(std::move(doomed)); // the next round sees closed_ and stops
        }
    }

    template <class F>
    void count(F&& f) noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        f(stats_);
    }

    // Forks noticed under the lock are announced (event_type::forked) once it is released, by
    // whichever call noticed them: one event per fork, as pool_stats::forks counts them.
    // Reads before it writes: on the warm path there is nothing to take, and no store to make.
    std::uint64_t take_forks_locked() noexcept {
        return unannounced_forks_ == 0 ? 0 : std::exchange(unannounced_forks_, 0);
    }

    void announce(std::uint64_t forks) const noexcept {
        if (forks != 0) { // rare: kept out of line, off the warm path
            announce_slow(forks);
        }
    }

    void announce_slow(std::uint64_t forks) const noexcept {
        for (; forks > 0; --forks) {
            emit({event_type::forked, 0, close_reason::none, {}, {}});
        }
    }

    void emit(const event& e) const noexcept {
        if (!opts_.on_event) {
            return;
        }
        try {
            opts_.on_event(e);
        } catch (...) {
            // An observer must not be able to break the pool.
        }
    }

    void destroy_one(std::unique_ptr<slot> s, bool free_capacity = true) noexcept {
        if (!s) {
            return;
        }
        const auto id = s->id;
        const auto why = s->close_why;
        if (why == close_reason::abandoned) {
            forget(std::move(s->conn));
        } else {
            s->conn.reset();
        }
        if (free_capacity) {
            std::lock_guard<std::mutex> lock(mutex_);
            --closing_;
            wake_next_for_capacity_locked();
        }
        emit({event_type::closed, id, why, {}, {}});
    }

    void destroy(std::vector<std::unique_ptr<slot>> doomed) noexcept {
        for (auto& s : doomed) {
            destroy_one(std::move(s));
        }
    }

    std::string timeout_message_locked(ms timeout) const {
        std::string m = "warmpool: acquire timed out after " + std::to_string(timeout.count()) +
                        " ms waiting for a connection to " + target_ + " (open " +
                        std::to_string(all_.size()) + ", idle " + std::to_string(idle_.size()) +
                        ", in use " + std::to_string(all_.size() - idle_.size()) + ", waiting " +
                        std::to_string(waiters_.size()) + ", connecting " +
                        std::to_string(connecting_) + ", max_size " +
                        std::to_string(opts_.max_size) + ").";
        if (!last_connect_error_.empty()) {
            m += " Last connect error: " + last_connect_error_;
        }
        m += " Raise max_size or acquire_timeout, or look for leases held too long "
             "(options::leak_threshold reports them).";
        return m;
    }

    // After close(): what is left in all_ is held by leases.
    std::size_t in_use_count() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return static_cast<std::size_t>(
            std::count_if(all_.begin(), all_.end(), [](const auto& p) { return !p->idle; }));
    }

    void housekeeping_loop() noexcept {
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                const auto next = saturating_add(Clock::now(), opts_.housekeeping_interval);
                while (!closed_ && Clock::now() < next) {
                    detail::wait_until<Clock>(wakeup_, lock, next);
                }
                if (closed_) {
                    return;
                }
            }
            housekeep();
        }
    }

    const config_type config_;
    const options opts_;
    const std::string target_;

    mutable std::mutex mutex_;
    std::condition_variable wakeup_;         // close(), backoff and housekeeping waits
    std::vector<std::unique_ptr<slot>> all_; // every open connection, idle or leased
    std::vector<slot*> idle_;                // least recently used first
    std::deque<waiter*> waiters_;            // first come, first served
    std::size_t connecting_ = 0;             // capacity held by connects in progress
    std::size_t closing_ = 0;                // capacity held by closes in progress
    // Written under the lock; read without it where a stale answer only delays the outcome by
    // one step (before a connect attempt, after warm_up's connect).
    std::atomic<bool> closed_{false};
    std::uint64_t unannounced_forks_ = 0; // noticed, forked event not yet sent
    std::uint64_t last_id_ = 0;
    std::uint64_t fork_epoch_ = 0;
    std::uint64_t world_epoch_ = 0; // world_changed() calls
    // abandon_connections() calls; written under the lock, read without it at give-back and
    // after a connect.
    std::atomic<std::uint64_t> abandon_epoch_{0};
    std::string last_connect_error_;
    std::minstd_rand rng_;
    // The fleet policy's memory (options::fleet), under mutex_.
    time_point fleet_last_sample_{};
    bool fleet_sampled_ = false;
    bool fleet_pressure_ = false; // the last sample found the server at or above close_above
    time_point fleet_capacity_read_{};
    bool fleet_capacity_known_ = false;
    std::size_t fleet_server_capacity_ = 0;
    std::size_t fleet_user_capacity_ = 0;
    pool_stats stats_;
    std::unique_ptr<std::thread> housekeeper_;
    std::vector<std::unique_ptr<slot>> inherited_; // leased out when this process forked
};

} // namespace warmpool

#include <warmpool/lease.hpp>
