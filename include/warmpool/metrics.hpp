// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once
// Also guarded by a macro: tools/amalgamate.py keeps it (not #pragma once), so this file and a
// single header that contains it can be included together, as the single-header tests do.
#ifndef WARMPOOL_METRICS_HPP
#define WARMPOOL_METRICS_HPP

// Pool statistics in the Prometheus text exposition format 0.0.4, named after OpenTelemetry's
// database client connection metrics (docs/metrics.md maps them to OpenTelemetry, HikariCP and
// Go's database/sql). No HTTP here: serve the text with any server (examples/metrics_endpoint/
// uses cpp-httplib), or write it to a file for node_exporter's textfile collector.
//
//     auto text = warmpool::render_prometheus({warmpool::metrics_of(orders_pool, "orders"),
//                                              warmpool::metrics_of(audit_pool, "audit")});

#include <warmpool/events.hpp>
#include <warmpool/stats.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace warmpool {

/// The Content-Type of a reply carrying render_prometheus()'s text.
inline constexpr std::string_view prometheus_content_type =
    "text/plain; version=0.0.4; charset=utf-8";

/// Extra labels put on every series of one pool, in this order: {"service", "billing"}, ...
using metrics_labels = std::vector<std::pair<std::string, std::string>>;

/// One pool's part of a scrape: its statistics and the labels that tell it apart.
struct metrics_source {
    /// The pool_name label (OpenTelemetry's pool name attribute). Must not be empty, and no two
    /// sources of one scrape may share both pool_name and labels.
    std::string pool_name;
    /// Names match [a-zA-Z_][a-zA-Z0-9_]*, do not start with "__" and are none of the labels the
    /// families use themselves (pool_name, state, reason, le, quantile). Values are any UTF-8.
    metrics_labels labels;
    pool_stats stats;
    /// options::min_idle, which pool_stats does not carry (db_client_connection_idle_min).
    std::size_t idle_min = 0;
};

/// Throws std::invalid_argument naming the pool and the label when `source` cannot be rendered:
/// an empty pool name, a label name that is malformed, reserved or given twice, or a value that
/// is not UTF-8. render_prometheus() checks every source anyway; call it to fail early.
inline void validate(const metrics_source& source);

/// A snapshot of `pool` (basic_pool::stats() and get_options()) labelled `pool_name`.
/// Throws std::invalid_argument as validate() does.
template <class Pool>
metrics_source metrics_of(const Pool& pool, std::string pool_name, metrics_labels labels = {}) {
    metrics_source source;
    source.pool_name = std::move(pool_name);
    source.labels = std::move(labels);
    source.stats = pool.stats();
    source.idle_min = pool.get_options().min_idle;
    validate(source);
    return source;
}

/// The sources in the Prometheus text format 0.0.4: each metric family once, with its # HELP
/// and # TYPE lines and then the samples of every source. Checks every source first (throws
/// std::invalid_argument as validate() does, and for two sources with the same labels), so a
/// bad source yields an exception rather than a scrape the server rejects. Durations are in
/// seconds, written in decimal from whole microseconds, so the server reads the double nearest
/// to the exact value. Independent of the global and the C locale. No sources: empty text.
inline std::string render_prometheus(const std::vector<metrics_source>& sources);

/// render_prometheus(), written to `out` (nothing is written when it throws).
inline void write_prometheus(std::ostream& out, const std::vector<metrics_source>& sources);

namespace detail::prometheus {

// Text building: std::to_chars and hand-made decimals, never iostreams or printf, so that no
// locale can put a comma in a number.
inline void append_uint(std::string& out, std::uint64_t v) {
    char buffer[24] = {};
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, v);
    out.append(buffer, result.ptr);
}

inline std::uint64_t magnitude(std::int64_t v) noexcept {
    return v < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
}

// Whole microseconds as seconds in plain decimal, trailing zeros dropped: 2500000 -> "2.5",
// 25 -> "0.000025", 0 -> "0". Exact, so a parser gets the double nearest the true value.
inline void append_seconds(std::string& out, std::chrono::microseconds d) {
    if (d.count() < 0) {
        out += '-';
    }
    const std::uint64_t us = magnitude(d.count());
    append_uint(out, us / 1'000'000);
    std::uint64_t fraction = us % 1'000'000;
    if (fraction == 0) {
        return;
    }
    char digits[6];
    for (int i = 5; i >= 0; --i) {
        digits[i] = static_cast<char>('0' + fraction % 10);
        fraction /= 10;
    }
    std::size_t n = 6;
    while (digits[n - 1] == '0') {
        --n;
    }
    out += '.';
    out.append(digits, n);
}

// A bucket bound as Go's strconv.FormatFloat(v, 'g', -1, 64) writes it, which is what
// client_golang and the Python client put in `le`: "1e-05", "2.5e-05", "0.0001", "1", "10".
// `le` is compared as a string when series are matched, so the same bound must be spelled the
// same way as other exporters spell it. Positive bounds only.
inline void append_bound(std::string& out, std::chrono::microseconds bound) {
    std::uint64_t us = magnitude(bound.count());
    if (us == 0) {
        out += '0';
        return;
    }
    int trailing_zeros = 0;
    while (us % 10 == 0) {
        us /= 10;
        ++trailing_zeros;
    }
    char digits[24] = {}; // initialised: g++ 12 -O2 sees a maybe-uninitialized read otherwise
    const auto result = std::to_chars(digits, digits + sizeof digits, us);
    const int n = static_cast<int>(result.ptr - digits);
    // The value is digits * 10^(trailing_zeros - 6); Go switches to an exponent below 1e-4 and
    // at 1e6 and above when printing the shortest representation.
    const int exponent = n - 1 + trailing_zeros - 6;
    if (exponent >= -4 && exponent < 6) {
        append_seconds(out, bound);
        return;
    }
    out += digits[0];
    if (n > 1) {
        out += '.';
        out.append(digits + 1, result.ptr);
    }
    out += exponent < 0 ? "e-" : "e+";
    const int e = exponent < 0 ? -exponent : exponent;
    if (e < 10) {
        out += '0';
    }
    append_uint(out, static_cast<std::uint64_t>(e));
}

// A label value: backslash, double quote and line feed escaped, as the format requires.
inline void append_label_value(std::string& out, std::string_view value) {
    for (const char c : value) {
        switch (c) {
        case '\\':
            out += "\\\\";
            break;
        case '"':
            out += "\\\"";
            break;
        case '\n':
            out += "\\n";
            break;
        default:
            out += c;
        }
    }
}

inline bool is_label_name(std::string_view name) noexcept {
    if (name.empty()) {
        return false;
    }
    const auto letter = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    };
    if (!letter(name[0]) && name[0] != '_') {
        return false;
    }
    return std::all_of(name.begin() + 1, name.end(),
                       [&](char c) { return letter(c) || (c >= '0' && c <= '9') || c == '_'; });
}

// The labels the families set themselves (pool_name, state, reason, le), and quantile, which a
// summary of the same name would use: a user label of that name would clash with them.
inline bool is_reserved_label(std::string_view name) noexcept {
    return name == "pool_name" || name == "state" || name == "reason" || name == "le" ||
           name == "quantile" || name.substr(0, 2) == "__";
}

// Well-formed UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF): the format is
// UTF-8, and one bad byte makes the server reject the whole scrape.
inline bool is_utf8(std::string_view s) noexcept {
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t length = 0;
        unsigned char low = 0x80, high = 0xBF; // allowed range of the second byte
        if (c >= 0xC2 && c <= 0xDF) {
            length = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            length = 3;
            low = c == 0xE0 ? 0xA0 : 0x80;
            high = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            length = 4;
            low = c == 0xF0 ? 0x90 : 0x80;
            high = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return false;
        }
        if (s.size() - i < length) {
            return false;
        }
        for (std::size_t k = 1; k < length; ++k) {
            const auto next = static_cast<unsigned char>(s[i + k]);
            if (next < (k == 1 ? low : 0x80) || next > (k == 1 ? high : 0xBF)) {
                return false;
            }
        }
        i += length;
    }
    return true;
}

[[noreturn]] inline void reject(const metrics_source& source, const std::string& why) {
    throw std::invalid_argument("warmpool metrics: pool \"" + source.pool_name + "\": " + why);
}

// Every series of one source starts with the same labels: `{pool_name="orders",shard="3"`.
inline std::string series_labels(const metrics_source& source) {
    std::string labels = "{pool_name=\"";
    append_label_value(labels, source.pool_name);
    labels += '"';
    for (const auto& [name, value] : source.labels) {
        labels += ',';
        labels += name;
        labels += "=\"";
        append_label_value(labels, value);
        labels += '"';
    }
    return labels;
}

// Writes each family once, then its samples for every source, as the format requires.
class writer {
public:
    explicit writer(const std::vector<metrics_source>& sources) : sources_(sources) {
        prefixes_.reserve(sources.size());
        for (const auto& source : sources) {
            prefixes_.push_back(series_labels(source));
        }
    }

    std::string take() { return std::move(out_); }

    void family(std::string_view name, std::string_view type, std::string_view help) {
        if (sources_.empty()) {
            return;
        }
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        out_ += help; // written by this file: no backslash or line feed to escape
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }

    // One sample per source; value(source) gives an unsigned integer.
    template <class Value>
    void samples(std::string_view name, Value value) {
        for (std::size_t i = 0; i < sources_.size(); ++i) {
            sample_start(name, i);
            out_ += "} ";
            append_uint(out_, static_cast<std::uint64_t>(value(sources_[i])));
            out_ += '\n';
        }
    }

    // One family-specific label: name{...,label="value"} number.
    void labelled(std::string_view name, std::size_t source, std::string_view label,
                  std::string_view value, std::uint64_t number) {
        sample_start(name, source);
        out_ += ',';
        out_ += label;
        out_ += "=\"";
        append_label_value(out_, value);
        out_ += "\"} ";
        append_uint(out_, number);
        out_ += '\n';
    }

    template <class Value>
    void seconds_samples(std::string_view name, Value value) {
        for (std::size_t i = 0; i < sources_.size(); ++i) {
            sample_start(name, i);
            out_ += "} ";
            append_seconds(out_, value(sources_[i]));
            out_ += '\n';
        }
    }

    // Cumulative buckets, _sum and _count, per source. The +Inf bucket and _count are the sum of
    // the buckets (not latency_histogram::count), so the buckets stay monotonic and +Inf equals
    // _count whatever a hand-made pool_stats holds.
    // A sum that sticks at the largest value instead of wrapping: buckets must never decrease.
    static std::uint64_t saturating_sum(std::uint64_t a, std::uint64_t b) noexcept {
        return b > UINT64_MAX - a ? UINT64_MAX : a + b;
    }

    void histogram(std::string_view name, latency_histogram pool_stats::*member) {
        std::array<std::string, latency_histogram::bucket_count> bounds;
        for (std::size_t b = 0; b < bounds.size(); ++b) {
            append_bound(bounds[b], latency_histogram::upper_bounds[b]);
        }
        const std::string bucket = std::string(name) + "_bucket";
        for (std::size_t i = 0; i < sources_.size(); ++i) {
            const latency_histogram& h = sources_[i].stats.*member;
            std::uint64_t cumulative = 0;
            for (std::size_t b = 0; b < latency_histogram::bucket_count; ++b) {
                cumulative = saturating_sum(cumulative, h.counts[b]);
                labelled(bucket, i, "le", bounds[b], cumulative);
            }
            cumulative = saturating_sum(cumulative, h.counts[latency_histogram::bucket_count]);
            labelled(bucket, i, "le", "+Inf", cumulative);
            sample_start(std::string(name) + "_sum", i);
            out_ += "} ";
            append_seconds(out_, h.sum);
            out_ += '\n';
            sample_start(std::string(name) + "_count", i);
            out_ += "} ";
            append_uint(out_, cumulative);
            out_ += '\n';
        }
    }

private:
    void sample_start(std::string_view name, std::size_t source) {
        out_ += name;
        out_ += prefixes_[source];
    }

    const std::vector<metrics_source>& sources_;
    std::vector<std::string> prefixes_;
    std::string out_;
};

struct closed_counter {
    close_reason reason;
    std::uint64_t pool_stats::*count;
};

// Every close_reason but none, each with its pool_stats counter. The label value is
// to_string(reason), the same word the closed event carries. tests/unit/test_metrics.cpp fails
// when a reason is missing here.
inline constexpr closed_counter closed_counters[] = {
    {close_reason::idle_timeout, &pool_stats::closed_idle_timeout},
    {close_reason::max_lifetime, &pool_stats::closed_max_lifetime},
    {close_reason::validation_failed, &pool_stats::closed_validation_failed},
    {close_reason::broken, &pool_stats::closed_broken},
    {close_reason::invalidated, &pool_stats::closed_invalidated},
    {close_reason::pool_closed, &pool_stats::closed_pool_closed},
    {close_reason::rejected_on_release, &pool_stats::closed_rejected_on_release},
    {close_reason::abandoned, &pool_stats::closed_abandoned},
    {close_reason::drained, &pool_stats::closed_drained},
    {close_reason::fleet_pressure, &pool_stats::closed_fleet_pressure},
};

// Two sources with the same pool_name and the same labels (in any order) would write the same
// series twice, which the server rejects. A label with an empty value is no label to
// Prometheus, so it is left out of the comparison: {shard=""} and no shard label collide.
inline void reject_duplicates(const std::vector<metrics_source>& sources) {
    std::vector<std::pair<metrics_labels, std::size_t>> keys;
    keys.reserve(sources.size());
    for (std::size_t i = 0; i < sources.size(); ++i) {
        metrics_labels key;
        for (const auto& label : sources[i].labels) {
            if (!label.second.empty()) {
                key.push_back(label);
            }
        }
        key.emplace_back("pool_name", sources[i].pool_name);
        std::sort(key.begin(), key.end());
        keys.emplace_back(std::move(key), i);
    }
    std::sort(keys.begin(), keys.end());
    for (std::size_t i = 1; i < keys.size(); ++i) {
        if (keys[i].first == keys[i - 1].first) {
            const auto first = std::min(keys[i - 1].second, keys[i].second);
            const auto second = std::max(keys[i - 1].second, keys[i].second);
            reject(sources[second], "sources " + std::to_string(first) + " and " +
                                        std::to_string(second) +
                                        " have the same pool_name and labels; give each pool a "
                                        "name or label of its own");
        }
    }
}

} // namespace detail::prometheus

inline void validate(const metrics_source& source) {
    namespace p = detail::prometheus;
    if (source.pool_name.empty()) {
        throw std::invalid_argument(
            "warmpool metrics: pool_name is empty; name the pool, e.g. after its database");
    }
    if (!p::is_utf8(source.pool_name)) {
        p::reject(source, "the pool name is not valid UTF-8");
    }
    for (std::size_t i = 0; i < source.labels.size(); ++i) {
        const std::string& name = source.labels[i].first;
        if (!p::is_label_name(name)) {
            p::reject(source, "label name \"" + name +
                                  "\" is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)");
        }
        if (p::is_reserved_label(name)) {
            p::reject(source, "label name \"" + name +
                                  "\" is reserved (pool_name, state, reason, le, quantile and "
                                  "names starting with __ are set by warmpool or Prometheus); "
                                  "choose another name");
        }
        for (std::size_t k = 0; k < i; ++k) {
            if (source.labels[k].first == name) {
                p::reject(source, "label name \"" + name + "\" is given twice");
            }
        }
        if (!p::is_utf8(source.labels[i].second)) {
            p::reject(source, "the value of label \"" + name + "\" is not valid UTF-8");
        }
    }
}

inline std::string render_prometheus(const std::vector<metrics_source>& sources) {
    namespace p = detail::prometheus;
    for (const auto& source : sources) {
        validate(source);
    }
    p::reject_duplicates(sources);

    p::writer w(sources);
    using source = metrics_source;

    // OpenTelemetry's db.client.connection.* instruments first. Its count would be
    // db_client_connection_count, a suffix Prometheus keeps for histograms and summaries:
    // it is db_client_connection_open here.
    w.family("db_client_connection_open", "gauge",
             "Open connections by state: idle (in the pool) or used (held by a lease).");
    for (std::size_t i = 0; i < sources.size(); ++i) {
        w.labelled("db_client_connection_open", i, "state", "idle", sources[i].stats.idle);
        w.labelled("db_client_connection_open", i, "state", "used", sources[i].stats.in_use);
    }
    w.family("db_client_connection_max", "gauge",
             "Most connections the pool opens at once (options::max_size).");
    w.samples("db_client_connection_max", [](const source& s) { return s.stats.max_size; });
    w.family("db_client_connection_idle_max", "gauge",
             "Most idle connections the pool keeps: max_size, since a connection given back "
             "stays until idle_timeout.");
    w.samples("db_client_connection_idle_max", [](const source& s) { return s.stats.max_size; });
    w.family("db_client_connection_idle_min", "gauge",
             "Idle connections housekeeping keeps open (options::min_idle).");
    w.samples("db_client_connection_idle_min", [](const source& s) { return s.idle_min; });
    w.family("db_client_connection_pending_requests", "gauge",
             "Callers waiting in acquire() for a connection.");
    w.samples("db_client_connection_pending_requests",
              [](const source& s) { return s.stats.waiting; });
    w.family("db_client_connection_timeouts_total", "counter",
             "acquire() calls that gave up and threw acquire_timeout.");
    w.samples("db_client_connection_timeouts_total",
              [](const source& s) { return s.stats.timeouts; });
    w.family("db_client_connection_create_time_seconds", "histogram",
             "Time to open one connection, setup included (successful connects only).");
    w.histogram("db_client_connection_create_time_seconds", &pool_stats::create_time);
    w.family("db_client_connection_wait_time_seconds", "histogram",
             "Time acquire() took to hand out a lease (queueing, validation and connecting), "
             "recorded when the lease is given back.");
    w.histogram("db_client_connection_wait_time_seconds", &pool_stats::acquire_time);
    w.family("db_client_connection_use_time_seconds", "histogram",
             "Time from checkout to give-back, per lease.");
    w.histogram("db_client_connection_use_time_seconds", &pool_stats::use_time);

    // warmpool's own, in the same style.
    w.family("db_client_connection_connecting", "gauge", "Connects in progress.");
    w.samples("db_client_connection_connecting",
              [](const source& s) { return s.stats.connecting; });
    w.family("db_client_connection_acquired_total", "counter", "Leases handed out.");
    w.samples("db_client_connection_acquired_total",
              [](const source& s) { return s.stats.acquired; });
    w.family("db_client_connection_created_total", "counter", "Connections opened.");
    w.samples("db_client_connection_created_total",
              [](const source& s) { return s.stats.created; });
    w.family("db_client_connection_closed_total", "counter", "Connections closed, by reason.");
    for (std::size_t i = 0; i < sources.size(); ++i) {
        for (const auto& closed : p::closed_counters) {
            w.labelled("db_client_connection_closed_total", i, "reason", to_string(closed.reason),
                       sources[i].stats.*closed.count);
        }
    }
    w.family("db_client_connection_connect_failures_total", "counter",
             "Failed connect attempts, each retry counted.");
    w.samples("db_client_connection_connect_failures_total",
              [](const source& s) { return s.stats.connect_failures; });
    w.family("db_client_connection_validation_failures_total", "counter",
             "Idle connections found dead at checkout by the socket check or a ping.");
    w.samples("db_client_connection_validation_failures_total",
              [](const source& s) { return s.stats.validation_failures; });
    w.family("db_client_connection_pings_total", "counter", "Validation round trips.");
    w.samples("db_client_connection_pings_total", [](const source& s) { return s.stats.pings; });
    w.family("db_client_connection_rollbacks_total", "counter",
             "Transactions left open by a lease and rolled back at give-back.");
    w.samples("db_client_connection_rollbacks_total",
              [](const source& s) { return s.stats.rollbacks; });
    w.family("db_client_connection_resets_total", "counter",
             "Sessions reset at give-back (options::reset_on_release).");
    w.samples("db_client_connection_resets_total", [](const source& s) { return s.stats.resets; });
    w.family("db_client_connection_leaks_suspected_total", "counter",
             "Leases held longer than options::leak_threshold.");
    w.samples("db_client_connection_leaks_suspected_total",
              [](const source& s) { return s.stats.leaks_suspected; });
    w.family("db_client_connection_queued_total", "counter",
             "acquire() calls that queued for a connection another caller held.");
    w.samples("db_client_connection_queued_total", [](const source& s) { return s.stats.waits; });
    w.family("db_client_connection_queued_seconds_total", "counter",
             "Time acquire() calls spent queued for a connection another caller held.");
    w.seconds_samples("db_client_connection_queued_seconds_total",
                      [](const source& s) { return s.stats.wait_time_total; });
    w.family("db_client_connection_queued_max_seconds", "gauge",
             "Longest time one acquire() call spent queued, over the pool's life.");
    w.seconds_samples("db_client_connection_queued_max_seconds",
                      [](const source& s) { return s.stats.wait_time_max; });
    w.family("db_client_connection_forks_total", "counter",
             "fork()s noticed; the child drops the connections it inherited.");
    w.samples("db_client_connection_forks_total", [](const source& s) { return s.stats.forks; });
    w.family("db_client_connection_fleet_samples_total", "counter",
             "Give-backs that asked the server how full it is (options::fleet).");
    w.samples("db_client_connection_fleet_samples_total",
              [](const source& s) { return s.stats.fleet_samples; });
    w.family("db_client_connection_fleet_sample_failures_total", "counter",
             "Fleet samples whose query failed or timed out.");
    w.samples("db_client_connection_fleet_sample_failures_total",
              [](const source& s) { return s.stats.fleet_sample_failures; });
    w.family("db_client_connection_fleet_reaped_total", "counter",
             "Zombie connections of the same application ended by fleet samples.");
    w.samples("db_client_connection_fleet_reaped_total",
              [](const source& s) { return s.stats.fleet_reaped; });
    w.family("db_client_connection_fleet_server_in_use", "gauge",
             "Server connections in use at the last fleet sample, against the binding limit.");
    w.samples("db_client_connection_fleet_server_in_use",
              [](const source& s) { return s.stats.fleet_in_use; });
    w.family("db_client_connection_fleet_server_capacity", "gauge",
             "The binding connection limit at the last fleet sample (server's or user's); 0 "
             "before the first.");
    w.samples("db_client_connection_fleet_server_capacity",
              [](const source& s) { return s.stats.fleet_capacity; });
    return w.take();
}

inline void write_prometheus(std::ostream& out, const std::vector<metrics_source>& sources) {
    const std::string text = render_prometheus(sources);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
}

} // namespace warmpool

#endif // WARMPOOL_METRICS_HPP
