// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Which real servers the integration tests may use, and what happens when one is missing.
//
// scripts/servers.sh starts PostgreSQL, MariaDB and PgBouncer and exports their connect strings
// (WARMPOOL_TEST_PG, WARMPOOL_TEST_MYSQL, WARMPOOL_TEST_PGBOUNCER) and control commands
// (WARMPOOL_TEST_*_CTL). A test that needs one declares it twice:
//
//   TEST_CASE("…" * servers::skip_without(servers::pg)) {
//       const std::string cs = servers::need(servers::pg);
//
// Outside CI a missing server skips the test, and the reason is printed once per variable.
// Under CI=true nothing is skipped: the test runs and need() fails it, because a suite that
// silently skips in CI proves nothing.

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>

namespace servers {

// The environment variables, by what they name.
inline constexpr const char* pg = "WARMPOOL_TEST_PG";
inline constexpr const char* mysql = "WARMPOOL_TEST_MYSQL";
inline constexpr const char* pgbouncer = "WARMPOOL_TEST_PGBOUNCER";
inline constexpr const char* pg_ctl = "WARMPOOL_TEST_PG_CTL";
inline constexpr const char* mysql_ctl = "WARMPOOL_TEST_MYSQL_CTL";
inline constexpr const char* pgbouncer_ctl = "WARMPOOL_TEST_PGBOUNCER_CTL";
// Set when the tests may SIGSTOP server processes (root, or the servers' own user).
inline constexpr const char* sigstop = "WARMPOOL_TEST_SIGSTOP";

inline bool under_ci() {
    const char* ci = std::getenv("CI");
    return ci != nullptr && (std::strcmp(ci, "true") == 0 || std::strcmp(ci, "1") == 0);
}

/// The variable's value, or nullptr when it is unset or empty. WARMPOOL_TEST_PG falls back to
/// WARMPOOL_TEST_POSTGRESQL, the name older scripts used.
inline const char* env(const char* var) {
    const char* v = std::getenv(var);
    if ((v == nullptr || *v == '\0') && std::strcmp(var, pg) == 0) {
        v = std::getenv("WARMPOOL_TEST_POSTGRESQL");
    }
    return v != nullptr && *v != '\0' ? v : nullptr;
}

inline std::string missing_reason(const char* var) {
    std::string why = std::string(var) + " is not set; `eval \"$(bash scripts/servers.sh "
                                         "start)\"` starts the test servers and sets it";
    if (std::strcmp(var, sigstop) == 0) {
        why += " when it runs as root (the tests then may signal the servers' processes)";
    }
    return why;
}

/// For doctest::skip(): true (skip) when `var` is missing and we are not under CI. Prints the
/// reason once per variable, so a skipped suite never goes unnoticed.
inline bool unavailable(const char* var) {
    if (env(var) != nullptr || under_ci()) {
        return false;
    }
    static std::mutex m;
    static std::set<std::string> told;
    std::lock_guard<std::mutex> lock(m);
    if (told.insert(var).second) {
        std::fprintf(stderr, "warmpool: skipping the tests that need %s: %s\n", var,
                     missing_reason(var).c_str());
    }
    return true;
}

/// A decorator: skip this test unless every named variable is set (never skips under CI).
inline doctest::skip skip_without(const char* var, const char* var2 = nullptr,
                                  const char* var3 = nullptr) {
    bool skip = unavailable(var);
    skip = (var2 != nullptr && unavailable(var2)) || skip;
    skip = (var3 != nullptr && unavailable(var3)) || skip;
    return doctest::skip(skip);
}

/// The variable's value; fails the test when it is missing (which, outside CI, only happens
/// when the test was not declared with skip_without).
inline std::string need(const char* var) {
    const char* v = env(var);
    if (v == nullptr) {
        const std::string why =
            (under_ci() ? std::string("CI=true, and ") : std::string()) + missing_reason(var);
        FAIL(why);
    }
    return v;
}

} // namespace servers
