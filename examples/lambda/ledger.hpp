// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The function's handler: a ledger of amounts per account, kept exactly once per request.
//
//   event   {"account": "<id>", "amount": <integer>}, optionally "work_ms": <integer>
//   result  {"account": "<id>", "balance": <sum of the account's amounts>}
//
// In one transaction it inserts (request_id, account, amount) into the table ledger, waits
// work_ms on the server if asked (a stand-in for real work that holds the transaction open),
// reads the account's balance, and commits. The request id is the primary key, so a redelivered
// event cannot be counted twice: see ledger.cpp for how each failure is answered.

#include <warmpool/soci.hpp>

#include <chrono>
#include <functional>
#include <string>

namespace ledger_example {

using wall_clock = std::chrono::system_clock;

/// Asked once, just before COMMIT is sent: true to go ahead. False when the invocation was
/// already answered with DeadlineExceeded (deadline_reporter::ticket::begin_commit()).
using commit_gate = std::function<bool()>;

/// What one invocation produced: a result for /response, or an error for /error.
struct outcome {
    bool ok = false;
    std::string result;        ///< JSON, when ok
    std::string error_type;    ///< errorType, when not ok (see docs/lambda.md for the list)
    std::string error_message; ///< errorMessage, when not ok
    std::string account;       ///< for the log line; empty when the event had none
    int transactions = 0;      ///< transactions started: 2 after a retry
    std::string note;          ///< how the answer was reached, when not the plain way
};

class ledger {
public:
    /// The pool outlives the ledger. Which SQL to speak is read from pool.target().
    explicit ledger(warmpool::soci_pool& pool);

    /// At init: creates the table and its index if they are missing, and tells MariaDB from
    /// MySQL, all by `deadline` (the init phase's). Throws warmpool's errors and
    /// soci::soci_error.
    void prepare(wall_clock::time_point deadline);

    /// One invocation, finished by `deadline` (Lambda's deadline less the margin): the pool
    /// waits, pings and connects no longer, and the server cuts statements off there. Never
    /// throws: every failure becomes an outcome with an errorType. `may_commit`, when set, is
    /// asked before COMMIT (see commit_gate).
    outcome handle(const std::string& request_id, const std::string& event,
                   wall_clock::time_point deadline,
                   const commit_gate& may_commit = {}) const noexcept;

    enum class dialect { postgresql, mariadb, mysql, sqlite3 };

private:
    struct entry;
    struct tx_result;
    struct lookup;

    static entry parse(const std::string& event);
    tx_result post_entry(const std::string& request_id, const entry& e,
                         wall_clock::time_point deadline, const commit_gate& may_commit) const;
    lookup look_up(const std::string& request_id, const std::string& account,
                   wall_clock::time_point deadline) const;

    void begin(soci::session& s, wall_clock::time_point deadline) const;
    std::string bounded(const std::string& sql, wall_clock::time_point deadline) const;
    void work(soci::session& s, long long work_ms, wall_clock::time_point deadline) const;
    const char* balance_query() const;

    warmpool::soci_pool& pool_;
    dialect dialect_;
};

} // namespace ledger_example
