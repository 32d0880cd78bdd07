// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

#include "config.hpp"

#include <cerrno>
#include <cstdlib>
#include <string>

namespace ledger_example {
namespace {

const char* get(const char* name) {
    const char* value = std::getenv(name);
    return value != nullptr && *value != '\0' ? value : nullptr;
}

/// A whole decimal number in [low, high], or config_error naming the variable.
long long whole_number(const char* name, const char* text, long long low, long long high) {
    errno = 0;
    char* end = nullptr;
    const long long value = std::strtoll(text, &end, 10);
    if (end == text || *end != '\0' || errno == ERANGE || value < low || value > high) {
        throw config_error(std::string(name) + " is \"" + text +
                           "\"; it must be a whole number from " + std::to_string(low) + " to " +
                           std::to_string(high));
    }
    return value;
}

} // namespace

config config::from_environment() {
    config c;
    if (const char* db = get("DATABASE")) {
        c.database = db;
    } else {
        throw config_error("DATABASE is not set; set it to a SOCI connect string, e.g. "
                           "\"postgresql://host=db.example dbname=app user=app password=…\" or "
                           "\"mysql://host=db.example db=app user=app password=…\"");
    }
    if (const char* n = get("AWS_LAMBDA_MAX_CONCURRENCY")) {
        // One connection per concurrent invocation: far below any server's limit, and
        // options::max_max_size.
        c.concurrency =
            static_cast<unsigned>(whole_number("AWS_LAMBDA_MAX_CONCURRENCY", n, 1, 1024));
    }
    if (const char* type = get("AWS_LAMBDA_INITIALIZATION_TYPE")) {
        c.snap_start = std::string(type) == "snap-start";
    }
    if (const char* margin = get("WARMPOOL_DEADLINE_MARGIN_MS")) {
        c.deadline_margin = std::chrono::milliseconds(whole_number(
            "WARMPOOL_DEADLINE_MARGIN_MS", margin, min_deadline_margin.count(), 60'000));
    }
    if (const char* init = get("WARMPOOL_INIT_DEADLINE_MS")) {
        // Up to 15 minutes: a SnapStart or provisioned-concurrency init may run that long.
        c.init_deadline = std::chrono::milliseconds(
            whole_number("WARMPOOL_INIT_DEADLINE_MS", init, 100, 15LL * 60 * 1000));
    }
    return c;
}

} // namespace ledger_example
