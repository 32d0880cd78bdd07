// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Ending the process: on SIGTERM (Lambda shutting the environment down) or a fatal error.
//
// A signal handler may call almost nothing (no locks, no allocation), and the pool takes a
// lock to close. So no handler is installed: SIGTERM (and SIGINT, for a local run) is blocked
// in every thread, and one thread takes it with sigwait(), as an ordinary function call, from
// which closing the pool is safe.

#include <warmpool/soci.hpp>

#include <string>

namespace ledger_example {

/// Blocks SIGTERM and SIGINT in the calling thread. Call it first in main(), before any thread
/// starts (libcurl's and libpq's included): threads inherit the mask, so the signals reach
/// nobody but the thread watch_for_shutdown() starts.
void block_shutdown_signals();

/// Starts the thread that waits for SIGTERM or SIGINT and then calls end_process(pool, 0, …).
void watch_for_shutdown(warmpool::soci_pool& pool);

/// Closes the pool (idle connections end politely, each goodbye bounded), logs one line with
/// `why` and the pool's counts, and ends the process with std::_Exit(status): at once, without
/// running static destructors while other threads still use the pool and libcurl. A second
/// caller waits for the first to end the process.
[[noreturn]] void end_process(warmpool::soci_pool& pool, int status, const std::string& why);

} // namespace ledger_example
