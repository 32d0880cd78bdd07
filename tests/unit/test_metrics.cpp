// The Prometheus exposition of pool_stats (warmpool/metrics.hpp): the exact text, escaping, label
// checks, grouping of several pools, cumulative buckets, number formatting, and the histograms
// a real pool records.
#include "support/fixture.hpp"

#include <warmpool/metrics.hpp>
// The single header the tests can be built against (WARMPOOL_TEST_SINGLE_HEADER) may lack
// metrics.hpp; this brings it in then, and the header's include guard makes it a no-op otherwise.
#include "../../include/warmpool/metrics.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <iterator>
#include <locale>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace warmpool_test;
using std::chrono::microseconds;

namespace {

// Every field set to a value of its own, so that a field written under the wrong name shows.
warmpool::metrics_source hand_built() {
    warmpool::metrics_source s;
    s.pool_name = "orders";
    s.labels = {{"service", "billing"}};
    s.idle_min = 2;
    warmpool::pool_stats& st = s.stats;
    st.open = 7;
    st.idle = 3;
    st.in_use = 4;
    st.waiting = 2;
    st.connecting = 1;
    st.max_size = 8;
    st.created = 11;
    st.closed = 255; // the sum of closed_* below
    st.acquired = 1234;
    st.timeouts = 5;
    st.validation_failures = 6;
    st.connect_failures = 9;
    st.pings = 13;
    st.rollbacks = 14;
    st.resets = 15;
    st.leaks_suspected = 16;
    st.forks = 17;
    st.closed_idle_timeout = 21;
    st.closed_max_lifetime = 22;
    st.closed_validation_failed = 23;
    st.closed_broken = 24;
    st.closed_invalidated = 25;
    st.closed_pool_closed = 26;
    st.closed_rejected_on_release = 27;
    st.closed_abandoned = 28;
    st.closed_drained = 29;
    st.closed_fleet_pressure = 30;
    st.fleet_samples = 41;
    st.fleet_sample_failures = 42;
    st.fleet_reaped = 43;
    st.fleet_in_use = 44;
    st.fleet_capacity = 45;
    st.waits = 31;
    st.wait_time_total = microseconds(2'500'001);
    st.wait_time_max = microseconds(750'000);
    // Two zeros and 7 µs in the first bucket, 30 µs in (25 µs, 50 µs], 3 ms in (2.5 ms, 5 ms],
    // 20 s above the last bound.
    for (long us : {0L, 0L, 7L, 30L, 3'000L, 20'000'000L}) {
        st.acquire_time.record(microseconds(us));
    }
    // 100 ms exactly: bounds are inclusive, so it counts under le="0.1".
    for (long us : {1'234'567L, 100'000L}) {
        st.use_time.record(microseconds(us));
    }
    st.create_time.record(microseconds(25'000));
    return s;
}

std::string rejection(const std::vector<warmpool::metrics_source>& sources) {
    try {
        (void)warmpool::render_prometheus(sources);
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "(accepted)";
}

std::string rejection(const warmpool::metrics_source& source) {
    return rejection(std::vector<warmpool::metrics_source>{source});
}

warmpool::metrics_source labelled(std::string name, warmpool::metrics_labels labels) {
    warmpool::metrics_source s;
    s.pool_name = std::move(name);
    s.labels = std::move(labels);
    return s;
}

struct sample {
    std::string name;
    std::string labels; // between the braces, as written
    std::string value;
};

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

// Sample lines only; label values in these tests hold no '}' or space.
std::vector<sample> samples_of(const std::string& text) {
    std::vector<sample> out;
    for (const auto& line : lines_of(text)) {
        if (line.empty() || line[0] == '#') {
            continue;
        }
        const auto open = line.find('{');
        const auto close = line.find("} ");
        REQUIRE(open != std::string::npos);
        REQUIRE(close != std::string::npos);
        out.push_back({line.substr(0, open), line.substr(open + 1, close - open - 1),
                       line.substr(close + 2)});
    }
    return out;
}

// The value of the one sample named `name` whose labels contain every one of `parts`.
std::string value_of(const std::string& text, const std::string& name,
                     const std::vector<std::string>& parts) {
    std::string found;
    int matches = 0;
    for (const auto& s : samples_of(text)) {
        bool all = s.name == name;
        for (const auto& p : parts) {
            all = all && s.labels.find(p) != std::string::npos;
        }
        if (all) {
            found = s.value;
            ++matches;
        }
    }
    REQUIRE_MESSAGE(matches == 1, name << ": " << matches << " samples match");
    return found;
}

const char* const golden =
    R"golden(# HELP db_client_connection_open Open connections by state: idle (in the pool) or used (held by a lease).
# TYPE db_client_connection_open gauge
db_client_connection_open{pool_name="orders",service="billing",state="idle"} 3
db_client_connection_open{pool_name="orders",service="billing",state="used"} 4
# HELP db_client_connection_max Most connections the pool opens at once (options::max_size).
# TYPE db_client_connection_max gauge
db_client_connection_max{pool_name="orders",service="billing"} 8
# HELP db_client_connection_idle_max Most idle connections the pool keeps: max_size, since a connection given back stays until idle_timeout.
# TYPE db_client_connection_idle_max gauge
db_client_connection_idle_max{pool_name="orders",service="billing"} 8
# HELP db_client_connection_idle_min Idle connections housekeeping keeps open (options::min_idle).
# TYPE db_client_connection_idle_min gauge
db_client_connection_idle_min{pool_name="orders",service="billing"} 2
# HELP db_client_connection_pending_requests Callers waiting in acquire() for a connection.
# TYPE db_client_connection_pending_requests gauge
db_client_connection_pending_requests{pool_name="orders",service="billing"} 2
# HELP db_client_connection_timeouts_total acquire() calls that gave up and threw acquire_timeout.
# TYPE db_client_connection_timeouts_total counter
db_client_connection_timeouts_total{pool_name="orders",service="billing"} 5
# HELP db_client_connection_create_time_seconds Time to open one connection, setup included (successful connects only).
# TYPE db_client_connection_create_time_seconds histogram
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="1e-05"} 0
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="2.5e-05"} 0
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="5e-05"} 0
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="0.0001"} 0
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="0.00025"} 0
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="0.0005"} 0
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="0.001"} 0
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="0.0025"} 0
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="0.005"} 0
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="0.01"} 0
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="0.025"} 1
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="0.05"} 1
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="0.1"} 1
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="0.25"} 1
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="0.5"} 1
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="1"} 1
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="2.5"} 1
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="5"} 1
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="10"} 1
db_client_connection_create_time_seconds_bucket{pool_name="orders",service="billing",le="+Inf"} 1
db_client_connection_create_time_seconds_sum{pool_name="orders",service="billing"} 0.025
db_client_connection_create_time_seconds_count{pool_name="orders",service="billing"} 1
# HELP db_client_connection_wait_time_seconds Time acquire() took to hand out a lease (queueing, validation and connecting), recorded when the lease is given back.
# TYPE db_client_connection_wait_time_seconds histogram
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="1e-05"} 3
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="2.5e-05"} 3
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="5e-05"} 4
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="0.0001"} 4
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="0.00025"} 4
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="0.0005"} 4
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="0.001"} 4
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="0.0025"} 4
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="0.005"} 5
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="0.01"} 5
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="0.025"} 5
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="0.05"} 5
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="0.1"} 5
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="0.25"} 5
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="0.5"} 5
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="1"} 5
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="2.5"} 5
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="5"} 5
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="10"} 5
db_client_connection_wait_time_seconds_bucket{pool_name="orders",service="billing",le="+Inf"} 6
db_client_connection_wait_time_seconds_sum{pool_name="orders",service="billing"} 20.003037
db_client_connection_wait_time_seconds_count{pool_name="orders",service="billing"} 6
# HELP db_client_connection_use_time_seconds Time from checkout to give-back, per lease.
# TYPE db_client_connection_use_time_seconds histogram
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="1e-05"} 0
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="2.5e-05"} 0
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="5e-05"} 0
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="0.0001"} 0
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="0.00025"} 0
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="0.0005"} 0
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="0.001"} 0
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="0.0025"} 0
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="0.005"} 0
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="0.01"} 0
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="0.025"} 0
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="0.05"} 0
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="0.1"} 1
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="0.25"} 1
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="0.5"} 1
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="1"} 1
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="2.5"} 2
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="5"} 2
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="10"} 2
db_client_connection_use_time_seconds_bucket{pool_name="orders",service="billing",le="+Inf"} 2
db_client_connection_use_time_seconds_sum{pool_name="orders",service="billing"} 1.334567
db_client_connection_use_time_seconds_count{pool_name="orders",service="billing"} 2
# HELP db_client_connection_connecting Connects in progress.
# TYPE db_client_connection_connecting gauge
db_client_connection_connecting{pool_name="orders",service="billing"} 1
# HELP db_client_connection_acquired_total Leases handed out.
# TYPE db_client_connection_acquired_total counter
db_client_connection_acquired_total{pool_name="orders",service="billing"} 1234
# HELP db_client_connection_created_total Connections opened.
# TYPE db_client_connection_created_total counter
db_client_connection_created_total{pool_name="orders",service="billing"} 11
# HELP db_client_connection_closed_total Connections closed, by reason.
# TYPE db_client_connection_closed_total counter
db_client_connection_closed_total{pool_name="orders",service="billing",reason="idle_timeout"} 21
db_client_connection_closed_total{pool_name="orders",service="billing",reason="max_lifetime"} 22
db_client_connection_closed_total{pool_name="orders",service="billing",reason="validation_failed"} 23
db_client_connection_closed_total{pool_name="orders",service="billing",reason="broken"} 24
db_client_connection_closed_total{pool_name="orders",service="billing",reason="invalidated"} 25
db_client_connection_closed_total{pool_name="orders",service="billing",reason="pool_closed"} 26
db_client_connection_closed_total{pool_name="orders",service="billing",reason="rejected_on_release"} 27
db_client_connection_closed_total{pool_name="orders",service="billing",reason="abandoned"} 28
db_client_connection_closed_total{pool_name="orders",service="billing",reason="drained"} 29
db_client_connection_closed_total{pool_name="orders",service="billing",reason="fleet_pressure"} 30
# HELP db_client_connection_connect_failures_total Failed connect attempts, each retry counted.
# TYPE db_client_connection_connect_failures_total counter
db_client_connection_connect_failures_total{pool_name="orders",service="billing"} 9
# HELP db_client_connection_validation_failures_total Idle connections found dead at checkout by the socket check or a ping.
# TYPE db_client_connection_validation_failures_total counter
db_client_connection_validation_failures_total{pool_name="orders",service="billing"} 6
# HELP db_client_connection_pings_total Validation round trips.
# TYPE db_client_connection_pings_total counter
db_client_connection_pings_total{pool_name="orders",service="billing"} 13
# HELP db_client_connection_rollbacks_total Transactions left open by a lease and rolled back at give-back.
# TYPE db_client_connection_rollbacks_total counter
db_client_connection_rollbacks_total{pool_name="orders",service="billing"} 14
# HELP db_client_connection_resets_total Sessions reset at give-back (options::reset_on_release).
# TYPE db_client_connection_resets_total counter
db_client_connection_resets_total{pool_name="orders",service="billing"} 15
# HELP db_client_connection_leaks_suspected_total Leases held longer than options::leak_threshold.
# TYPE db_client_connection_leaks_suspected_total counter
db_client_connection_leaks_suspected_total{pool_name="orders",service="billing"} 16
# HELP db_client_connection_queued_total acquire() calls that queued for a connection another caller held.
# TYPE db_client_connection_queued_total counter
db_client_connection_queued_total{pool_name="orders",service="billing"} 31
# HELP db_client_connection_queued_seconds_total Time acquire() calls spent queued for a connection another caller held.
# TYPE db_client_connection_queued_seconds_total counter
db_client_connection_queued_seconds_total{pool_name="orders",service="billing"} 2.500001
# HELP db_client_connection_queued_max_seconds Longest time one acquire() call spent queued, over the pool's life.
# TYPE db_client_connection_queued_max_seconds gauge
db_client_connection_queued_max_seconds{pool_name="orders",service="billing"} 0.75
# HELP db_client_connection_forks_total fork()s noticed; the child drops the connections it inherited.
# TYPE db_client_connection_forks_total counter
db_client_connection_forks_total{pool_name="orders",service="billing"} 17
# HELP db_client_connection_fleet_samples_total Give-backs that asked the server how full it is (options::fleet).
# TYPE db_client_connection_fleet_samples_total counter
db_client_connection_fleet_samples_total{pool_name="orders",service="billing"} 41
# HELP db_client_connection_fleet_sample_failures_total Fleet samples whose query failed or timed out.
# TYPE db_client_connection_fleet_sample_failures_total counter
db_client_connection_fleet_sample_failures_total{pool_name="orders",service="billing"} 42
# HELP db_client_connection_fleet_reaped_total Zombie connections of the same application ended by fleet samples.
# TYPE db_client_connection_fleet_reaped_total counter
db_client_connection_fleet_reaped_total{pool_name="orders",service="billing"} 43
# HELP db_client_connection_fleet_server_in_use Server connections in use at the last fleet sample, against the binding limit.
# TYPE db_client_connection_fleet_server_in_use gauge
db_client_connection_fleet_server_in_use{pool_name="orders",service="billing"} 44
# HELP db_client_connection_fleet_server_capacity The binding connection limit at the last fleet sample (server's or user's); 0 before the first.
# TYPE db_client_connection_fleet_server_capacity gauge
db_client_connection_fleet_server_capacity{pool_name="orders",service="billing"} 45
)golden";

} // namespace

TEST_CASE("a hand-built pool_stats renders exactly as the Prometheus text format 0.0.4 expects") {
    CHECK(warmpool::render_prometheus({hand_built()}) == golden);
}

TEST_CASE("no sources render as empty text") {
    CHECK(warmpool::render_prometheus({}).empty());
}

TEST_CASE("label values escape backslash, double quote and line feed, and keep UTF-8 as it is") {
    auto s = hand_built();
    s.pool_name = "a\\b\"c\nd";
    s.labels = {{"region", "Zürich \"Nord\"\\"}};
    const auto text = warmpool::render_prometheus({s});
    CHECK(text.find(
              R"(db_client_connection_max{pool_name="a\\b\"c\nd",region="Zürich \"Nord\"\\"} 8)") !=
          std::string::npos);
    // No raw line feed inside a sample: every line is a comment or starts with the prefix.
    for (const auto& line : lines_of(text)) {
        CHECK((line.rfind("# ", 0) == 0 || line.rfind("db_client_connection_", 0) == 0));
    }
}

TEST_CASE("label names are checked, and a bad one is rejected with its name") {
    for (const char* bad : {"", "1st", "with-dash", "dotted.name", "space d", "ü"}) {
        CAPTURE(bad);
        const auto why = rejection(labelled("orders", {{bad, "x"}}));
        CHECK(why.find("label name \"" + std::string(bad) + "\" is not a valid label name") !=
              std::string::npos);
        CHECK(why.find("pool \"orders\"") != std::string::npos);
    }
    for (const char* reserved : {"le", "pool_name", "state", "reason", "quantile", "__name__"}) {
        CAPTURE(reserved);
        const auto why = rejection(labelled("orders", {{reserved, "x"}}));
        CHECK(why.find("label name \"" + std::string(reserved) + "\" is reserved") !=
              std::string::npos);
        // metrics_of() and validate() check the same way, before any rendering.
        CHECK_THROWS_AS(warmpool::validate(labelled("orders", {{reserved, "x"}})),
                        std::invalid_argument);
    }
    CHECK(rejection(labelled("orders", {{"shard", "1"}, {"shard", "2"}}))
              .find("label name \"shard\" is given twice") != std::string::npos);
    CHECK(rejection(labelled("", {})).find("pool_name is empty") != std::string::npos);
    CHECK(rejection(labelled("orders", {{"zone", "bad \xC3"}}))
              .find("the value of label \"zone\" is not valid UTF-8") != std::string::npos);
    CHECK(rejection(labelled("orders\xFF", {})).find("not valid UTF-8") != std::string::npos);
    for (const char* good : {"_", "a", "Shard_2", "_private", "service"}) {
        CAPTURE(good);
        CHECK(rejection(labelled("orders", {{good, "x"}})) == "(accepted)");
    }
}

TEST_CASE("UTF-8 checks reject overlong forms, surrogates and code points past U+10FFFF") {
    using warmpool::detail::prometheus::is_utf8;
    CHECK(is_utf8(""));
    CHECK(is_utf8("plain"));
    CHECK(is_utf8("\xC3\xBC"));               // ü
    CHECK(is_utf8("\xE2\x82\xAC"));           // €
    CHECK(is_utf8("\xF0\x9F\x98\x80"));       // U+1F600
    CHECK(is_utf8("\xF4\x8F\xBF\xBF"));       // U+10FFFF
    CHECK_FALSE(is_utf8("\xC0\xAF"));         // overlong '/'
    CHECK_FALSE(is_utf8("\xE0\x80\xAF"));     // overlong '/'
    CHECK_FALSE(is_utf8("\xED\xA0\x80"));     // U+D800, a surrogate
    CHECK_FALSE(is_utf8("\xF4\x90\x80\x80")); // U+110000
    CHECK_FALSE(is_utf8("\xE2\x82"));         // cut short
    CHECK_FALSE(is_utf8("\x80"));             // a continuation byte alone
}

TEST_CASE("every close reason has its sample in db_client_connection_closed_total") {
    const auto text = warmpool::render_prometheus({hand_built()});
    int reasons = 0;
    for (int i = 1; i < 256; ++i) {
        const auto name = warmpool::to_string(static_cast<warmpool::close_reason>(i));
        if (name == "unknown") {
            continue;
        }
        ++reasons;
        CAPTURE(name);
        CHECK(text.find("reason=\"" + std::string(name) + "\"") != std::string::npos);
    }
    CHECK(reasons == static_cast<int>(std::size(warmpool::detail::prometheus::closed_counters)));
}

TEST_CASE(
    "two pools with the same name and labels are rejected; a label of their own tells them apart") {
    auto a = labelled("orders", {{"shard", "1"}, {"zone", "a"}});
    auto b = labelled("orders", {{"zone", "a"}, {"shard", "1"}}); // the same set, in another order
    const auto why = rejection({a, labelled("audit", {}), b});
    CHECK(why.find("sources 0 and 2 have the same pool_name and labels") != std::string::npos);
    b.labels[1].second = "2";
    CHECK(rejection({a, b}) == "(accepted)");
}

TEST_CASE("an empty label value is no label: it does not tell two pools apart") {
    // Prometheus drops labels with empty values, so these two would be one series.
    const auto why = rejection({labelled("orders", {{"shard", ""}}), labelled("orders", {})});
    CHECK(why.find("sources 0 and 1 have the same pool_name and labels") != std::string::npos);
}

TEST_CASE("bucket counts that would overflow stay cumulative: the sum saturates") {
    auto s = hand_built();
    s.stats.use_time.counts.fill(UINT64_MAX / 2);
    const auto text = warmpool::render_prometheus({s});
    std::uint64_t previous = 0;
    for (const auto& sample : samples_of(text)) {
        if (sample.name == "db_client_connection_use_time_seconds_bucket") {
            const auto n = std::stoull(sample.value);
            CHECK(n >= previous);
            previous = n;
        }
    }
    CHECK(previous == UINT64_MAX);
    CHECK(value_of(text, "db_client_connection_use_time_seconds_count", {}) ==
          std::to_string(UINT64_MAX));
}

TEST_CASE("with two pools every family is written once, all its samples together") {
    auto orders = hand_built();
    auto audit = hand_built();
    audit.pool_name = "audit";
    audit.labels.clear();
    const auto text = warmpool::render_prometheus({orders, audit});

    std::map<std::string, std::string> type_of;            // family -> type
    std::string family;                                    // the family the samples below belong to
    std::map<std::string, std::set<std::string>> pools_in; // family -> pool_name labels seen
    for (const auto& line : lines_of(text)) {
        if (line.rfind("# HELP ", 0) == 0) {
            family = line.substr(7, line.find(' ', 7) - 7);
            CHECK_MESSAGE(type_of.count(family) == 0, family << " is written twice");
            continue;
        }
        if (line.rfind("# TYPE ", 0) == 0) {
            std::istringstream in(line.substr(7));
            std::string name, type;
            in >> name >> type;
            CHECK(name == family);
            type_of[name] = type;
            continue;
        }
        const auto name = line.substr(0, line.find('{'));
        bool belongs = name == family;
        if (type_of[family] == "histogram") {
            belongs =
                name == family + "_bucket" || name == family + "_sum" || name == family + "_count";
        }
        CHECK_MESSAGE(belongs, name << " is written under " << family);
        const auto at = line.find("pool_name=\"");
        REQUIRE(at != std::string::npos);
        pools_in[family].insert(line.substr(at, line.find('"', at + 11) + 1 - at));
    }
    CHECK(type_of.size() == 28);
    for (const auto& entry : pools_in) { // not a structured binding: CAPTURE is a lambda
        const std::string& name = entry.first;
        CAPTURE(name);
        CHECK(entry.second == std::set<std::string>{"pool_name=\"orders\"", "pool_name=\"audit\""});
    }
    // One pool's samples stay together within a family: orders' first, then audit's.
    const auto orders_last =
        text.rfind("db_client_connection_use_time_seconds_count{pool_name=\"orders\"");
    const auto audit_first =
        text.find("db_client_connection_use_time_seconds_bucket{pool_name=\"audit\"");
    CHECK(orders_last < audit_first);
    CHECK(text.find("db_client_connection_use_time_seconds_bucket{pool_name=\"orders\"",
                    audit_first) == std::string::npos);
}

TEST_CASE("histogram buckets are cumulative and the +Inf bucket equals _count") {
    const auto text = warmpool::render_prometheus({hand_built()});
    for (const std::string family :
         {"db_client_connection_create_time_seconds", "db_client_connection_wait_time_seconds",
          "db_client_connection_use_time_seconds"}) {
        CAPTURE(family);
        std::vector<std::string> les;
        std::uint64_t previous = 0;
        std::uint64_t infinity = 0;
        for (const auto& s : samples_of(text)) {
            if (s.name != family + "_bucket") {
                continue;
            }
            const auto le = s.labels.substr(s.labels.find("le=\"") + 4);
            les.push_back(le.substr(0, le.size() - 1));
            const auto n = std::stoull(s.value);
            CHECK(n >= previous);
            previous = n;
            infinity = n;
        }
        CHECK(les == std::vector<std::string>{"1e-05",  "2.5e-05", "5e-05",  "0.0001", "0.00025",
                                              "0.0005", "0.001",   "0.0025", "0.005",  "0.01",
                                              "0.025",  "0.05",    "0.1",    "0.25",   "0.5",
                                              "1",      "2.5",     "5",      "10",     "+Inf"});
        CHECK(les.back() == "+Inf");
        CHECK(std::to_string(infinity) == value_of(text, family + "_count", {}));
    }
    CHECK(value_of(text, "db_client_connection_wait_time_seconds_bucket", {"le=\"5e-05\""}) == "4");
    CHECK(value_of(text, "db_client_connection_wait_time_seconds_bucket", {"le=\"10\""}) == "5");
    CHECK(value_of(text, "db_client_connection_wait_time_seconds_bucket", {"le=\"+Inf\""}) == "6");
    CHECK(value_of(text, "db_client_connection_wait_time_seconds_count", {}) == "6");
}

TEST_CASE("a histogram whose count disagrees with its buckets still renders a valid histogram") {
    auto s = hand_built();
    s.stats.use_time.count = 99; // a hand-made snapshot: the buckets hold 2
    const auto text = warmpool::render_prometheus({s});
    CHECK(value_of(text, "db_client_connection_use_time_seconds_bucket", {"le=\"+Inf\""}) == "2");
    CHECK(value_of(text, "db_client_connection_use_time_seconds_count", {}) == "2");
}

TEST_CASE(
    "seconds are written in decimal from microseconds, so a parser reads the nearest double") {
    using warmpool::detail::prometheus::append_bound;
    using warmpool::detail::prometheus::append_seconds;
    const auto seconds = [](long long us) {
        std::string s;
        append_seconds(s, microseconds(us));
        return s;
    };
    CHECK(seconds(0) == "0");
    CHECK(seconds(1) == "0.000001");
    CHECK(seconds(25) == "0.000025");
    CHECK(seconds(1'000'000) == "1");
    CHECK(seconds(1'234'567) == "1.234567");
    CHECK(seconds(2'500'000) == "2.5");
    CHECK(seconds(86'400'000'000) == "86400");
    CHECK(seconds(-1'500'000) == "-1.5");
    // strtod rounds correctly, like the server's parser (Go's strconv.ParseFloat); the double it
    // reads is us / 1e6 computed in double, itself correctly rounded.
    for (long long us = 1; us < 50'000'000'000LL; us = us * 7 + 3) {
        CAPTURE(us);
        CHECK(std::strtod(seconds(us).c_str(), nullptr) == static_cast<double>(us) / 1e6);
    }
    const auto bound = [](long long us) {
        std::string s;
        append_bound(s, microseconds(us));
        return s;
    };
    // As Go's strconv.FormatFloat(v, 'g', -1, 64), which client_golang writes into `le`.
    CHECK(bound(1) == "1e-06");
    CHECK(bound(10) == "1e-05");
    CHECK(bound(25) == "2.5e-05");
    CHECK(bound(125) == "0.000125");
    CHECK(bound(100) == "0.0001");
    CHECK(bound(10'000'000) == "10");
    CHECK(bound(999'999'000'000) == "999999");
    CHECK(bound(1'000'000'000'000) == "1e+06");
    CHECK(bound(1'250'000'000'000) == "1.25e+06");
}

namespace {
// A locale that writes 1234.5 as "1.234,5", as a German one would.
struct comma_numpunct : std::numpunct<char> {
    char do_decimal_point() const override { return ','; }
    char do_thousands_sep() const override { return '.'; }
    std::string do_grouping() const override { return "\3"; }
};
} // namespace

TEST_CASE("the text does not depend on the global locale nor on the stream's") {
    const auto expected = warmpool::render_prometheus({hand_built()});
    const std::locale comma(std::locale::classic(), new comma_numpunct);
    const std::locale previous = std::locale::global(comma);
    std::ostringstream out;
    out.imbue(comma);
    warmpool::write_prometheus(out, {hand_built()});
    const auto rendered = warmpool::render_prometheus({hand_built()});
    std::locale::global(previous);
    CHECK(out.str() == expected);
    CHECK(rendered == expected);
    // The locale did take: a number streamed the ordinary way is grouped.
    std::ostringstream check;
    check.imbue(comma);
    check << 1234;
    CHECK(check.str() == "1.234");
}

TEST_CASE("write_prometheus writes nothing when a source is rejected") {
    std::ostringstream out;
    CHECK_THROWS_AS(
        warmpool::write_prometheus(out, {hand_built(), labelled("orders", {{"le", "1"}})}),
        std::invalid_argument);
    CHECK(out.str().empty());
}

TEST_CASE("metrics_of a real pool: its histograms and counters come from the pool") {
    fixture f;
    f.server->connect_cost = 3ms; // manual time each connect takes
    warmpool::options o;
    o.max_size = 2;
    pool p(f.server, o);
    {
        auto first = p.acquire(); // connects: 3 ms to create, 3 ms to acquire
        manual_clock::advance(20ms);
    } // used for 20 ms
    {
        auto warm = p.acquire(); // the same connection, given back just now: no clock, 0 s
        CHECK(warm->number == 1);
        manual_clock::advance(200ms);
    } // used for 200 ms

    const auto source = warmpool::metrics_of(p, "main", {{"service", "checkout"}});
    const auto& st = source.stats;
    CHECK(st.create_time.count == 1);
    CHECK(st.acquire_time.count == 2);
    CHECK(st.use_time.count == 2);
    CHECK(source.idle_min == o.min_idle);

    const auto text = warmpool::render_prometheus({source});
    const auto v = [&](const std::string& name, std::vector<std::string> parts = {}) {
        parts.push_back("pool_name=\"main\",service=\"checkout\"");
        return value_of(text, name, parts);
    };
    CHECK(v("db_client_connection_create_time_seconds_bucket", {"le=\"0.0025\""}) == "0");
    CHECK(v("db_client_connection_create_time_seconds_bucket", {"le=\"0.005\""}) == "1");
    CHECK(v("db_client_connection_create_time_seconds_sum") == "0.003");
    CHECK(v("db_client_connection_create_time_seconds_count") == "1");

    CHECK(v("db_client_connection_wait_time_seconds_bucket", {"le=\"1e-05\""}) == "1");
    CHECK(v("db_client_connection_wait_time_seconds_bucket", {"le=\"0.0025\""}) == "1");
    CHECK(v("db_client_connection_wait_time_seconds_bucket", {"le=\"0.005\""}) == "2");
    CHECK(v("db_client_connection_wait_time_seconds_sum") == "0.003");
    CHECK(v("db_client_connection_wait_time_seconds_count") == "2");

    CHECK(v("db_client_connection_use_time_seconds_bucket", {"le=\"0.01\""}) == "0");
    CHECK(v("db_client_connection_use_time_seconds_bucket", {"le=\"0.025\""}) == "1");
    CHECK(v("db_client_connection_use_time_seconds_bucket", {"le=\"0.1\""}) == "1");
    CHECK(v("db_client_connection_use_time_seconds_bucket", {"le=\"0.25\""}) == "2");
    CHECK(v("db_client_connection_use_time_seconds_bucket", {"le=\"+Inf\""}) == "2");
    CHECK(v("db_client_connection_use_time_seconds_sum") == "0.22");

    CHECK(v("db_client_connection_acquired_total") == "2");
    CHECK(v("db_client_connection_created_total") == "1");
    CHECK(v("db_client_connection_open", {"state=\"idle\""}) == "1");
    CHECK(v("db_client_connection_open", {"state=\"used\""}) == "0");
    CHECK(v("db_client_connection_max") == "2");
    CHECK(v("db_client_connection_closed_total", {"reason=\"idle_timeout\""}) == "0");

    // A lease still out has not been recorded yet: acquire_time is written at give-back.
    auto held = p.acquire();
    CHECK(p.stats().acquire_time.count == 2);
    CHECK(p.stats().acquired == 3);
}
