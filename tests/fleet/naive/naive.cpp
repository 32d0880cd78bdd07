// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// The "naive" subject of the fleet benchmark (docs/fleet.md): a Lambda function written the way
// many are, one database connection in a static, opened at the first invocation and kept for the
// life of the process. Nothing manages it: no ping after a thaw, no limit on its idle time, no
// look at the server's capacity. A statement that fails drops the connection, and the invocation
// is tried once more on a new one.
//
// It serves the same ledger as examples/lambda (same table, event and result), simplified: no
// deadline handling, errors classified by their message. Reuses the example's Runtime API
// client, so that it differs from the example's bootstrap in connection handling alone.
//
//   DATABASE   SOCI connect string ("postgresql://…", "mysql://…")
//
// stderr: one line per invocation, `fleet: too_many_connections` for each connect the server
// refused for lack of slots, and `naive: connected` for each connection opened.

#include "runtime_api.hpp"

#include <nlohmann/json.hpp>
#include <soci/soci.h>

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>

namespace {

using ledger_example::runtime_api;

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

bool mentions(const std::string& text, const char* what) {
    return lower(text).find(what) != std::string::npos;
}

/// The server had no slot left (PostgreSQL: "too many clients already", "remaining connection
/// slots are reserved"; MariaDB: "Too many connections").
bool too_many_connections(const std::string& message) {
    return mentions(message, "too many clients") || mentions(message, "too many connections") ||
           mentions(message, "remaining connection slots");
}

std::string one_line(std::string text) {
    std::replace(text.begin(), text.end(), '\n', ' ');
    return text;
}

struct handler {
    std::string database;
    bool postgresql = false;
    std::unique_ptr<soci::session> db; // the one connection, kept for the process's life
    bool table_ready = false;

    soci::session& connection() {
        if (!db) {
            try {
                db = std::make_unique<soci::session>(database);
            } catch (const std::exception& e) {
                if (too_many_connections(e.what())) {
                    std::fprintf(stderr, "fleet: too_many_connections\n");
                }
                throw;
            }
            std::fprintf(stderr, "naive: connected\n");
        }
        if (!table_ready) {
            // The example's table (examples/lambda/ledger.cpp), created by whoever comes first.
            if (postgresql) {
                *db << "create table if not exists ledger (request_id varchar(64) primary key, "
                       "account varchar(64) not null, amount bigint not null)";
            } else {
                *db << "create table if not exists ledger (request_id varchar(64) character set "
                       "utf8mb4 collate utf8mb4_nopad_bin primary key, account varchar(64) "
                       "character set utf8mb4 collate utf8mb4_nopad_bin not null, amount bigint "
                       "not null, key ledger_account (account)) engine=InnoDB";
            }
            table_ready = true;
        }
        return *db;
    }

    long long balance(soci::session& s, const std::string& account) const {
        long long sum = 0;
        s << (postgresql ? "select cast(coalesce(sum(amount), 0) as bigint) from ledger where "
                           "account = :a"
                         : "select cast(coalesce(sum(amount), 0) as signed) from ledger where "
                           "account = :a"),
            soci::use(account), soci::into(sum);
        return sum;
    }

    /// Insert, work, read the balance, commit. Returns the balance.
    long long post(const std::string& id, const std::string& account, long long amount,
                   long long work_ms) {
        soci::session& s = connection();
        soci::transaction tx(s);
        s << "insert into ledger (request_id, account, amount) values (:id, :a, :m)", soci::use(id),
            soci::use(account), soci::use(amount);
        if (work_ms > 0) {
            char seconds[32];
            std::snprintf(seconds, sizeof seconds, "%.3f", static_cast<double>(work_ms) / 1000.0);
            s << std::string(postgresql ? "select pg_sleep(" : "select sleep(") + seconds + ")";
        }
        const long long sum = balance(s, account);
        tx.commit();
        return sum;
    }

    /// {"account": …, "balance": …}, or throws with the last database error.
    std::string handle(const std::string& id, const std::string& body) {
        const auto event = nlohmann::json::parse(body);
        const std::string account = event.at("account").get<std::string>();
        const long long amount = event.at("amount").get<long long>();
        const long long work_ms = event.value("work_ms", 0LL);
        for (int attempt = 1;; ++attempt) {
            try {
                const long long sum = post(id, account, amount, work_ms);
                return nlohmann::json{{"account", account}, {"balance", sum}}.dump();
            } catch (const soci::soci_error& e) {
                const std::string what = one_line(e.what());
                if (mentions(what, "duplicate") && db) {
                    // The primary key says this request committed before (on the first attempt,
                    // whose answer was lost): its effect stands, answer with the balance.
                    soci::session& s = *db;
                    return nlohmann::json{{"account", account}, {"balance", balance(s, account)}}
                        .dump();
                }
                std::fprintf(stderr, "naive: attempt %d failed: %s\n", attempt, what.c_str());
                db.reset(); // the naive recovery: drop it, reconnect on the next try
                if (attempt == 2) {
                    throw;
                }
            }
        }
    }
};

} // namespace

int main() {
    const char* endpoint = std::getenv("AWS_LAMBDA_RUNTIME_API");
    const char* database = std::getenv("DATABASE");
    if (endpoint == nullptr || database == nullptr) {
        std::fprintf(stderr, "naive: AWS_LAMBDA_RUNTIME_API and DATABASE must be set\n");
        return 1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        std::fprintf(stderr, "naive: curl_global_init failed\n");
        return 1;
    }
    static handler h; // the static every invocation shares, as a handler module's global is
    h.database = database;
    h.postgresql = std::string(database).rfind("postgresql://", 0) == 0;
    runtime_api api(endpoint);
    for (;;) {
        const auto inv = api.next();
        const auto started = std::chrono::steady_clock::now();
        std::string result;
        ledger_example::error_report error;
        try {
            result = h.handle(inv.request_id, inv.body);
        } catch (const soci::soci_error& e) {
            error = {"DatabaseError", one_line(e.what())};
        } catch (const std::exception& e) {
            error = {"InternalError", e.what()};
        }
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
                .count();
        if (error.type.empty()) {
            api.respond(inv.request_id, result);
            std::fprintf(stderr, "invocation %s ok %s in %.1f ms\n", inv.request_id.c_str(),
                         result.c_str(), ms);
        } else {
            api.fail(inv.request_id, error);
            std::fprintf(stderr, "invocation %s %s in %.1f ms: %s\n", inv.request_id.c_str(),
                         error.type.c_str(), ms, error.message.c_str());
        }
    }
}
