// Scriptable backend traits for the core's unit tests: connects that fail as told, connections
// whose socket, ping, transaction state and rollback behave as told, and a count of everything
// the pool did to them.
#pragma once

#include "manual_clock.hpp"

#include <warmpool/errors.hpp>
#include <warmpool/traits.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace warmpool_test {

struct mock_server;

struct mock_connection {
    explicit mock_connection(mock_server& s, int n) : server(s), number(n) {}
    ~mock_connection();
    mock_connection(const mock_connection&) = delete;
    mock_connection& operator=(const mock_connection&) = delete;

    mock_server& server;
    const int number; // 1, 2, … in connect order

    // What the "backend" will report.
    bool broken = false;         // is_broken()
    bool peer_gone = false;      // peer_closed(): closed
    bool peer_unsure = false;    // peer_closed(): unsure (bytes it cannot read, as under TLS)
    bool ping_ok = true;         // ping() answers
    bool ping_hangs = false;     // ping() uses its whole timeout, then fails
    bool in_tx = false;          // in_transaction()
    bool rollback_ok = true;     // rollback() succeeds
    bool rollback_hangs = false; // rollback() uses its whole timeout, then fails
    bool session_dirty = false;  // state a reset() clears (SET, temp tables, …)
    bool reset_ok = true;        // reset() succeeds
    bool reusable = true;        // reusable(): the release hook's answer

    // What the pool did.
    bool abandoned = false; // abandon() was called: its destruction sends nothing
    int pings = 0;
    int rollbacks = 0;
    int resets = 0;
    std::chrono::milliseconds last_ping_timeout{0};
    std::chrono::milliseconds last_rollback_timeout{0};
    std::atomic<int> holders{0}; // leases using it at once: must never exceed 1
};

enum class connect_outcome { ok, transient, permanent, other_exception };

/// Shared by the pool's config and the test: the script of connect outcomes and the tallies.
struct mock_server {
    std::mutex mutex;
    std::deque<connect_outcome> script; // consumed front first; empty = ok
    int connects = 0;                   // attempts
    int opened = 0;
    int destroyed = 0;
    int polite_closes = 0; // destroyed with a goodbye to the server
    int silent_closes = 0; // destroyed after abandon(): nothing sent
    int open_now = 0;
    int max_open = 0;
    std::chrono::milliseconds connect_cost{0}; // manual time one connect takes
    std::chrono::milliseconds last_connect_timeout{0};
    std::set<mock_connection*> live;      // for reaping abandoned ones
    std::function<void()> during_connect; // called inside each connect, outside the lock
    // Called once, then cleared, inside the next peer_closed(), ping() or rollback(): another
    // thread's move while the pool is on the wire with this connection.
    std::function<void()> during_peer_check, during_ping, during_rollback;

    // The fleet policy's view of the server: what fleet_sample() reports (reaped is capped at
    // the request's reap_max and counted only when reaping was asked for), whether the query
    // hangs (uses its whole timeout, then fails, leaving the connection unusable) or fails
    // cleanly, and each request the pool made.
    warmpool::fleet_reading fleet{true, true, 20, 0, 5, 5, 0, {}, {}};
    unsigned fleet_zombies = 0;              // ended by the next reaping sample, up to reap_max
    std::chrono::milliseconds fleet_cost{0}; // manual time one sample takes
    bool fleet_hangs = false;
    bool fleet_fails = false;
    std::string fleet_unsupported; // what fleet_unsupported() answers
    std::vector<warmpool::fleet_request> fleet_requests;

    static void run_once(std::function<void()>& hook) {
        if (hook) {
            auto h = std::move(hook);
            hook = nullptr;
            h();
        }
    }

    void fail_next(int n, connect_outcome o) {
        std::lock_guard<std::mutex> lock(mutex);
        for (int i = 0; i < n; ++i) {
            script.push_back(o);
        }
    }

    /// Connections the pool abandoned (after a fork) are never destroyed by it; free them so
    /// leak checkers see only real leaks.
    int reap_abandoned() {
        std::set<mock_connection*> left;
        {
            std::lock_guard<std::mutex> lock(mutex);
            left.swap(live);
        }
        const int n = static_cast<int>(left.size());
        for (mock_connection* c : left) {
            delete c;
        }
        return n;
    }

    ~mock_server() { reap_abandoned(); }
};

inline mock_connection::~mock_connection() {
    std::lock_guard<std::mutex> lock(server.mutex);
    ++server.destroyed;
    (abandoned ? server.silent_closes : server.polite_closes) += 1;
    --server.open_now;
    server.live.erase(this);
}

struct mock_traits {
    using connection = mock_connection;
    using config = std::shared_ptr<mock_server>;

    static std::unique_ptr<connection> connect(const config& server,
                                               std::chrono::milliseconds timeout) {
        connect_outcome outcome = connect_outcome::ok;
        int number = 0;
        {
            std::lock_guard<std::mutex> lock(server->mutex);
            ++server->connects;
            server->last_connect_timeout = timeout;
            if (!server->script.empty()) {
                outcome = server->script.front();
                server->script.pop_front();
            }
            if (outcome == connect_outcome::ok) {
                number = ++server->opened;
            }
        }
        if (server->connect_cost.count() > 0) {
            manual_clock::advance(server->connect_cost);
        }
        if (server->during_connect) {
            server->during_connect(); // a test's move while this connect is under way
        }
        switch (outcome) {
        case connect_outcome::transient:
            throw warmpool::connect_error("mock: too many connections", true);
        case connect_outcome::permanent:
            throw warmpool::connect_error("mock: password authentication failed", false);
        case connect_outcome::other_exception:
            throw std::runtime_error("mock: driver exploded");
        case connect_outcome::ok:
            break;
        }
        auto c = std::make_unique<connection>(*server, number);
        std::lock_guard<std::mutex> lock(server->mutex);
        ++server->open_now;
        server->max_open = std::max(server->max_open, server->open_now);
        server->live.insert(c.get());
        return c;
    }

    static bool is_broken(connection& c) noexcept { return c.broken; }
    static warmpool::peer_state peer_closed(connection& c) noexcept {
        mock_server::run_once(c.server.during_peer_check);
        if (c.peer_gone) {
            return warmpool::peer_state::closed;
        }
        return c.peer_unsure ? warmpool::peer_state::unsure : warmpool::peer_state::open;
    }

    static void abandon(connection& c) noexcept { c.abandoned = true; }

    static bool ping(connection& c, std::chrono::milliseconds timeout) noexcept {
        mock_server::run_once(c.server.during_ping);
        ++c.pings;
        c.last_ping_timeout = timeout;
        if (c.ping_hangs) {
            manual_clock::advance(timeout);
            return false;
        }
        return c.ping_ok && !c.peer_gone;
    }

    static bool in_transaction(connection& c) noexcept { return c.in_tx; }

    static bool rollback(connection& c, std::chrono::milliseconds timeout) noexcept {
        mock_server::run_once(c.server.during_rollback);
        ++c.rollbacks;
        c.last_rollback_timeout = timeout;
        if (c.rollback_hangs) {
            manual_clock::advance(timeout);
            return false;
        }
        if (!c.rollback_ok) {
            return false;
        }
        c.in_tx = false;
        return true;
    }

    static bool reset(connection& c, const config&, std::chrono::milliseconds) noexcept {
        ++c.resets;
        if (!c.reset_ok || c.in_tx) {
            return false;
        }
        c.session_dirty = false;
        return true;
    }

    static bool reusable(connection& c, const config&) noexcept { return c.reusable; }

    static warmpool::fleet_reading fleet_sample(connection& c, const config& server,
                                                const warmpool::fleet_request& req,
                                                std::chrono::milliseconds timeout) noexcept {
        (void)c;
        std::lock_guard<std::mutex> lock(server->mutex);
        server->fleet_requests.push_back(req);
        if (server->fleet_hangs) {
            manual_clock::advance(timeout);
            warmpool::fleet_reading failed;
            failed.usable = false;
            failed.error = "mock: no answer within " + std::to_string(timeout.count()) +
                           " ms; the connection cannot be reused";
            return failed;
        }
        if (server->fleet_cost.count() > 0) {
            manual_clock::advance(server->fleet_cost);
        }
        if (server->fleet_fails) {
            warmpool::fleet_reading failed;
            failed.error = "mock: permission denied for pg_stat_activity";
            return failed;
        }
        warmpool::fleet_reading r = server->fleet;
        if (!req.with_capacity) {
            r.server_capacity = 0;
            r.user_capacity = 0;
        }
        r.reaped = 0;
        if (req.reap) {
            // Ended now: their slots no longer count (the contract of fleet_reading).
            r.reaped = std::min(server->fleet_zombies, req.reap_max);
            server->fleet_zombies -= r.reaped;
            server->fleet.server_in_use -= std::min<std::size_t>(r.reaped, r.server_in_use);
            server->fleet.user_in_use -= std::min<std::size_t>(r.reaped, r.user_in_use);
            r.server_in_use = server->fleet.server_in_use;
            r.user_in_use = server->fleet.user_in_use;
        }
        return r;
    }

    static std::string fleet_unsupported(const config& server) {
        std::lock_guard<std::mutex> lock(server->mutex);
        return server->fleet_unsupported;
    }

    static std::string describe(const config&) { return "mock://db user=app password=***"; }
};

} // namespace warmpool_test
