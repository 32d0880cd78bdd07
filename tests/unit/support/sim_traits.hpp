// The simulation's backend: a "server" (sim_world) that counts every connection it sees and
// checks what the pool does to them, and traits written to the current contract of
// include/warmpool/traits.hpp (bounded rollback, reset, the release veto, peer_state, abandon).
//
// Faults are set on the world (the next connects) or on one connection (its ping, rollback,
// reset, socket, veto, round trips that take a while). A hang takes the whole timeout the pool
// passed, a slow connect its cost: on a thread the simulator drives, the call stays under way
// (other threads run) until the simulated clock gets there; on any other thread the call moves the
// clock itself.
#pragma once

#include "sim_clock.hpp"

#include <warmpool/errors.hpp>
#include <warmpool/traits.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace warmpool_sim {

using ms = std::chrono::milliseconds;

/// The pool operation a simulated user thread is running, for the checks the backend makes
/// while it runs (deadlines, connect attempts). Thread-local; null outside such operations.
struct op_context {
    enum class kind { acquire, try_acquire, other };
    kind what = kind::other;
    int step = 0;
    sim_clock::time_point start{};
    sim_clock::time_point deadline = sim_clock::time_point::max(); // acquire only
    // acquire_until(): no ping or connect may start at or after the deadline, and each is given
    // at most the time left, so none ends after it.
    bool hard = false;
    int connect_attempts = 0;
    int abandoned_connects = 0; // its own connects forgotten on completion (each is retried)
    bool permanent_failure_seen = false;
    sim_clock::duration overrun{0};         // time its own backend calls spent past the deadline
    sim_clock::duration longest_connect{0}; // its longest single connect attempt
    int parks = 0;
    std::string busy_with; // the backend call it is in, for the trace

    static op_context*& current() noexcept {
        static thread_local op_context* c = nullptr;
        return c;
    }
};

struct sim_world;

struct sim_connection {
    sim_connection(sim_world& w, std::uint64_t n, int gen) : world(w), id(n), generation(gen) {}
    ~sim_connection();
    sim_connection(const sim_connection&) = delete;
    sim_connection& operator=(const sim_connection&) = delete;

    sim_world& world;
    const std::uint64_t id; // the server's number for it: 1, 2, … in connect order
    const int generation;   // the simulated process it was opened in (0, then 1 after a fork, …)

    // What the backend will do. Only the thread that has the connection touches these (the pool
    // promises exclusive use), so they need no lock.
    bool broken = false;         // is_broken()
    bool peer_gone = false;      // peer_closed(); a ping fails too
    bool ping_fails = false;     // ping() answers no at once
    bool ping_hangs = false;     // ping() uses its whole timeout, then fails
    bool in_tx = false;          // in_transaction(): a user left a transaction open
    bool rollback_fails = false; // rollback() answers false at once
    bool rollback_hangs = false; // rollback() uses its whole timeout, then fails
    bool reset_fails = false;
    bool reset_hangs = false;
    bool veto = false;        // reusable() says no
    bool dirty = false;       // a user changed session state that reset() must undo
    bool peer_unsure = false; // peer_closed() answers peer_state::unsure (bytes under TLS)
    bool slow = false;        // ping, rollback and reset take 2 ms each (fail at a shorter timeout)

    int holders = 0;           // leases using it, counted by the simulator: never more than 1
    std::atomic<int> users{0}; // the same, counted by the stress test's threads

    // What the referee knows about it.
    sim_clock::time_point opened_at{};                 // when the connect returned it
    sim_clock::time_point released_at{};               // when it last became free (or opened)
    sim_clock::wall_clock::time_point released_wall{}; // the same, by the wall clock
    sim_clock::time_point leased_at{};                 // when it was last handed out
    sim_clock::wall_clock::time_point leased_wall{};   // the same, by the wall clock
    // When the pool believes, by the wall clock, it became free: it adds the monotonic time held
    // to the wall clock read at checkout instead of reading the wall clock again.
    sim_clock::wall_clock::time_point believed_wall{};
    const void* opened_by = nullptr;        // the operation whose connect opened it
    bool leased_before = false;             // handed out at least once
    bool pinged = false;                    // since it last became free
    bool condemned = false;                 // a rollback, reset or reusable() at give-back said no
    const char* in_call = nullptr;          // a ping, rollback or reset under way on it
    sim_clock::time_point ping_started{};   // when its last ping began
    const op_context* unsure_for = nullptr; // the checkout peer_closed() last answered unsure to
    // abandon_connections() ran while it was open (or its connect under way): from then on
    // nothing may be sent on it, and it must be destroyed silently (abandon() first).
    bool abandon_due = false;
    bool abandon_grace = false; // ... and its checkout ping was under way: that checkout may end
    const char* abandoned_during = nullptr; // the backend call under way on it then, if any
    bool abandoned = false;                 // the traits' abandon() was called
    // world_changed() ran since the pool last checked it: its next checkout must ping it.
    bool distrusted = false;
    bool distrust_deferred = false; // ... its checkout ping was under way: the one after that
};

/// What a connect attempt does, consumed front first from sim_world::script; empty = ok.
enum class connect_outcome {
    ok,
    transient,       // "too many connections"
    permanent,       // "password authentication failed"
    other_exception, // a driver's own exception: permanent
    hang,            // uses its whole timeout, then fails as transient
};

struct violation {
    std::string invariant; // a short tag, e.g. "max_size"
    std::string message;
};

/// The server and the referee. Thread-safe: the stress test's threads share it.
struct sim_world {
    explicit sim_world(std::size_t max_size, ms validation_timeout, bool reset_on_release)
        : max_size_(max_size), validation_timeout_(validation_timeout),
          reset_on_release_(reset_on_release) {}

    ~sim_world() { reap_abandoned(); }

    sim_world(const sim_world&) = delete;
    sim_world& operator=(const sim_world&) = delete;

    // --- the script ---------------------------------------------------------------------

    void fail_next(connect_outcome o, int n = 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (int i = 0; i < n; ++i) {
            script_.push_back(o);
        }
    }

    /// The next `n` connect attempts take this long each (or their whole timeout, if shorter;
    /// then they fail as timed out).
    void slow_next(ms d, int n) {
        std::lock_guard<std::mutex> lock(mutex_);
        connect_cost_ = d;
        slow_left_ = n;
    }

    // --- the fleet policy -------------------------------------------------------------------

    /// options::fleet is on for this run (fleet_sample() may be called only then).
    void enable_fleet() {
        std::lock_guard<std::mutex> lock(mutex_);
        fleet_enabled_ = true;
    }

    /// What the next sample finds, on a fixed cycle so that a seed replays: every third reads
    /// the server over the threshold (9 of 10), every eleventh hangs.
    enum class fleet_answer { under, over, hang };
    fleet_answer next_fleet_answer() {
        std::lock_guard<std::mutex> lock(mutex_);
        ++tallies_.fleet_samples;
        if (!fleet_enabled_) {
            violations_.push_back({"contract", "fleet_sample() called with options::fleet off"});
        }
        const int n = fleet_cycle_++;
        if (n % 11 == 10) {
            ++tallies_.fleet_hung;
            return fleet_answer::hang;
        }
        if (n % 3 == 1) {
            ++tallies_.fleet_over;
            return fleet_answer::over;
        }
        return fleet_answer::under;
    }

    // --- fork ---------------------------------------------------------------------------

    /// The simulated process forks and goes on as the child: every connection open now belongs
    /// to the parent from here on.
    void fork() {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& [id, c] : alive_) {
            if (c->generation == generation_) {
                ++inherited_;
            }
        }
        ++generation_;
        alive_current_ = 0;
    }

    int generation() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return generation_;
    }

    // --- what the referee saw -------------------------------------------------------------

    struct tallies {
        int connects = 0;      // attempts
        int opened = 0;        // connections opened
        int destroyed = 0;     // closed by the pool
        int alive_current = 0; // open now, opened in this process
        int alive_total = 0;   // open now, inherited ones too
        int max_alive = 0;     // the most open at once in one process
        int inherited = 0;     // connections left to a child by its parent
        int pings = 0;
        int rollbacks = 0;
        int resets = 0;
        int reusable_asked = 0;
        int opened_while_closing = 0; // connects that succeeded after close() was called
        int calls = 0;         // every traits call: the simulator's sign that something happened
        int silent_closes = 0; // destroyed after abandon(): nothing sent
        int polite_closes = 0; // destroyed with the backend's goodbye
        int opened_across_abandon = 0; // connects under way when abandon_connections() ran
        int unsure_answers = 0;        // peer_closed() said peer_state::unsure
        int fleet_samples = 0;         // fleet_sample() calls
        int fleet_over = 0;            // ... that read the server at or above close_above
        int fleet_hung = 0;            // ... that hung (the connection must then be closed)
        int fleet_failed = 0;          // ... that failed: hung, or too slow for the timeout
    };

    tallies counts() const {
        std::lock_guard<std::mutex> lock(mutex_);
        tallies t = tallies_;
        t.alive_current = alive_current_;
        t.alive_total = static_cast<int>(alive_.size());
        t.inherited = inherited_;
        return t;
    }

    /// Open connections of this process, by id: the simulator's way to name one.
    std::vector<sim_connection*> current_connections() const {
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<sim_connection*> out;
        for (const auto& [id, c] : alive_) {
            if (c->generation == generation_) {
                out.push_back(c);
            }
        }
        return out;
    }

    /// How long a connection the pool closed had been idle (by the referee's reckoning) and
    /// open, when it was closed.
    struct gone_info {
        sim_clock::duration idle{};
        sim_clock::duration age{};
    };

    std::optional<gone_info> gone(std::uint64_t id) const {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto it = gone_.find(id);
        return it == gone_.end() ? std::nullopt : std::optional<gone_info>(it->second);
    }

    /// The server's number for the connection the calling thread's last connect opened: the
    /// pool reports it in its connected event right after, on the same thread.
    static std::uint64_t& last_opened() noexcept {
        static thread_local std::uint64_t id = 0;
        return id;
    }

    bool is_alive(std::uint64_t id) const {
        std::lock_guard<std::mutex> lock(mutex_);
        return alive_.count(id) != 0;
    }

    /// close() has been called: connections opened from now on are counted apart.
    void pool_closing() {
        std::lock_guard<std::mutex> lock(mutex_);
        pool_closing_ = true;
    }

    /// close() has returned: no connect may start after this.
    void pool_closed() {
        std::lock_guard<std::mutex> lock(mutex_);
        pool_closed_ = true;
    }

    /// abandon_connections() is about to run: every connection of this process open now, and
    /// every one whose connect is under way, must from now on be forgotten without a byte sent.
    /// A connection whose checkout ping is under way may still be handed out by that checkout
    /// (the pool counts it as leased; it is forgotten when given back).
    void abandon_connections_called() {
        std::lock_guard<std::mutex> lock(mutex_);
        ++abandon_calls_;
        for (const auto& [id, c] : alive_) {
            if (c->generation == generation_) {
                if (!c->abandon_due) {
                    c->abandoned_during = c->in_call;
                    c->abandon_grace = c->in_call != nullptr && std::string(c->in_call) == "ping";
                }
                c->abandon_due = true;
            }
        }
    }

    void violate(std::string invariant, std::string message) {
        std::lock_guard<std::mutex> lock(mutex_);
        violations_.push_back({std::move(invariant), std::move(message)});
    }

    std::vector<violation> violations() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return violations_;
    }

    bool failed() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return !violations_.empty();
    }

    /// Frees connections the pool abandoned after a fork (it must never destroy those itself),
    /// so leak checkers see only real leaks. Call once the pool is gone.
    int reap_abandoned() {
        std::vector<sim_connection*> left;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            for (const auto& [id, c] : alive_) {
                left.push_back(c);
            }
            reaping_ = true;
        }
        for (sim_connection* c : left) {
            delete c;
        }
        std::lock_guard<std::mutex> lock(mutex_);
        reaping_ = false;
        return static_cast<int>(left.size());
    }

    // --- for the traits -------------------------------------------------------------------

    std::unique_ptr<sim_connection> connect(ms timeout);
    void destroyed(sim_connection& c);

    /// The backend spends `d` of simulated time on behalf of the calling thread's operation, on
    /// `what` (named in the trace). A thread the simulator drives stays busy until the clock
    /// gets there, while others run; any other thread moves the clock itself.
    static void spend(sim_clock::duration d, const std::string& what) {
        if (d <= sim_clock::duration::zero()) {
            return;
        }
        const auto before = sim_clock::now();
        if (op_context* op = op_context::current()) {
            op->busy_with = what;
            const auto from = std::max(before, op->deadline);
            const auto to = before + d;
            if (op->deadline != sim_clock::time_point::max() && to > from) {
                op->overrun += to - from;
            }
        }
        if (sim_clock::parker* p = sim_clock::current_parker()) {
            p->busy_until(before + d);
        } else {
            sim_clock::advance(d);
        }
    }

    /// A hang: the whole timeout, capped at a day so that a huge timeout cannot overflow the
    /// clock.
    static sim_clock::duration hang_for(ms timeout) {
        const ms capped = std::min<ms>(std::max<ms>(timeout, ms{0}), ms{86'400'000});
        return std::chrono::duration_cast<sim_clock::duration>(capped);
    }

    /// Counts a traits call; checks the fork rule for calls that use or close a connection.
    void touched(const sim_connection& c, const char* what, bool uses) {
        std::lock_guard<std::mutex> lock(mutex_);
        ++tallies_.calls;
        if (uses && c.generation != generation_ && !reaping_) {
            violations_.push_back({"fork", std::string("the child ") + what + " connection " +
                                               std::to_string(c.id) +
                                               ", inherited from its parent (opened in "
                                               "process generation " +
                                               std::to_string(c.generation) + ", now " +
                                               std::to_string(generation_) + ")"});
        }
    }

    void count(int tallies::*field) {
        std::lock_guard<std::mutex> lock(mutex_);
        ++(tallies_.*field);
    }

    /// A call started after the deadline: by a caller that had waited for another user and was
    /// served late, or by one that never waited.
    static std::string late_start_tag(const op_context& op) {
        return op.parks > 0 ? "late_start_after_wait" : "late_start";
    }

    /// The invariant a connection the pool should have abandoned breaks: abandon_silent, or a
    /// tag of its own when a give-back's rollback or reset, or a checkout's ping, was under way
    /// on it as abandon_connections() ran.
    static std::string abandon_tag(const sim_connection& c) {
        if (c.abandoned_during == nullptr) {
            return "abandon_silent";
        }
        return std::string(c.abandoned_during) == "ping" ? "abandon_during_ping"
                                                         : "abandon_during_give_back";
    }

    /// What the pool counts as time left before an operation's deadline: whole milliseconds,
    /// rounded down.
    static ms time_left(const op_context& op, sim_clock::time_point now) {
        return now >= op.deadline ? ms{0} : std::chrono::duration_cast<ms>(op.deadline - now);
    }

    /// A round trip that some fault makes take `d` (or its whole timeout, if shorter; then it
    /// fails). Marks the connection busy with `what` meanwhile. True when it fit.
    static bool round_trip(sim_connection& c, const char* what, sim_clock::duration d, ms timeout) {
        const auto limit = hang_for(timeout);
        busy_on(c, what, std::min(d, limit));
        return d <= limit;
    }

    /// The backend spends `d` on connection `c`'s `what` (ping, rollback or reset).
    static void busy_on(sim_connection& c, const char* what, sim_clock::duration d) {
        c.in_call = what;
        spend(d, std::string(what) + " of connection #" + std::to_string(c.id));
        c.in_call = nullptr;
    }

    /// Something is about to be sent on `c`: it must not have been abandoned.
    void sends(const sim_connection& c, const char* what) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (reaping_) {
            return;
        }
        if (c.abandoned) {
            violations_.push_back({"contract", std::string(what) + " connection #" +
                                                   std::to_string(c.id) +
                                                   " after the pool called abandon() on it"});
        } else if (c.abandon_due) {
            violations_.push_back(
                {abandon_tag(c), std::string(what) + " connection #" + std::to_string(c.id) +
                                     ", open when abandon_connections() ran: nothing may be "
                                     "sent on a connection the pool abandons"});
        }
    }

    ms validation_timeout() const { return validation_timeout_; }
    bool reset_on_release() const { return reset_on_release_; }

private:
    mutable std::mutex mutex_;
    const std::size_t max_size_;
    const ms validation_timeout_;
    const bool reset_on_release_;
    std::deque<connect_outcome> script_;
    ms connect_cost_{0};
    int slow_left_ = 0;
    int generation_ = 0;
    int inherited_ = 0;
    int alive_current_ = 0;
    int connecting_ = 0;
    int abandon_calls_ = 0;
    bool pool_closing_ = false;
    bool pool_closed_ = false;
    bool reaping_ = false;
    bool fleet_enabled_ = false;
    int fleet_cycle_ = 0;
    std::uint64_t last_id_ = 0;
    std::map<std::uint64_t, sim_connection*> alive_; // by id, so iteration order is fixed
    std::map<std::uint64_t, gone_info> gone_;
    tallies tallies_;
    std::vector<violation> violations_;
};

inline sim_connection::~sim_connection() {
    world.destroyed(*this);
}

inline void sim_world::destroyed(sim_connection& c) {
    touched(c, "destroyed", true);
    std::lock_guard<std::mutex> lock(mutex_);
    alive_.erase(c.id);
    if (!reaping_) {
        ++tallies_.destroyed;
        ++(c.abandoned ? tallies_.silent_closes : tallies_.polite_closes);
        const auto now = sim_clock::now();
        gone_[c.id] = {now - c.released_at, now - c.opened_at};
        const std::string name = "connection #" + std::to_string(c.id);
        if (c.abandon_due && !c.abandoned) {
            violations_.push_back(
                {abandon_tag(c), "the pool closed " + name +
                                     " politely (a goodbye on its socket), though it was open "
                                     "when abandon_connections() ran"});
        }
        if (c.holders > 0) {
            violations_.push_back(
                {"leased_closed", "the pool closed " + name + ", which a lease holds"});
        }
        if (c.in_call != nullptr) {
            violations_.push_back({"concurrent", "the pool closed " + name + " while its " +
                                                     c.in_call + " was under way"});
        }
    }
    if (c.generation == generation_) {
        --alive_current_;
    }
}

inline std::unique_ptr<sim_connection> sim_world::connect(ms timeout) {
    connect_outcome outcome = connect_outcome::ok;
    ms cost{0};
    int abandons_at_start = 0;
    op_context* op = op_context::current();
    {
        std::lock_guard<std::mutex> lock(mutex_);
        ++tallies_.calls;
        ++tallies_.connects;
        if (!script_.empty()) {
            outcome = script_.front();
            script_.pop_front();
        }
        if (slow_left_ > 0) {
            cost = connect_cost_;
            --slow_left_;
        }
        const auto now = sim_clock::now();
        if (pool_closed_) {
            violations_.push_back(
                {op != nullptr && op->abandoned_connects > 0 ? "abandon_retry_after_close"
                                                             : "connect_after_close",
                 "a connect attempt started after close() had returned" +
                     std::string(op != nullptr && op->abandoned_connects > 0
                                     ? ", to replace one abandon_connections() made the pool "
                                       "forget as it opened"
                                     : "")});
        }
        if (alive_current_ + connecting_ + 1 > static_cast<int>(max_size_)) {
            violations_.push_back(
                {"max_size", "a connect attempt started with " + std::to_string(alive_current_) +
                                 " open and " + std::to_string(connecting_) +
                                 " connecting; max_size is " + std::to_string(max_size_)});
        }
        if (timeout <= ms{0}) {
            violations_.push_back(
                {"contract", "connect was given a timeout of " + std::to_string(timeout.count()) +
                                 " ms; the contract promises a positive time left"});
        }
        if (op != nullptr) {
            ++op->connect_attempts;
            // abandon_connections() during a connect makes the pool forget the connection and
            // connect again at once: no failure of the server's, so no retry in that sense.
            if (op->what == op_context::kind::try_acquire &&
                op->connect_attempts > 1 + op->abandoned_connects) {
                violations_.push_back(
                    {"bound", "try_acquire made a second connect attempt (at most one allowed)"});
            }
            if (op->permanent_failure_seen) {
                violations_.push_back(
                    {"retry", "a connect attempt after a permanent failure in the same call"});
            }
            if (op->what == op_context::kind::acquire && now > op->deadline) {
                violations_.push_back(
                    {late_start_tag(*op),
                     "acquire started a connect attempt " +
                         std::to_string(
                             std::chrono::duration_cast<ms>(now - op->deadline).count()) +
                         " ms after its deadline"});
            } else if (op->hard && now >= op->deadline) {
                violations_.push_back({late_start_tag(*op),
                                       "acquire_until started a connect attempt at its deadline, "
                                       "with no time left"});
            } else if (op->hard && timeout > time_left(*op, now)) {
                violations_.push_back(
                    {"hard_bound", "acquire_until gave a connect attempt " +
                                       std::to_string(timeout.count()) + " ms with " +
                                       std::to_string(time_left(*op, now).count()) +
                                       " ms left before its deadline"});
            }
        }
        ++connecting_;
        abandons_at_start = abandon_calls_;
    }
    sim_clock::duration spent{0};
    if (outcome == connect_outcome::hang) {
        spent = hang_for(timeout);
    } else {
        spent = std::chrono::duration_cast<sim_clock::duration>(std::min(cost, timeout));
        if (timeout < cost) {
            spent = hang_for(timeout); // gives up at its timeout
        }
    }
    spend(spent, "connect");
    if (op != nullptr) {
        op->longest_connect = std::max(op->longest_connect, spent);
        if (outcome == connect_outcome::permanent || outcome == connect_outcome::other_exception) {
            op->permanent_failure_seen = true;
        }
    }
    std::unique_ptr<sim_connection> c;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        --connecting_;
        if (outcome == connect_outcome::ok && timeout >= cost) {
            c = std::make_unique<sim_connection>(*this, ++last_id_, generation_);
            c->opened_at = c->released_at = sim_clock::now();
            c->released_wall = c->believed_wall = sim_clock::wall_clock::now();
            c->opened_by = op;
            if (abandon_calls_ != abandons_at_start) {
                // abandon_connections() ran while it opened: the pool must forget it at once.
                c->abandon_due = true;
                ++tallies_.opened_across_abandon;
            }
            alive_[c->id] = c.get();
            last_opened() = c->id;
            ++alive_current_;
            ++tallies_.opened;
            tallies_.opened_while_closing += pool_closing_ ? 1 : 0;
            tallies_.max_alive = std::max(tallies_.max_alive, alive_current_);
            if (alive_current_ > static_cast<int>(max_size_)) {
                violations_.push_back({"max_size", std::to_string(alive_current_) +
                                                       " connections open at once; max_size is " +
                                                       std::to_string(max_size_)});
            }
        }
    }
    switch (outcome) {
    case connect_outcome::ok:
        if (!c) {
            throw warmpool::connect_error("sim: connect timed out", true);
        }
        return c;
    case connect_outcome::transient:
        throw warmpool::connect_error("sim: too many connections", true);
    case connect_outcome::hang:
        throw warmpool::connect_error("sim: connect timed out", true);
    case connect_outcome::permanent:
        throw warmpool::connect_error("sim: password authentication failed", false);
    case connect_outcome::other_exception:
        throw std::runtime_error("sim: driver exploded");
    }
    return c;
}

struct sim_traits {
    using connection = sim_connection;
    using config = sim_world*;

    static std::unique_ptr<connection> connect(const config& world, ms timeout) {
        return world->connect(timeout);
    }

    static bool is_broken(connection& c) noexcept {
        c.world.touched(c, "asked is_broken about", false);
        return c.broken;
    }

    static warmpool::peer_state peer_closed(connection& c) noexcept {
        c.world.touched(c, "polled the socket of", false);
        if (c.peer_gone) {
            return warmpool::peer_state::closed;
        }
        if (c.peer_unsure) {
            c.world.count(&sim_world::tallies::unsure_answers);
            c.unsure_for = op_context::current();
            return warmpool::peer_state::unsure;
        }
        return warmpool::peer_state::open;
    }

    static bool ping(connection& c, ms timeout) noexcept {
        c.world.touched(c, "pinged", true);
        c.world.sends(c, "pinged");
        c.pinged = true;
        c.ping_started = sim_clock::now();
        c.world.count(&sim_world::tallies::pings);
        const op_context* op = op_context::current();
        const bool hard = op != nullptr && op->hard;
        if (!hard && timeout != c.world.validation_timeout()) {
            c.world.violate("contract", "ping was given " + std::to_string(timeout.count()) +
                                            " ms, not options::validation_timeout");
        }
        if (op != nullptr) {
            const auto now = sim_clock::now();
            if (op->what == op_context::kind::acquire && now > op->deadline) {
                c.world.violate(sim_world::late_start_tag(*op),
                                "acquire started a ping after its deadline");
            } else if (hard && now >= op->deadline) {
                c.world.violate(sim_world::late_start_tag(*op),
                                "acquire_until started a ping at its deadline, with no time left");
            } else if (hard && timeout != std::min(c.world.validation_timeout(),
                                                   sim_world::time_left(*op, now))) {
                c.world.violate("hard_bound",
                                "acquire_until gave a ping " + std::to_string(timeout.count()) +
                                    " ms with " +
                                    std::to_string(sim_world::time_left(*op, now).count()) +
                                    " ms left; expected min(validation_timeout, time left)");
            }
        }
        if (c.ping_hangs) {
            sim_world::busy_on(c, "ping", sim_world::hang_for(timeout));
            return false;
        }
        if (c.slow && !sim_world::round_trip(c, "ping", ms{2}, timeout)) {
            return false;
        }
        return !c.ping_fails && !c.peer_gone && !c.broken;
    }

    static bool in_transaction(connection& c) noexcept {
        c.world.touched(c, "asked in_transaction about", false);
        return c.in_tx;
    }

    static bool rollback(connection& c, ms timeout) noexcept {
        c.world.touched(c, "rolled back", true);
        c.world.sends(c, "rolled back");
        c.world.count(&sim_world::tallies::rollbacks);
        if (timeout <= ms{0} || timeout > c.world.validation_timeout()) {
            c.world.violate("contract", "rollback was given " + std::to_string(timeout.count()) +
                                            " ms; expected a positive bound of at most "
                                            "options::validation_timeout");
        }
        if (c.rollback_hangs) {
            sim_world::busy_on(c, "rollback", sim_world::hang_for(timeout));
            c.condemned = true;
            return false;
        }
        if (c.slow && !sim_world::round_trip(c, "rollback", ms{2}, timeout)) {
            c.condemned = true;
            return false;
        }
        if (c.rollback_fails) {
            c.condemned = true;
            return false;
        }
        c.in_tx = false;
        return true;
    }

    static bool reset(connection& c, const config&, ms timeout) noexcept {
        c.world.touched(c, "reset", true);
        c.world.sends(c, "reset");
        c.world.count(&sim_world::tallies::resets);
        if (!c.world.reset_on_release()) {
            c.world.violate("contract", "reset() called with options::reset_on_release off");
        }
        if (c.in_tx) {
            c.world.violate("contract", "reset() called with a transaction open");
        }
        if (timeout <= ms{0}) {
            c.world.violate("contract", "reset was given " + std::to_string(timeout.count()) +
                                            " ms; expected a positive bound");
        }
        if (c.reset_hangs) {
            sim_world::busy_on(c, "reset", sim_world::hang_for(timeout));
            c.condemned = true;
            return false;
        }
        if (c.slow && !sim_world::round_trip(c, "reset", ms{2}, timeout)) {
            c.condemned = true;
            return false;
        }
        if (c.reset_fails) {
            c.condemned = true;
            return false;
        }
        c.dirty = false;
        return true;
    }

    static bool reusable(connection& c, const config&) noexcept {
        c.world.touched(c, "asked reusable about", true);
        c.world.count(&sim_world::tallies::reusable_asked);
        c.condemned = c.condemned || c.veto;
        return !c.veto;
    }

    /// Makes destroying `c` silent. The pool may abandon only what abandon_connections() told it
    /// to: a connection open when it ran, or one whose connect was under way then.
    static void abandon(connection& c) noexcept {
        c.world.touched(c, "abandoned", true);
        if (c.abandoned) {
            c.world.violate("contract",
                            "abandon() called twice on connection #" + std::to_string(c.id));
        }
        if (!c.abandon_due) {
            c.world.violate("needless_abandon",
                            "the pool abandoned connection #" + std::to_string(c.id) +
                                ", opened after abandon_connections() had been called");
        }
        c.abandoned = true;
        if (op_context* op = op_context::current()) {
            if (c.opened_by == op && !c.leased_before) {
                ++op->abandoned_connects; // its own connect, forgotten and made again
            }
        }
    }

    /// The fleet policy's round trip at give-back: after the rollback (never inside the user's
    /// transaction), never on a connection the pool is about to close or has abandoned, bounded
    /// by validation_timeout. A hung one condemns the connection: it must not be handed out
    /// again.
    static warmpool::fleet_reading fleet_sample(connection& c, const config&,
                                                const warmpool::fleet_request& req,
                                                ms timeout) noexcept {
        c.world.touched(c, "sampled the fleet on", true);
        c.world.sends(c, "sampled the fleet on");
        if (timeout <= ms{0} || timeout > c.world.validation_timeout()) {
            c.world.violate("contract", "fleet_sample was given " +
                                            std::to_string(timeout.count()) +
                                            " ms; expected a positive bound of at most "
                                            "options::validation_timeout");
        }
        if (c.in_tx) {
            c.world.violate("contract", "fleet_sample on connection #" + std::to_string(c.id) +
                                            " with the user's transaction still open");
        }
        if (c.condemned) {
            c.world.violate("contract", "fleet_sample on connection #" + std::to_string(c.id) +
                                            ", which its rollback, reset or veto condemned");
        }
        warmpool::fleet_reading r;
        switch (c.world.next_fleet_answer()) {
        case sim_world::fleet_answer::hang:
            sim_world::busy_on(c, "fleet sample", sim_world::hang_for(timeout));
            c.world.count(&sim_world::tallies::fleet_failed);
            c.condemned = true;
            r.usable = false;
            r.error = "sim: no answer";
            return r;
        case sim_world::fleet_answer::over:
            r.server_in_use = 9;
            break;
        case sim_world::fleet_answer::under:
            r.server_in_use = 2;
            break;
        }
        if (c.slow && !sim_world::round_trip(c, "fleet sample", ms{2}, timeout)) {
            c.world.count(&sim_world::tallies::fleet_failed);
            c.condemned = true;
            r.usable = false;
            r.error = "sim: timed out";
            return r;
        }
        r.ok = true;
        r.server_capacity = req.with_capacity ? 10 : 0;
        r.user_in_use = r.server_in_use;
        return r;
    }

    static std::string describe(const config&) { return "sim://db user=app password=***"; }
};

} // namespace warmpool_sim
