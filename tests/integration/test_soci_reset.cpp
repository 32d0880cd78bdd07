// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// options::reset_on_release and soci_config::on_release against real sessions: PostgreSQL and
// MariaDB (WARMPOOL_TEST_PG, WARMPOOL_TEST_MYSQL, started by scripts/servers.sh) and SQLite. The
// scenarios are shared with the auto-detection tests (support/reset_scenarios.hpp).

#include <warmpool/soci.hpp>

#include "support/reset_scenarios.hpp"
#include "support/servers.hpp"

#include <doctest/doctest.h>

using namespace servers;

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE
TEST_CASE("PostgreSQL: with reset_on_release the next lease sees none of the previous lease's "
          "role, search_path, temporary table, advisory lock or prepared statement" *
          skip_without(pg)) {
    reset_scenarios::postgresql_state_does_not_reach_the_next_lease(true);
}

TEST_CASE("PostgreSQL: without reset_on_release that state reaches the next lease" *
          skip_without(pg)) {
    reset_scenarios::postgresql_state_does_not_reach_the_next_lease(false);
}

TEST_CASE("PostgreSQL: on_release returning false or throwing closes the connection" *
          skip_without(pg)) {
    reset_scenarios::on_release_veto_closes(need(pg), pg_backend_pid);
}
#endif

#if WARMPOOL_SOCI_MYSQL_NATIVE
TEST_CASE("MySQL: with reset_on_release the next lease sees none of the previous lease's role, "
          "session or user variables, temporary table or GET_LOCK lock" *
          skip_without(mysql)) {
    reset_scenarios::mariadb_state_does_not_reach_the_next_lease(true);
}

TEST_CASE("MySQL: without reset_on_release that state reaches the next lease" *
          skip_without(mysql)) {
    reset_scenarios::mariadb_state_does_not_reach_the_next_lease(false);
}

TEST_CASE("MySQL: on_release returning false or throwing closes the connection" *
          skip_without(mysql)) {
    reset_scenarios::on_release_veto_closes(need(mysql), mysql_connection_id);
}
#endif

#if WARMPOOL_SOCI_SQLITE3_NATIVE
TEST_CASE("SQLite: with reset_on_release temporary objects and attached databases are gone and "
          "on_connect runs again") {
    reset_scenarios::sqlite_state_does_not_reach_the_next_lease();
}
#endif
