// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// The fleet policy end to end, through soci_pool on a real PostgreSQL: a pool whose user is at
// its connection limit closes the connection it is given back, and keeps it once the limit is
// far; a pool whose idle connection another instance's sample reaped hands out a working one at
// its next acquire, with no error reaching the caller. (The SQL itself, on both servers, is in
// test_soci_fleet.cpp.)

#include <warmpool/soci.hpp>

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE

#include "support/real_server.hpp"
#include "support/server_kind.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using std::chrono::milliseconds;
using namespace servers;
using session_ptr = std::unique_ptr<soci::session>;

/// A non-superuser role limited to `limit` connections; dropped with its sessions at the end.
struct limited_role {
    session_ptr admin;
    std::string cs;

    limited_role(const std::string& base, int limit) : admin(admin_session(base)) {
        drop();
        *admin << "create role warmpool_fleet_pool login connection limit " + std::to_string(limit);
        cs = with_param(base, "user", "warmpool_fleet_pool");
    }
    ~limited_role() {
        try {
            drop();
        } catch (...) {
        }
    }
    void drop() {
        *admin << "set client_min_messages = error";
        long long n = 0;
        *admin << "select count(pg_terminate_backend(pid, 5000)) from pg_stat_activity where "
                  "usename = 'warmpool_fleet_pool'",
            soci::into(n);
        *admin << "drop role if exists warmpool_fleet_pool";
    }
    warmpool::soci_config config(const std::string& app) const {
        warmpool::soci_config cfg(cs);
        cfg.application_name = app;
        return cfg;
    }
};

/// Events of one pool, for their messages.
struct recorder {
    std::mutex mutex;
    std::vector<std::string> fleet_messages;
    void operator()(const warmpool::event& e) {
        if (e.type == warmpool::event_type::fleet_sampled ||
            e.type == warmpool::event_type::fleet_sample_failed) {
            std::lock_guard<std::mutex> lock(mutex);
            fleet_messages.emplace_back(e.message);
        }
    }
    std::string last() {
        std::lock_guard<std::mutex> lock(mutex);
        return fleet_messages.empty() ? std::string() : fleet_messages.back();
    }
};

warmpool::options fleet_options(recorder& events) {
    warmpool::options o = warmpool::options::single_slot();
    o.fleet.enabled = true;
    o.fleet.sample_fraction = 1.0;
    o.fleet.close_above = 0.8;
    o.on_event = [&events](const warmpool::event& e) {
        events(e);
    };
    return o;
}

int select_one(warmpool::soci_pool& pool) {
    auto sql = pool.acquire();
    int one = 0;
    *sql << "select 1", soci::into(one);
    return one;
}

TEST_CASE("PostgreSQL pool: at the user's limit the connection given back is closed, and far "
          "from it kept" *
          skip_without(pg)) {
    limited_role role(need(pg), 4);
    // Three other instances of the same user hold a connection each: with this pool's, 4 of 4.
    std::vector<session_ptr> others;
    for (int i = 0; i < 3; ++i) {
        others.push_back(
            warmpool::soci_traits::connect(role.config("fleet-others"), milliseconds{10'000}));
    }
    recorder events;
    warmpool::soci_pool pool(role.config("fleet-pool"), fleet_options(events));
    CHECK(select_one(pool) == 1);
    auto s = pool.stats();
    CHECK(s.fleet_samples == 1);
    CHECK(s.closed_fleet_pressure == 1);
    CHECK(s.open == 0); // the slot went back to the server
    CHECK(s.fleet_capacity == 4);
    CHECK(s.fleet_in_use == 4);
    INFO("event: " << events.last());
    CHECK(events.last().find("4 in use of 4 (100%, the user's limit)") != std::string::npos);
    CHECK(events.last().find("this connection is closed") != std::string::npos);

    // The others go away: the next invocation connects anew, and keeps its connection.
    others.clear();
    CHECK(select_one(pool) == 1);
    s = pool.stats();
    CHECK(s.created == 2);
    CHECK(s.closed_fleet_pressure == 1);
    CHECK(s.open == 1);
    CHECK(s.fleet_in_use == 1);
    CHECK(select_one(pool) == 1); // the same connection, no connect
    CHECK(pool.stats().created == 2);
}

TEST_CASE("PostgreSQL pool: an instance whose connection another instance reaped serves its "
          "next invocation without an error" *
          skip_without(pg)) {
    limited_role role(need(pg), 20);
    const std::string app = "fleet-thaw";
    recorder frozen_events;
    recorder reaper_events;
    auto frozen_options = fleet_options(frozen_events);
    warmpool::soci_pool frozen(role.config(app), frozen_options);
    auto reaper_options = fleet_options(reaper_events);
    reaper_options.fleet.reap = true;
    reaper_options.fleet.reap_idle_after = milliseconds{1'000};
    warmpool::soci_pool reaper(role.config(app), reaper_options);

    CHECK(select_one(frozen) == 1); // its connection is now idle: "frozen"
    long long frozen_pid = 0;
    {
        auto sql = frozen.acquire();
        frozen_pid = pg_backend_pid(*sql);
    }
    std::this_thread::sleep_for(milliseconds{1'300}); // idle past the floor
    CHECK(select_one(reaper) == 1);                   // its give-back reaps the frozen one
    INFO("reaper's event: " << reaper_events.last());
    CHECK(reaper.stats().fleet_reaped == 1);
    REQUIRE(eventually([&] { return !pg_backend_exists(*role.admin, frozen_pid); },
                       milliseconds{5'000}));

    // The thaw: idle past validation_window, so pinged, found dead, replaced; the caller sees a
    // working connection.
    CHECK(select_one(frozen) == 1);
    const auto s = frozen.stats();
    CHECK(s.validation_failures == 1);
    CHECK(s.created == 2);
}

} // namespace

#endif // WARMPOOL_SOCI_POSTGRESQL_NATIVE
