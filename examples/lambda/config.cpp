// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

#include "config.hpp"

#include <warmpool/errors.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
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

/// A fraction in (0, 1], or config_error naming the variable.
double fraction(const char* name, const char* text) {
    errno = 0;
    char* end = nullptr;
    const double value = std::strtod(text, &end);
    // Written so that NaN fails too.
    if (end == text || *end != '\0' || errno == ERANGE || !(value > 0.0 && value <= 1.0)) {
        throw config_error(std::string(name) + " is \"" + text +
                           "\"; it must be a number greater than 0 and at most 1, e.g. 0.8");
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
    if (const char* file = get("DATABASE_PASSWORD_FILE")) {
        // Two passwords would leave it to each driver which one wins: refuse the mix.
        if (c.database.find("password=") != std::string::npos) {
            throw config_error("DATABASE_PASSWORD_FILE is set and DATABASE holds a password= "
                               "too; remove the password from DATABASE (the file's content is "
                               "the password)");
        }
        c.password_file = file;
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
    if (const char* policy = get("FLEET_POLICY")) {
        const std::string p = policy;
        if (p != "on" && p != "off") {
            throw config_error("FLEET_POLICY is \"" + p + "\"; it must be \"on\" or \"off\"");
        }
        c.fleet = p == "on";
    }
    if (const char* f = get("FLEET_SAMPLE_FRACTION")) {
        c.fleet_sample_fraction = fraction("FLEET_SAMPLE_FRACTION", f);
    }
    if (const char* f = get("FLEET_CLOSE_ABOVE")) {
        c.fleet_close_above = fraction("FLEET_CLOSE_ABOVE", f);
    }
    if (const char* idle = get("FLEET_REAP_IDLE_MS")) {
        const long long ms = whole_number("FLEET_REAP_IDLE_MS", idle, 0, 24LL * 3600 * 1000);
        if (ms != 0 && ms < 1000) {
            throw config_error("FLEET_REAP_IDLE_MS is \"" + std::string(idle) +
                               "\"; it must be 0 (no reaping) or at least 1000: servers count "
                               "idle time in whole seconds");
        }
        c.fleet_reap_idle = std::chrono::milliseconds(ms);
    }
    if (const char* k = get("FLEET_REAP_MAX")) {
        c.fleet_reap_max = static_cast<unsigned>(whole_number("FLEET_REAP_MAX", k, 1, 1000));
    }
    return c;
}

std::string read_password_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::string pw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
        const int err = errno;
        throw warmpool::connect_error("cannot read the password file " + path +
                                          " (DATABASE_PASSWORD_FILE): " + std::strerror(err) +
                                          "; check that it exists and is readable",
                                      true);
    }
    if (!pw.empty() && pw.back() == '\n') {
        pw.pop_back();
    }
    if (!pw.empty() && pw.back() == '\r') {
        pw.pop_back();
    }
    // Empty: most likely caught mid-rewrite (truncated, not yet written). A line break or NUL
    // inside: not one password, and no connect string can carry it.
    if (pw.empty() || pw.find_first_of(std::string("\r\n\0", 3)) != std::string::npos) {
        throw warmpool::connect_error(
            "the password file " + path + " (DATABASE_PASSWORD_FILE) holds " +
                (pw.empty() ? std::string("no password (empty)")
                            : std::string("a line break or NUL inside the password")) +
                "; write the password alone, optionally followed by one newline",
            true);
    }
    // Through SOCI 4.0.3 a quoted password with a blank failed PostgreSQL's authentication in
    // tests/lambda (libpq alone accepts it), and quotes and backslashes need escaping that each
    // SOCI parser undoes its own way: refused, naming the path only.
    if (pw.find_first_of(" \t'\"\\") != std::string::npos) {
        throw warmpool::connect_error(
            "the password in " + path +
                " (DATABASE_PASSWORD_FILE) holds a blank, quote or backslash, which cannot be "
                "passed through a SOCI connect string safely; choose a password without them",
            false);
    }
    return pw;
}

std::string with_password(const std::string& params, const std::string& password) {
    // read_password_file let no blank, quote or backslash through: nothing to escape.
    return params + " password='" + password + "'";
}

} // namespace ledger_example
