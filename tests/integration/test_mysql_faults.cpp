// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// What a real MariaDB server does to pooled connections, and what the caller sees: idle
// sessions timed out by wait_timeout, connections KILLed, the server restarted or stopped dead,
// a per-user connection limit reached, a transaction left open. The server is the one
// scripts/servers.sh started (WARMPOOL_TEST_MYSQL, WARMPOOL_TEST_MYSQL_CTL); every test leaves
// it running and as it found it. The scenarios PostgreSQL shares are written once, in
// support/fault_scenarios.hpp.

#include <warmpool/soci.hpp>

#if WARMPOOL_SOCI_MYSQL_NATIVE

#include "support/fault_scenarios.hpp"
#include "support/real_server.hpp"
#include "support/server_kind.hpp"

#include <warmpool/soci.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>

namespace {

using std::chrono::milliseconds;
using namespace servers;

} // namespace

TEST_CASE("MySQL: a single-slot pool reconnects unseen after wait_timeout closed its connection" *
          skip_without(mysql)) {
    scenarios::reconnects_after_idle_timeout(mariadb);
}

TEST_CASE("MySQL: a process frozen with SIGSTOP while wait_timeout closed its connection serves "
          "again after SIGCONT" *
          skip_without(mysql)) {
    scenarios::frozen_process_serves_after_thaw(mariadb);
}

TEST_CASE("MySQL: connections KILLed while idle are replaced at the next acquire" *
          skip_without(mysql)) {
    scenarios::idle_connections_ended_are_replaced(mariadb);
}

TEST_CASE("MySQL: while the server is down acquire fails within its deadline, and once it is "
          "back no dead connection is handed out" *
          skip_without(mysql, mysql_ctl)) {
    scenarios::server_restart(mariadb);
}

// MariaDB serves every connection from threads of one process, so the only way to hang "the
// backend" is to stop the whole server. What that can show: the ping gives up after
// validation_timeout, and the caller gets an error within the acquire deadline plus one connect
// attempt (the kernel still accepts TCP connections for a stopped server, so each attempt waits
// for a handshake that never comes, bounded by connect_timeout) instead of hanging; and once
// the server runs again, the pool serves. A fresh connection cannot be had while it is stopped.
TEST_CASE("MySQL: with the whole server stopped, the ping gives up after validation_timeout and "
          "acquire returns in bounded time; after SIGCONT the pool serves again" *
          skip_without(mysql, sigstop)) {
    (void)need(sigstop);
    scenarios::mariadb_stopped_then_serves(need(mysql), "plain", [](soci::session&) {});
}

TEST_CASE("MySQL: more clients than the user's max_user_connections all get through with "
          "backoff, and fail with the server's message without it" *
          skip_without(mysql)) {
    scenarios::connection_limit(mariadb);
}

TEST_CASE("MySQL: a transaction left open by an exception is rolled back before the next user "
          "gets the connection" *
          skip_without(mysql)) {
    scenarios::stale_transaction_rolled_back(mariadb);
}

#endif
