// The fleet policy's decisions (options::fleet, warmpool/fleet.hpp): when a give-back samples,
// what it asks the traits, when it closes its own connection, what it counts and reports. The
// server is the mock's scripted fleet_reading; time is the manual clock.
#include "support/fixture.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>

using namespace warmpool_test;
using warmpool::close_reason;
using warmpool::event_type;

namespace {

/// The policy on, sampling every give-back (no coin), closing at 80%.
warmpool::options fleet_on(warmpool::options o = {}) {
    o.fleet.enabled = true;
    o.fleet.sample_fraction = 1.0;
    o.fleet.close_above = 0.8;
    return o;
}

/// The server reports `in_use` of `capacity` connections, all the user's, no user limit.
void server_at(fixture& f, std::size_t in_use, std::size_t capacity = 20) {
    std::lock_guard<std::mutex> lock(f.server->mutex);
    f.server->fleet.server_capacity = capacity;
    f.server->fleet.user_capacity = 0;
    f.server->fleet.server_in_use = in_use;
    f.server->fleet.user_in_use = in_use;
}

std::size_t requests(fixture& f) {
    std::lock_guard<std::mutex> lock(f.server->mutex);
    return f.server->fleet_requests.size();
}

warmpool::fleet_request last_request(fixture& f) {
    std::lock_guard<std::mutex> lock(f.server->mutex);
    REQUIRE_FALSE(f.server->fleet_requests.empty());
    return f.server->fleet_requests.back();
}

std::string last_message(fixture& f, event_type t) {
    std::lock_guard<std::mutex> lock(f.events_mutex);
    for (std::size_t i = f.events.size(); i-- > 0;) {
        if (f.events[i].type == t) {
            return f.messages[i];
        }
    }
    return {};
}

/// One lease, used and given back; returns the connection's number.
int use_once(pool& p) {
    auto l = p.acquire();
    return l->number;
}

void until_waiting(pool& p, std::size_t n) {
    for (long i = 0; i < 50'000'000 && p.stats().waiting < n; ++i) {
        std::this_thread::yield();
    }
    REQUIRE(p.stats().waiting == n);
}

} // namespace

TEST_CASE("the fleet policy is off by default: no give-back asks the server") {
    fixture f;
    pool p(f.server);
    for (int i = 0; i < 5; ++i) {
        use_once(p);
    }
    CHECK(requests(f) == 0);
    const auto s = p.stats();
    CHECK(s.fleet_samples == 0);
    CHECK(s.fleet_capacity == 0);
    CHECK(f.server->opened == 1);
}

TEST_CASE("fleet options are checked at construction, naming the field") {
    fixture f;
    const auto rejects = [&](warmpool::options o, const std::string& field) {
        try {
            pool p(f.server, o);
            FAIL("accepted an invalid ", field);
        } catch (const std::invalid_argument& e) {
            CHECK(std::string(e.what()).find("options::" + field) != std::string::npos);
        }
    };
    auto o = fleet_on();
    o.fleet.sample_fraction = 0.0;
    rejects(o, "fleet.sample_fraction");
    o.fleet.sample_fraction = 1.5;
    rejects(o, "fleet.sample_fraction");
    o.fleet.sample_fraction = std::numeric_limits<double>::quiet_NaN();
    rejects(o, "fleet.sample_fraction");
    o = fleet_on();
    o.fleet.close_above = 0.0;
    rejects(o, "fleet.close_above");
    o.fleet.close_above = 1.01;
    rejects(o, "fleet.close_above");
    o.fleet.close_above = std::numeric_limits<double>::quiet_NaN();
    rejects(o, "fleet.close_above");
    o = fleet_on();
    o.fleet.sample_interval = std::chrono::milliseconds{-1};
    rejects(o, "fleet.sample_interval");
    o = fleet_on();
    o.fleet.capacity_ttl = std::chrono::milliseconds{-1};
    rejects(o, "fleet.capacity_ttl");
    o = fleet_on();
    o.fleet.reap = true;
    o.fleet.reap_idle_after = std::chrono::milliseconds{999};
    rejects(o, "fleet.reap_idle_after");
    o.fleet.reap_idle_after = std::chrono::milliseconds{1000};
    o.fleet.reap_max = 0;
    rejects(o, "fleet.reap_max");
    o.fleet.reap_max = 1001;
    rejects(o, "fleet.reap_max");

    // Off, the same values are not looked at: the policy's fields only matter when it is on.
    warmpool::options off;
    off.fleet.sample_fraction = 0.0;
    off.fleet.close_above = 7.0;
    CHECK_NOTHROW(pool(f.server, off));
}

TEST_CASE("a backend that cannot take part refuses the fleet policy at construction") {
    fixture f;
    f.server->fleet_unsupported = "SQLite has no server to share";
    try {
        pool p(f.server, fleet_on());
        FAIL("accepted the fleet policy on a backend without a server");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()) ==
              "warmpool::options::fleet.enabled is on, but SQLite has no server to share");
    }
    CHECK_NOTHROW(pool(f.server)); // off: no question asked
}

TEST_CASE("below close_above the connection is kept, and the sample is counted and reported") {
    fixture f;
    server_at(f, 15); // 75% of 20
    pool p(f.server, f.recorded(fleet_on()));
    CHECK(use_once(p) == 1);
    CHECK(use_once(p) == 1); // the same connection: kept
    CHECK(requests(f) == 2);
    const auto s = p.stats();
    CHECK(s.fleet_samples == 2);
    CHECK(s.fleet_sample_failures == 0);
    CHECK(s.closed_fleet_pressure == 0);
    CHECK(s.fleet_capacity == 20);
    CHECK(s.fleet_in_use == 15);
    CHECK(f.count(event_type::fleet_sampled) == 2);
    CHECK(last_message(f, event_type::fleet_sampled) ==
          "connections: 15 in use of 20 (75%, the server's limit); kept");
}

TEST_CASE("at close_above the connection given back is closed, and the next lease connects") {
    fixture f;
    server_at(f, 16); // exactly 80% of 20
    pool p(f.server, f.recorded(fleet_on()));
    CHECK(use_once(p) == 1);
    CHECK(f.server->open_now == 0); // closed at give-back, not kept for the next invocation
    const auto s = p.stats();
    CHECK(s.closed_fleet_pressure == 1);
    CHECK(s.closed == 1);
    CHECK(s.open == 0);
    CHECK(f.server->polite_closes == 1); // a normal close: the server frees the slot at once
    CHECK(last_message(f, event_type::fleet_sampled) ==
          "connections: 16 in use of 20 (80%, the server's limit); at or above "
          "fleet.close_above (80%): this connection is closed");
    bool closed_event = false;
    for (const auto& e : f.events) {
        closed_event = closed_event ||
                       (e.type == event_type::closed && e.reason == close_reason::fleet_pressure);
    }
    CHECK(closed_event);
    CHECK(use_once(p) == 2);
}

TEST_CASE("the fuller of the server's and the user's limits decides") {
    fixture f;
    {
        std::lock_guard<std::mutex> lock(f.server->mutex);
        f.server->fleet.server_capacity = 100;
        f.server->fleet.server_in_use = 10; // the server is nearly empty
        f.server->fleet.user_capacity = 5;
        f.server->fleet.user_in_use = 4; // the user is at 80% of its own limit
    }
    pool p(f.server, f.recorded(fleet_on()));
    use_once(p);
    CHECK(p.stats().closed_fleet_pressure == 1);
    CHECK(p.stats().fleet_capacity == 5);
    CHECK(p.stats().fleet_in_use == 4);
    CHECK(
        last_message(f, event_type::fleet_sampled).find("4 in use of 5 (80%, the user's limit)") !=
        std::string::npos);
}

TEST_CASE("limits are read at the first sample, then again only after capacity_ttl") {
    fixture f;
    server_at(f, 2);
    auto o = fleet_on();
    o.fleet.capacity_ttl = std::chrono::milliseconds{60'000};
    pool p(f.server, o);
    use_once(p);
    CHECK(last_request(f).with_capacity);
    use_once(p);
    CHECK_FALSE(last_request(f).with_capacity); // cached
    manual_clock::advance(std::chrono::milliseconds{59'999});
    use_once(p);
    CHECK_FALSE(last_request(f).with_capacity);
    manual_clock::advance(std::chrono::milliseconds{1});
    use_once(p);
    CHECK(last_request(f).with_capacity); // expired: read again
    use_once(p);
    CHECK_FALSE(last_request(f).with_capacity);
    // The cached limit keeps deciding while the counts change.
    server_at(f, 19);
    use_once(p);
    CHECK(p.stats().closed_fleet_pressure == 1);
    CHECK(p.stats().fleet_capacity == 20);
}

TEST_CASE("a restored or thawed world reads the limits again at the next sample") {
    fixture f;
    server_at(f, 2);
    pool p(f.server, fleet_on());
    use_once(p);
    use_once(p);
    CHECK_FALSE(last_request(f).with_capacity);
    p.world_changed();
    use_once(p);
    CHECK(last_request(f).with_capacity);
}

TEST_CASE("a sample that could not read the limits decides nothing") {
    fixture f;
    server_at(f, 30, 0); // capacity 0: unknown
    pool p(f.server, f.recorded(fleet_on()));
    CHECK(use_once(p) == 1);
    CHECK(use_once(p) == 1);
    CHECK(p.stats().closed_fleet_pressure == 0);
    CHECK(last_request(f).with_capacity); // and asks again next time
    CHECK(last_message(f, event_type::fleet_sampled) ==
          "server connections: 30 in use, limit unknown: no decision");
}

TEST_CASE("reaping asks for the configured floor and count, and the zombies it ended free "
          "their slots") {
    fixture f;
    server_at(f, 17); // 85% of 20 ...
    f.server->fleet_zombies = 5;
    auto o = fleet_on();
    o.fleet.reap = true;
    o.fleet.reap_idle_after = std::chrono::milliseconds{4'000};
    o.fleet.reap_max = 2;
    pool p(f.server, f.recorded(o));
    CHECK(use_once(p) == 1);
    const auto req = last_request(f);
    CHECK(req.reap);
    CHECK(req.reap_idle_after == std::chrono::milliseconds{4'000});
    CHECK(req.reap_max == 2);
    // ... but 2 of them were zombies just ended: 15 of 20, 75%, kept.
    CHECK(p.stats().fleet_reaped == 2);
    CHECK(p.stats().fleet_in_use == 15);
    CHECK(p.stats().closed_fleet_pressure == 0);
    CHECK(last_message(f, event_type::fleet_sampled) ==
          "connections: 15 in use of 20 (75%, the server's limit); ended 2 zombie connections; "
          "kept");
    CHECK(use_once(p) == 1);
    CHECK(p.stats().fleet_reaped == 4);
    CHECK(use_once(p) == 1);
    CHECK(p.stats().fleet_reaped == 5); // only one left
    // Reaping off: nothing asked.
    fixture g;
    pool q(g.server, fleet_on());
    use_once(q);
    CHECK_FALSE(last_request(g).reap);
    CHECK(last_request(g).reap_max == 0);
}

TEST_CASE("a reap that could not run is reported, and the counts still decide") {
    fixture f;
    server_at(f, 18);
    f.server->fleet.reap_error = "information_schema.INNODB_TRX needs the PROCESS privilege";
    auto o = fleet_on();
    o.fleet.reap = true;
    pool p(f.server, f.recorded(o));
    use_once(p);
    CHECK(p.stats().closed_fleet_pressure == 1);
    CHECK(last_message(f, event_type::fleet_sampled)
              .find("zombies not ended: information_schema.INNODB_TRX needs the PROCESS "
                    "privilege") != std::string::npos);
}

TEST_CASE("sample_interval: at most one sample per interval per pool") {
    fixture f;
    server_at(f, 1);
    auto o = fleet_on();
    o.fleet.sample_interval = std::chrono::milliseconds{1'000};
    pool p(f.server, o);
    use_once(p);
    CHECK(requests(f) == 1);
    for (int i = 0; i < 9; ++i) {
        manual_clock::advance(std::chrono::milliseconds{100});
        use_once(p);
    }
    CHECK(requests(f) == 1); // 900 ms later: still within the interval
    manual_clock::advance(std::chrono::milliseconds{100});
    use_once(p);
    CHECK(requests(f) == 2);
    CHECK(p.stats().fleet_samples == 2);
}

TEST_CASE("fleet durations past options::forever mean forever, with no overflow") {
    fixture f;
    server_at(f, 1);
    auto o = fleet_on();
    o.fleet.sample_interval = std::chrono::milliseconds::max();
    o.fleet.capacity_ttl = std::chrono::milliseconds::max();
    o.fleet.reap = true;
    o.fleet.reap_idle_after = std::chrono::milliseconds::max();
    pool p(f.server, o);
    CHECK(p.get_options().fleet.sample_interval == warmpool::options::forever);
    CHECK(p.get_options().fleet.reap_idle_after == warmpool::options::forever);
    use_once(p);
    manual_clock::advance(std::chrono::hours{24 * 365});
    use_once(p);
    CHECK(requests(f) == 1); // a year later: still within the interval
    CHECK(last_request(f).reap_idle_after == warmpool::options::forever);
}

TEST_CASE("sample_fraction samples about that fraction of give-backs") {
    fixture f;
    server_at(f, 1);
    auto o = fleet_on();
    o.fleet.sample_fraction = 0.25;
    pool p(f.server, o);
    constexpr int give_backs = 4000;
    for (int i = 0; i < give_backs; ++i) {
        use_once(p);
    }
    // Binomial(4000, 0.25): mean 1000, standard deviation 27.4. The bounds are 7 deviations
    // away: a correct pool falls outside them about once in 10^11 runs.
    const auto n = requests(f);
    CHECK(n > 800);
    CHECK(n < 1200);
    CHECK(p.stats().fleet_samples == n);
}

TEST_CASE("a pool's first give-back samples, and under pressure every give-back does") {
    fixture f;
    server_at(f, 2);
    auto o = fleet_on();
    // A coin that (almost) never comes up: what samples below is not the coin's doing. One
    // chance in 10^9 per give-back that it does.
    o.fleet.sample_fraction = 1e-9;
    pool p(f.server, o);
    use_once(p);
    CHECK(requests(f) == 1); // the first: nothing known yet
    for (int i = 0; i < 20; ++i) {
        use_once(p);
    }
    CHECK(requests(f) == 1); // below the threshold: the coin decides
    // The server fills up; a new instance starts, and its first sample sees it.
    server_at(f, 18);
    pool q(f.server, o);
    const std::size_t before = requests(f);
    for (int i = 0; i < 5; ++i) {
        use_once(q); // each closes its connection (18 of 20) and samples again
    }
    CHECK(requests(f) == before + 5);
    CHECK(q.stats().closed_fleet_pressure == 5);
    server_at(f, 3); // relieved: one sample finds it out, then the coin again
    for (int i = 0; i < 5; ++i) {
        use_once(q);
    }
    CHECK(requests(f) == before + 6);
    CHECK(q.stats().closed_fleet_pressure == 5);
}

TEST_CASE("a sample that hangs is cut off by validation_timeout and closes the connection") {
    fixture f;
    f.server->fleet_hangs = true;
    auto o = fleet_on();
    o.validation_timeout = std::chrono::milliseconds{2'000};
    pool p(f.server, f.recorded(o));
    const auto before = manual_clock::now();
    CHECK(use_once(p) == 1);
    CHECK(manual_clock::now() - before == std::chrono::milliseconds{2'000}); // bounded
    const auto s = p.stats();
    CHECK(s.fleet_samples == 1);
    CHECK(s.fleet_sample_failures == 1);
    CHECK(s.closed_broken == 1); // unreadable: never reused
    CHECK(f.server->open_now == 0);
    CHECK(last_message(f, event_type::fleet_sample_failed) ==
          "the fleet sample failed: mock: no answer within 2000 ms; the connection cannot be "
          "reused");
    f.server->fleet_hangs = false;
    CHECK(use_once(p) == 2);
}

TEST_CASE("a sample the server refused cleanly keeps the connection and decides nothing") {
    fixture f;
    f.server->fleet_fails = true;
    pool p(f.server, f.recorded(fleet_on()));
    CHECK(use_once(p) == 1);
    CHECK(use_once(p) == 1);
    const auto s = p.stats();
    CHECK(s.fleet_sample_failures == 2);
    CHECK(s.closed == 0);
    CHECK(last_message(f, event_type::fleet_sample_failed) ==
          "the fleet sample failed: mock: permission denied for pg_stat_activity");
}

TEST_CASE("no sample on a connection that is closed anyway") {
    fixture f;
    server_at(f, 1);
    pool p(f.server, fleet_on());
    {
        auto l = p.acquire();
        l.invalidate();
    }
    {
        auto l = p.acquire();
        l->broken = true;
    }
    {
        auto l = p.acquire();
        l->in_tx = true;
        l->rollback_ok = false;
    }
    {
        auto l = p.acquire();
        l->reusable = false;
    }
    {
        auto l = p.acquire();
        p.abandon_connections(); // a restore during the lease: nothing more is sent on it
    }
    CHECK(requests(f) == 0);
    CHECK(p.stats().fleet_samples == 0);
}

TEST_CASE("the sample runs after the rollback: never inside the user's transaction") {
    fixture f;
    server_at(f, 1);
    pool p(f.server, fleet_on());
    mock_connection* c = nullptr;
    f.server->during_rollback = [&] {
        CHECK(requests(f) == 0);
    };
    {
        auto l = p.acquire();
        c = l.get();
        l->in_tx = true;
    }
    CHECK(c->rollbacks == 1);
    CHECK(requests(f) == 1);
}

TEST_CASE("a connection a caller waits for is handed over even above close_above") {
    fixture f;
    server_at(f, 19);
    auto o = fleet_on();
    o.max_size = 1;
    o.handoff_after = std::chrono::milliseconds{0};
    manual_clock::set_auto_advance(false); // the waiter waits until served, not to its timeout
    pool p(f.server, f.recorded(o));
    auto held = p.acquire();
    int got = 0;
    std::thread t([&] { got = p.acquire()->number; });
    until_waiting(p, 1);
    held.release();
    t.join();
    CHECK(got == 1); // handed over, not closed: closing would make the waiter open a new one
    CHECK(p.stats().closed_fleet_pressure == 1); // the waiter's own give-back, with none waiting
    CHECK(f.server->opened == 1);
    bool kept_for_waiter = false;
    {
        std::lock_guard<std::mutex> lock(f.events_mutex);
        for (const auto& m : f.messages) {
            kept_for_waiter =
                kept_for_waiter ||
                m.find("a caller is waiting for this connection: kept") != std::string::npos;
        }
    }
    CHECK(kept_for_waiter);
}

TEST_CASE("the fleet counters and gauges reach the Prometheus text") {
    fixture f;
    server_at(f, 17);
    f.server->fleet_zombies = 1;
    auto o = fleet_on();
    o.fleet.reap = true;
    pool p(f.server, o);
    use_once(p);
    const std::string text = warmpool::render_prometheus({warmpool::metrics_of(p, "fleet")});
    CHECK(text.find("db_client_connection_fleet_samples_total{pool_name=\"fleet\"} 1\n") !=
          std::string::npos);
    CHECK(text.find("db_client_connection_fleet_reaped_total{pool_name=\"fleet\"} 1\n") !=
          std::string::npos);
    CHECK(text.find("db_client_connection_fleet_server_in_use{pool_name=\"fleet\"} 16\n") !=
          std::string::npos);
    CHECK(text.find("db_client_connection_fleet_server_capacity{pool_name=\"fleet\"} 20\n") !=
          std::string::npos);
    CHECK(text.find("db_client_connection_closed_total{pool_name=\"fleet\",reason=\"fleet_"
                    "pressure\"} 1\n") != std::string::npos);
}
