// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The function's configuration: what Lambda and the deployer put in the environment, read once
// at init and checked, so a mistake fails the init phase with a message instead of every
// invocation.

#include <chrono>
#include <stdexcept>
#include <string>

namespace ledger_example {

/// A setting is missing or malformed. The message names the variable and what to do; it never
/// holds DATABASE's value (the connect string may hold a password).
class config_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Everything but AWS_LAMBDA_RUNTIME_API, which main() reads first: without it no error can be
/// reported to Lambda, and with it every other mistake can.
struct config {
    /// DATABASE: a SOCI connect string ("postgresql://host=… dbname=… user=… password=…",
    /// "mysql://host=… db=… user=… password=…", "sqlite3://db=/tmp/ledger.db"). Secret: never
    /// logged; log the pool's target() instead.
    std::string database;

    /// DATABASE_PASSWORD_FILE: a file holding the database password, read again before every
    /// connect (a secrets extension or a token refresher rewrites it on rotation), so a rotated
    /// password takes effect at the next connect without a restart. Empty when unset; then
    /// DATABASE carries the password, if any.
    std::string password_file;

    /// AWS_LAMBDA_MAX_CONCURRENCY: how many invocations this process serves at once (one
    /// /next loop per thread, and as many pooled connections). 1 when unset.
    unsigned concurrency = 1;

    /// AWS_LAMBDA_INITIALIZATION_TYPE == "snap-start": the init phase ends in a snapshot.
    bool snap_start = false;

    /// WARMPOOL_DEADLINE_MARGIN_MS: how long before Lambda's own deadline an invocation gives
    /// up, so that its error still reaches the Runtime API before Lambda cuts it off. At least
    /// min_deadline_margin: the deadline reporter answers halfway through the margin, and a
    /// smaller one would leave it no time to post before Lambda's deadline.
    std::chrono::milliseconds deadline_margin{200};
    static constexpr std::chrono::milliseconds min_deadline_margin{20};

    /// WARMPOOL_INIT_DEADLINE_MS: how long the init phase (settings, pool, table) may take from
    /// the start of the process before it is reported to /runtime/init/error and the process
    /// exits. Lambda allows 10 s for init; 9 s leaves time for the report.
    std::chrono::milliseconds init_deadline{9'000};

    /// FLEET_POLICY: "on" (the default) or "off". On, each instance takes part in managing the
    /// server's connections with the function's other instances (warmpool/fleet.hpp,
    /// docs/fleet.md): a sampled give-back asks the server how full it is and closes this
    /// instance's connection when the server is too full. Never for SQLite (no server).
    bool fleet = true;
    /// FLEET_SAMPLE_FRACTION: the share of invocations that ask, (0, 1]. Default 0.25.
    double fleet_sample_fraction = 0.25;
    /// FLEET_CLOSE_ABOVE: the share of the server's usable connections at which an instance
    /// closes its own connection after its invocation, (0, 1]. Default 0.8.
    double fleet_close_above = 0.8;
    /// FLEET_REAP_IDLE_MS: with a value, the samples also end zombies (connections of this
    /// function idle, outside a transaction, that long: reclaimed instances' connections).
    /// 0 or unset: no reaping. At least 1000. Choose it longer than your instances sit frozen
    /// between invocations (docs/fleet.md). On MariaDB the scope is the database user: give the
    /// function a user of its own.
    std::chrono::milliseconds fleet_reap_idle{0};
    /// FLEET_REAP_MAX: zombies ended per sample at most, 1 to 1000. Default 2.
    unsigned fleet_reap_max = 2;

    /// Reads and checks the environment. Throws config_error.
    static config from_environment();
};

/// The password in `path`: its content without one trailing newline (LF or CRLF). Throws
/// warmpool::connect_error naming the path but never the content: transient (a rotation may be
/// rewriting the file) when the file cannot be read, is empty, or holds a line break or NUL
/// inside; permanent when the password holds a blank, quote or backslash, which a SOCI connect
/// string cannot carry safely.
std::string read_password_file(const std::string& path);

/// `params` with ` password='<password>'` appended (a password read_password_file accepted).
std::string with_password(const std::string& params, const std::string& password);

} // namespace ledger_example
