// The simulation's backend: a "server" (sim_world) that counts every connection it sees and
// checks what the pool does to them, and traits written to the current contract of
// include/warmpool/traits.hpp (bounded rollback, reset, the release veto).
//
// Faults are set on the world (the next connects) or on one connection (its ping, rollback,
// reset, socket, veto). A hang takes the whole timeout the pool passed, a slow connect its cost:
// on a thread the simulator drives, the call stays under way (other threads run) until the
// simulated clock gets there; on any other thread the call moves the clock itself.
#pragma once

#include "sim_clock.hpp"

#include <warmpool/errors.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
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
    int connect_attempts = 0;
    bool permanent_failure_seen = false;
    sim_clock::duration overrun{0};         // time its own backend calls spent past the deadline
    sim_clock::duration longest_connect{0}; // its longest single connect attempt
    int parks = 0;

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
    bool veto = false;  // reusable() says no
    bool dirty = false; // a user changed session state that reset() must undo

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
    const void* opened_by = nullptr; // the operation whose connect opened it
    bool leased_before = false;      // handed out at least once
    bool pinged = false;             // since it last became free
    bool condemned = false;          // a rollback, reset or reusable() at give-back said no
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
        int calls = 0; // every traits call: the simulator's sign that something happened
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

    /// The backend spends `d` of simulated time on behalf of the calling thread's operation. A
    /// thread the simulator drives stays busy until the clock gets there, while others run;
    /// any other thread moves the clock itself.
    static void spend(sim_clock::duration d) {
        if (d <= sim_clock::duration::zero()) {
            return;
        }
        const auto before = sim_clock::now();
        if (op_context* op = op_context::current()) {
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
    bool pool_closing_ = false;
    bool pool_closed_ = false;
    bool reaping_ = false;
    std::uint64_t last_id_ = 0;
    std::map<std::uint64_t, sim_connection*> alive_; // by id, so iteration order is fixed
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
    }
    if (c.generation == generation_) {
        --alive_current_;
    }
}

inline std::unique_ptr<sim_connection> sim_world::connect(ms timeout) {
    connect_outcome outcome = connect_outcome::ok;
    ms cost{0};
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
                {"connect_after_close", "a connect attempt started after close() had returned"});
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
            if (op->what == op_context::kind::try_acquire && op->connect_attempts > 1) {
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
            }
        }
        ++connecting_;
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
    spend(spent);
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
            alive_[c->id] = c.get();
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

    static bool peer_closed(connection& c) noexcept {
        c.world.touched(c, "polled the socket of", false);
        return c.peer_gone;
    }

    static bool ping(connection& c, ms timeout) noexcept {
        c.world.touched(c, "pinged", true);
        c.pinged = true;
        c.world.count(&sim_world::tallies::pings);
        if (timeout != c.world.validation_timeout()) {
            c.world.violate("contract", "ping was given " + std::to_string(timeout.count()) +
                                            " ms, not options::validation_timeout");
        }
        if (op_context* op = op_context::current()) {
            if (op->what == op_context::kind::acquire && sim_clock::now() > op->deadline) {
                c.world.violate(sim_world::late_start_tag(*op),
                                "acquire started a ping after its deadline");
            }
        }
        if (c.ping_hangs) {
            sim_world::spend(sim_world::hang_for(timeout));
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
        c.world.count(&sim_world::tallies::rollbacks);
        if (timeout <= ms{0} || timeout > c.world.validation_timeout()) {
            c.world.violate("contract", "rollback was given " + std::to_string(timeout.count()) +
                                            " ms; expected a positive bound of at most "
                                            "options::validation_timeout");
        }
        if (c.rollback_hangs) {
            sim_world::spend(sim_world::hang_for(timeout));
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
            sim_world::spend(sim_world::hang_for(timeout));
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

    static std::string describe(const config&) { return "sim://db user=app password=***"; }
};

} // namespace warmpool_sim
