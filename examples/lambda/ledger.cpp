// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

#include "ledger.hpp"

#include "cutoff.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

// The backends' own error types carry the server's error code. The warmpool::soci target links
// each backend it found (WARMPOOL_SOCI_<BACKEND>_NATIVE=1), so their type information is there.
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE == 1
#include <soci/postgresql/soci-postgresql.h>
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE == 1
#include <soci/mysql/soci-mysql.h>
#endif
#if WARMPOOL_SOCI_SQLITE3_NATIVE == 1
#include <soci/sqlite3/soci-sqlite3.h>
#endif

// Exactly once, and never a silently partial transaction
// -------------------------------------------------------
// The insert, the optional work and the balance read run in one transaction, so the server
// applies all of it or none of it. What is left to decide is what to do when something fails,
// and that depends on whether COMMIT had been sent:
//
// * Before COMMIT was sent, nothing is committed: a server rolls back a transaction whose
//   connection ends without COMMIT. If the connection was lost (a server restart, a failover, a
//   proxy closing it), the whole transaction runs again on a fresh connection, once, if the
//   deadline leaves time. A statement the server refused (a timeout, bad data) is not retried:
//   it would fail again.
// * While or after COMMIT is sent, a lost connection leaves the outcome unknown: the server may
//   have committed and the answer been lost on the way. Only the server knows, so the handler
//   asks it on a fresh connection whether this request's row exists. If it does, the entry is
//   committed and the answer is the balance. If not, nothing was committed and the whole
//   transaction runs again (within the same single retry).
// * A duplicate request id on insert means this request committed before: Lambda delivered the
//   same event again (it retries asynchronous invocations, and a caller may retry after a
//   timeout). The first delivery's effect stands; the answer is the balance, as it would have
//   been. "Duplicate" is the server's error code (never words in the message, which holds the
//   SQL and the values), and the row is read back before the balance is answered: answering
//   for a row that is not there would report a write that never happened.
//
// The request id is the primary key, so no path above can count an amount twice, and every
// failure is reported: an error sent to Lambda can be retried with the same request id safely.
//
// Deadlines
// ---------
// `deadline` (Lambda's deadline less the margin) bounds every step: acquire_until() stops
// waiting, pinging and connecting there, and the server cuts statements off there
// (PostgreSQL: SET LOCAL statement_timeout, MariaDB: SET STATEMENT max_statement_time ... FOR).
// Nothing is committed after the deadline: the handler checks before COMMIT and reports
// DeadlineExceeded instead, with the transaction rolled back. It also asks the invocation's
// deadline ticket (commit_gate), so that the deadline reporter and the handler never both
// answer: once the reporter has said DeadlineExceeded, COMMIT is not sent.
//
// Rolling back is left to the pool: a lease given back with its transaction open (after a
// failed statement, or an early return) is rolled back with one round trip bounded by
// options::validation_timeout, and a connection whose rollback fails is closed. SOCI's own
// soci::transaction would roll back with no bound on a hung server.

namespace ledger_example {
namespace {

using ms = std::chrono::milliseconds;

/// A failure with its errorType, thrown inside the handler and turned into an outcome at its
/// edge (ledger::handle).
class failure : public std::runtime_error {
public:
    failure(std::string type, const std::string& message)
        : std::runtime_error(message), type_(std::move(type)) {}
    const std::string& type() const noexcept { return type_; }

private:
    std::string type_;
};

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

bool contains(const std::string& haystack, const char* needle) {
    return haystack.find(needle) != std::string::npos;
}

/// The offset of the first control character (U+0000 to U+001F, U+007F), or npos. SOCI binds
/// strings as C strings, so a NUL would cut the value short and credit another account; the
/// others have no business in an identifier and make log lines ambiguous.
std::size_t first_control(const std::string& s) {
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7f) {
            return i;
        }
    }
    return std::string::npos;
}

/// The database's message on one line (libpq's span several).
std::string one_line(const std::string& text) {
    std::string out;
    for (const char c : text) {
        if (!std::isspace(static_cast<unsigned char>(c))) {
            out += c;
        } else if (!out.empty() && out.back() != ' ') {
            out += ' ';
        }
    }
    while (!out.empty() && (out.back() == ' ' || out.back() == '.')) {
        out.pop_back(); // the caller goes on with "; …"
    }
    return out;
}

ms time_left(wall_clock::time_point deadline) {
    return std::chrono::duration_cast<ms>(deadline - wall_clock::now());
}

/// The time left, at least 1 ms; DeadlineExceeded when none is.
ms remaining(wall_clock::time_point deadline, const char* before) {
    const ms left = time_left(deadline);
    if (left.count() < 1) {
        throw failure("DeadlineExceeded", std::string("the deadline passed before ") + before +
                                              " (" + std::to_string(-left.count()) +
                                              " ms ago); nothing was committed");
    }
    return left;
}

/// The server's own limit on a statement: the time left, less a moment for its "canceled"
/// answer to arrive before the deadline, where the cutoff (cutoff.hpp) would otherwise end the
/// connection too. Either way the invocation fails with DeadlineExceeded; this way the
/// connection survives for the next one.
ms server_limit(wall_clock::time_point deadline, const char* before) {
    constexpr ms answer_time{25};
    return std::max(remaining(deadline, before) - answer_time, ms(1));
}

std::string seconds(ms d) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3f", static_cast<double>(d.count()) / 1000.0);
    return text;
}

// --- What the database said -----------------------------------------------------------------

// Errors are classified by the code the server sent, never by their text: SOCI's message holds
// the SQL and the bound values (the request id, the account), so a word searched for in it can
// come from the data. A backend whose code this program cannot read (one not linked, =1) gets
// no classification: a duplicate is then reported as a DatabaseError, which is safe to retry,
// instead of being guessed.

/// The server's error code: PostgreSQL's SQLSTATE, MariaDB's and MySQL's error number, SQLite's
/// primary result code. Empty when the error did not come from one of them.
struct server_code {
    std::string sqlstate;     // PostgreSQL
    unsigned mysql_errno = 0; // MariaDB, MySQL
    int sqlite_result = 0;    // SQLite
};

server_code code_of(const soci::soci_error& e) {
    server_code code;
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE == 1
    if (const auto* pg = dynamic_cast<const soci::postgresql_soci_error*>(&e)) {
        code.sqlstate = pg->sqlstate();
    }
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE == 1
    if (const auto* my = dynamic_cast<const soci::mysql_soci_error*>(&e)) {
        code.mysql_errno = my->err_num_;
    }
#endif
#if WARMPOOL_SOCI_SQLITE3_NATIVE == 1
    if (const auto* lite = dynamic_cast<const soci::sqlite3_soci_error*>(&e)) {
        code.sqlite_result = lite->result() & 0xff; // the primary code of an extended one
    }
#endif
    (void)e;
    return code;
}

/// The insert hit the primary key: this request id may have committed before (post_entry then
/// checks that the row is there).
bool is_duplicate_key(const soci::soci_error& e) {
    const server_code code = code_of(e);
    return code.sqlstate == "23505" || // PostgreSQL unique_violation
           code.mysql_errno == 1062 || // ER_DUP_ENTRY
           code.sqlite_result == 19 /* SQLITE_CONSTRAINT: the only constraint that can fail */;
}

/// The server cut a statement off at the deadline.
bool is_statement_timeout(const soci::soci_error& e) {
    const server_code code = code_of(e);
    return code.sqlstate == "57014" || // PostgreSQL query_canceled (statement_timeout)
           code.mysql_errno == 1969 || // MariaDB ER_STATEMENT_TIMEOUT (max_statement_time)
           code.mysql_errno == 3024;   // MySQL ER_QUERY_TIMEOUT (max_execution_time)
}

/// The connection is gone, not just the statement: the backend says so, or classified it so.
bool connection_lost(soci::session& s, const soci::soci_error& e) {
    return e.get_error_category() == soci::soci_error::connection_error ||
           warmpool::soci_traits::is_broken(s);
}

// --- The event --------------------------------------------------------------------------------

constexpr std::size_t max_account_length = 64;      // the column is varchar(64)
constexpr std::size_t max_request_id_length = 64;   // the column is varchar(64)
constexpr long long max_work_ms = 15LL * 60 * 1000; // Lambda's longest timeout

} // namespace

struct ledger::entry {
    std::string account;
    long long amount = 0;
    std::optional<long long> work_ms;
};

namespace {

long long whole_number(const nlohmann::json& v, const char* field) {
    if (v.is_number_unsigned()) {
        const auto u = v.get<std::uint64_t>();
        if (u > static_cast<std::uint64_t>(std::numeric_limits<long long>::max())) {
            throw failure("InvalidEvent",
                          std::string("\"") + field + "\" is larger than a 64-bit signed integer");
        }
        return static_cast<long long>(u);
    }
    if (v.is_number_integer()) {
        return v.get<long long>();
    }
    throw failure("InvalidEvent", std::string("\"") + field + "\" must be a whole number, not " +
                                      v.type_name() + (v.is_number() ? " " + v.dump() : ""));
}

} // namespace

ledger::entry ledger::parse(const std::string& body) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(body);
    } catch (const nlohmann::json::exception& e) {
        throw failure("InvalidEvent", std::string("the event is not JSON: ") + e.what());
    }
    if (!j.is_object()) {
        throw failure("InvalidEvent", std::string("the event must be a JSON object like "
                                                  "{\"account\":\"a1\",\"amount\":5}, not ") +
                                          j.type_name());
    }
    entry e;
    const auto account = j.find("account");
    if (account == j.end() || !account->is_string() || account->get<std::string>().empty()) {
        throw failure("InvalidEvent", "the event needs \"account\": a non-empty string");
    }
    e.account = account->get<std::string>();
    if (e.account.size() > max_account_length) {
        throw failure("InvalidEvent", "\"account\" is " + std::to_string(e.account.size()) +
                                          " bytes long; at most " +
                                          std::to_string(max_account_length) + " fit");
    }
    if (const std::size_t at = first_control(e.account); at != std::string::npos) {
        throw failure("InvalidEvent",
                      "\"account\" holds a control character (code " +
                          std::to_string(static_cast<unsigned char>(e.account[at])) + ") at byte " +
                          std::to_string(at) + "; use printable characters only");
    }
    const auto amount = j.find("amount");
    if (amount == j.end()) {
        throw failure("InvalidEvent", "the event needs \"amount\": a whole number");
    }
    e.amount = whole_number(*amount, "amount");
    const auto work = j.find("work_ms");
    if (work != j.end() && !work->is_null()) {
        const long long w = whole_number(*work, "work_ms");
        if (w < 0 || w > max_work_ms) {
            throw failure("InvalidEvent", "\"work_ms\" is " + std::to_string(w) +
                                              "; it must be from 0 to " +
                                              std::to_string(max_work_ms));
        }
        e.work_ms = w;
    }
    return e;
}

// --- One transaction --------------------------------------------------------------------------

struct ledger::tx_result {
    enum class state {
        committed,          // done: balance is the answer
        already_committed,  // the insert hit the primary key: a redelivery
        lost_before_commit, // the connection broke before COMMIT was sent: nothing committed
        commit_unknown,     // COMMIT failed: committed or not, only the server knows
    };
    state result;
    long long balance = 0;
    std::string why; // the database's message, for lost_before_commit and commit_unknown
};

struct ledger::lookup {
    bool exists = false; // a row with this request id is committed
    long long balance = 0;
};

namespace {

ledger::dialect dialect_of(const std::string& target) {
    if (target.rfind("postgresql://", 0) == 0) {
        return ledger::dialect::postgresql;
    }
    if (target.rfind("sqlite3://", 0) == 0) {
        return ledger::dialect::sqlite3;
    }
    // mysql://: MariaDB until prepare() has asked the server.
    return ledger::dialect::mariadb;
}

} // namespace

ledger::ledger(warmpool::soci_pool& pool) : pool_(pool), dialect_(dialect_of(pool.target())) {}

void ledger::prepare(wall_clock::time_point deadline) {
    // Several instances often start together. PostgreSQL's CREATE ... IF NOT EXISTS can then
    // fail in all but one of them (two sessions race to add the same catalog row), so a failure
    // is tried once more: by then the table exists and the statement does nothing.
    for (int attempt = 1;; ++attempt) {
        try {
            // Bounded like an invocation: the pool's waits and connects by the deadline, a
            // server that stops answering by the cutoff. main()'s init watchdog covers the one
            // wait left, a connect the client library will not cut short.
            auto sql = pool_.acquire_until(deadline);
            soci::session& s = *sql;
            const cutoff guard(s, deadline); // declared after the lease: disarmed before it
            switch (dialect_) {
            case dialect::postgresql:
            case dialect::sqlite3: {
                // One transaction (PostgreSQL and SQLite both run DDL in one), which also keeps
                // PostgreSQL's "already exists, skipping" notices out of the log.
                s.begin();
                if (dialect_ == dialect::postgresql) {
                    s << "set local client_min_messages = warning";
                }
                // PostgreSQL and SQLite compare text byte by byte: "a1", "A1" and "a1 " are
                // three accounts.
                s << "create table if not exists ledger (request_id varchar(64) primary key, "
                     "account varchar(64) not null, amount bigint not null)";
                // Every invocation sums one account's rows.
                s << "create index if not exists ledger_account on ledger (account)";
                s.commit();
                break;
            }
            case dialect::mariadb:
            case dialect::mysql: {
                std::string version;
                s << "select version()", soci::into(version);
                dialect_ = contains(lower(version), "mariadb") ? dialect::mariadb : dialect::mysql;
                // utf8mb4 with a binary collation that does not pad: the server's default
                // (often latin1_swedish_ci) would make "a1", "A1" and "a1 " one account and one
                // request id, and refuse characters outside latin1; utf8mb4_bin still ignores
                // trailing spaces. MariaDB has utf8mb4_nopad_bin (10.2 on), MySQL
                // utf8mb4_0900_bin (8.0.17 on); an older MySQL gets utf8mb4_bin. A table that
                // already exists keeps its own definition.
                std::string collation = "utf8mb4_nopad_bin";
                if (dialect_ == dialect::mysql) {
                    long long has_0900 = 0;
                    s << "select count(*) from information_schema.collations "
                         "where collation_name = 'utf8mb4_0900_bin'",
                        soci::into(has_0900);
                    collation = has_0900 > 0 ? "utf8mb4_0900_bin" : "utf8mb4_bin";
                }
                const std::string text = "varchar(64) character set utf8mb4 collate " + collation;
                // InnoDB named, in case the server's default engine has no transactions. MySQL
                // has no CREATE INDEX IF NOT EXISTS, so the index is declared with the table.
                s << "create table if not exists ledger (request_id " + text +
                         " primary key, account " + text +
                         " not null, amount bigint not null, key ledger_account (account)) "
                         "engine=InnoDB default character set utf8mb4 collate " +
                         collation;
                break;
            }
            }
            return;
        } catch (const soci::soci_error&) {
            if (attempt == 2 || wall_clock::now() >= deadline) {
                throw;
            }
        }
    }
}

void ledger::begin(soci::session& s, wall_clock::time_point deadline) const {
    const ms limit = server_limit(deadline, "the transaction began");
    s.begin();
    if (dialect_ == dialect::postgresql) {
        // Each statement of this transaction is cut off when the time left now runs out. LOCAL:
        // the setting ends with the transaction, so the next lease finds the server's default.
        s << "set local statement_timeout = " + std::to_string(limit.count());
    }
}

std::string ledger::bounded(const std::string& sql, wall_clock::time_point deadline) const {
    if (dialect_ != dialect::mariadb) {
        return sql; // PostgreSQL: bounded by begin(); MySQL and SQLite: checked between steps
    }
    // MariaDB bounds one statement at a time, and SET STATEMENT leaves no session state behind.
    return "set statement max_statement_time=" + seconds(server_limit(deadline, "a statement")) +
           " for " + sql;
}

const char* ledger::balance_query() const {
    // The sum of a bigint column is a wider type (numeric, decimal): cast back to 64 bits.
    switch (dialect_) {
    case dialect::postgresql:
        return "select cast(coalesce(sum(amount), 0) as bigint) from ledger where account = :a";
    case dialect::mariadb:
    case dialect::mysql:
        return "select cast(coalesce(sum(amount), 0) as signed) from ledger where account = :a";
    case dialect::sqlite3:
        break;
    }
    return "select coalesce(sum(amount), 0) from ledger where account = :a";
}

void ledger::work(soci::session& s, long long work_ms, wall_clock::time_point deadline) const {
    const ms work(work_ms);
    switch (dialect_) {
    case dialect::postgresql:
        // The limit set at begin() was the time left then; this one is the time left now.
        s << "set local statement_timeout = " +
                 std::to_string(server_limit(deadline, "the work step").count());
        s << "select pg_sleep(" + seconds(work) + ")";
        return;
    case dialect::mariadb:
    case dialect::mysql:
        s << bounded("select sleep(" + seconds(work) + ")", deadline);
        return;
    case dialect::sqlite3: {
        // An embedded database has no server to wait on: the process waits, up to the deadline.
        const ms left = remaining(deadline, "the work step");
        std::this_thread::sleep_for(std::min(work, left));
        if (work > left) {
            throw failure("DeadlineExceeded",
                          "work_ms=" + std::to_string(work_ms) + " does not fit in the " +
                              std::to_string(left.count()) + " ms left; nothing was committed");
        }
        return;
    }
    }
}

ledger::tx_result ledger::post_entry(const std::string& request_id, const entry& e,
                                     wall_clock::time_point deadline,
                                     const commit_gate& may_commit) const {
    auto lease = pool_.acquire_until(deadline);
    soci::session& s = *lease;
    cutoff guard(s, deadline); // declared after the lease: disarmed before it is given back
    long long balance = 0;
    try {
        begin(s, deadline);
        try {
            s << bounded("insert into ledger (request_id, account, amount) "
                         "values (:id, :account, :amount)",
                         deadline),
                soci::use(request_id), soci::use(e.account), soci::use(e.amount);
        } catch (const soci::soci_error& err) {
            if (connection_lost(s, err) || !is_duplicate_key(err)) {
                throw;
            }
            // The lease goes back with the failed transaction, which the pool rolls back.
            return {tx_result::state::already_committed, 0, ""};
        }
        if (e.work_ms) {
            work(s, *e.work_ms, deadline);
        }
        s << bounded(balance_query(), deadline), soci::use(e.account), soci::into(balance);
        // Past the deadline the invocation is reported failed, so it must not commit.
        remaining(deadline, "COMMIT");
        // One decision with the deadline reporter (deadline_reporter.hpp): once it has answered
        // DeadlineExceeded ("nothing was committed") COMMIT is not sent; once this has passed,
        // the reporter's answer, if it must still give one, says COMMIT's outcome is unknown.
        if (may_commit && !may_commit()) {
            throw failure("DeadlineExceeded", "DeadlineExceeded was already reported for this "
                                              "invocation before COMMIT; nothing was committed");
        }
    } catch (const soci::soci_error& err) {
        guard.disarm();
        if (guard.fired()) {
            lease.invalidate();
            throw failure("DeadlineExceeded",
                          "the database did not answer before the deadline, so the connection "
                          "was cut off there; nothing was committed");
        }
        if (connection_lost(s, err)) {
            lease.invalidate();
            return {tx_result::state::lost_before_commit, 0, one_line(err.what())};
        }
        throw; // the server refused a statement: reported by handle(), nothing committed
    }
    try {
        s.commit();
    } catch (const soci::soci_error& err) {
        // Whatever broke, this connection's state is unknown: the pool closes it.
        guard.disarm();
        lease.invalidate();
        return {tx_result::state::commit_unknown, 0,
                guard.fired() ? "the database did not answer COMMIT before the deadline"
                              : one_line(err.what())};
    }
    return {tx_result::state::committed, balance, ""};
}

ledger::lookup ledger::look_up(const std::string& request_id, const std::string& account,
                               wall_clock::time_point deadline) const {
    auto lease = pool_.acquire_until(deadline);
    soci::session& s = *lease;
    const cutoff guard(s, deadline); // declared after the lease: disarmed before it goes back
    lookup found;
    long long rows = 0;
    begin(s, deadline);
    s << bounded("select count(*) from ledger where request_id = :id", deadline),
        soci::use(request_id), soci::into(rows);
    s << bounded(balance_query(), deadline), soci::use(account), soci::into(found.balance);
    s.commit();
    found.exists = rows > 0;
    return found;
}

// --- The handler --------------------------------------------------------------------------------

outcome ledger::handle(const std::string& request_id, const std::string& event,
                       wall_clock::time_point deadline,
                       const commit_gate& may_commit) const noexcept {
    outcome out;
    const auto answer = [&](long long balance, const char* note) {
        out.ok = true;
        out.result = nlohmann::json{{"account", out.account}, {"balance", balance}}.dump(
            -1, ' ', false, nlohmann::json::error_handler_t::replace);
        out.note = note;
        return out;
    };
    try {
        const ms late = -time_left(deadline);
        if (late.count() >= 0) {
            throw failure("DeadlineExceeded",
                          "the invocation's deadline (Lambda's less WARMPOOL_DEADLINE_MARGIN_MS) "
                          "had passed " +
                              std::to_string(late.count()) +
                              " ms before the handler started; nothing was done");
        }
        // The request id is the primary key, a varchar(64): a longer one would be refused by the
        // server (or cut by a lenient one), and a NUL would cut it short when bound.
        if (request_id.size() > max_request_id_length) {
            throw failure("InvalidInvocation",
                          "the request id is " + std::to_string(request_id.size()) +
                              " bytes long; at most " + std::to_string(max_request_id_length) +
                              " fit in ledger.request_id");
        }
        if (const std::size_t at = first_control(request_id); at != std::string::npos) {
            throw failure("InvalidInvocation",
                          "the request id holds a control character (code " +
                              std::to_string(static_cast<unsigned char>(request_id[at])) +
                              ") at byte " + std::to_string(at));
        }
        const entry e = parse(event);
        out.account = e.account;
        for (int attempt = 1;; ++attempt) {
            out.transactions = attempt;
            const bool may_retry = attempt == 1;
            const auto a = post_entry(request_id, e, deadline, may_commit);
            switch (a.result) {
            case tx_result::state::committed:
                return answer(a.balance, attempt == 1 ? "" : "committed on the retry");
            case tx_result::state::already_committed: {
                lookup found;
                try {
                    found = look_up(request_id, e.account, deadline);
                } catch (const soci::soci_error& err) {
                    throw failure("DatabaseError",
                                  "this request id committed before (a redelivery), but reading "
                                  "the balance failed: " +
                                      one_line(err.what()));
                }
                // The server's code said duplicate key; the row itself is the proof. Without
                // it, answering with the balance would report a write that never happened.
                if (!found.exists) {
                    throw failure("DatabaseError",
                                  "the insert was refused as a duplicate request id, but no row "
                                  "with this request id is committed; nothing was committed");
                }
                return answer(found.balance, "already committed: a redelivery");
            }
            case tx_result::state::lost_before_commit:
                if (may_retry && time_left(deadline).count() > 0) {
                    continue; // nothing was committed: run it all again, on a fresh connection
                }
                throw failure(
                    time_left(deadline).count() > 0 ? "DatabaseError" : "DeadlineExceeded",
                    "the connection was lost before COMMIT on transaction " +
                        std::to_string(attempt) + " (" + a.why + "); nothing was committed");
            case tx_result::state::commit_unknown: {
                lookup found;
                try {
                    found = look_up(request_id, e.account, deadline);
                } catch (const std::exception& err) {
                    throw failure(
                        time_left(deadline).count() > 0 ? "DatabaseError" : "DeadlineExceeded",
                        "COMMIT failed (" + a.why +
                            ") and checking whether it took effect failed too (" +
                            one_line(err.what()) + "); retrying with the same request id is safe");
                }
                if (found.exists) {
                    return answer(found.balance, "confirmed committed after COMMIT failed");
                }
                if (may_retry && time_left(deadline).count() > 0) {
                    continue; // the row is not there: nothing was committed
                }
                throw failure("DatabaseError", "COMMIT failed on transaction " +
                                                   std::to_string(attempt) + " (" + a.why +
                                                   "); nothing was committed");
            }
            }
        }
    } catch (const failure& f) {
        out.error_type = f.type();
        out.error_message = f.what();
    } catch (const warmpool::acquire_timeout& err) {
        out.error_type = "warmpool.AcquireTimeout";
        out.error_message = err.what();
    } catch (const warmpool::connect_error& err) {
        out.error_type = "warmpool.ConnectError";
        out.error_message = err.what();
    } catch (const warmpool::pool_closed& err) {
        out.error_type = "warmpool.PoolClosed"; // the process is shutting down
        out.error_message = err.what();
    } catch (const soci::soci_error& err) {
        const bool late = is_statement_timeout(err) || time_left(deadline).count() <= 0;
        out.error_type = late ? "DeadlineExceeded" : "DatabaseError";
        out.error_message = (late ? "the server stopped a statement at the deadline: "
                                  : "the database refused a statement: ") +
                            one_line(err.what()) + "; nothing was committed";
    } catch (const std::exception& err) {
        out.error_type = "InternalError";
        out.error_message = err.what();
    } catch (...) {
        out.error_type = "InternalError";
        out.error_message = "a non-standard exception";
    }
    out.ok = false;
    return out;
}

} // namespace ledger_example
