// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The test servers over TLS (scripts/servers.sh): their connect strings' variables, each
// server's fault-scenario description with the TLS account in place of the plain one, and how
// to ask a server whether a session is encrypted. The TLS accounts (warmpool_tls on both
// servers) are admitted over TLS only, so a session they open that works at all is encrypted;
// the tests still ask the server.

#include "real_server.hpp"
#include "server_kind.hpp"
#include "servers.hpp"

#include <soci/soci.h>

#include <string>

namespace servers {

// The environment variables, by what they name.
inline constexpr const char* pg_tls = "WARMPOOL_TEST_PG_TLS";
inline constexpr const char* mysql_tls = "WARMPOOL_TEST_MYSQL_TLS";
inline constexpr const char* tls_ca = "WARMPOOL_TEST_TLS_CA";

/// `plain` with its connect string taken from `var` instead: every scenario then runs over the
/// connections that variable names, and acts on the server with the same account.
inline server_kind over_tls(const server_kind& plain, const char* var) {
    server_kind k = plain;
    k.var = var;
    return k;
}

/// "TLSv1.3 TLS_AES_256_GCM_SHA384" for an encrypted session, "" for a plain one: what the
/// server reports about the session it serves.
inline std::string pg_session_tls(soci::session& s) {
    std::string tls;
    s << "select coalesce(max(case when ssl then version || ' ' || cipher end), '') "
         "from pg_stat_ssl where pid = pg_backend_pid()",
        soci::into(tls);
    return tls;
}

inline std::string mysql_session_tls(soci::session& s) {
    std::string version;
    std::string cipher;
    s << "select "
         "(select variable_value from information_schema.session_status where variable_name = "
         "'Ssl_version'), "
         "(select variable_value from information_schema.session_status where variable_name = "
         "'Ssl_cipher')",
        soci::into(version), soci::into(cipher);
    return cipher.empty() ? std::string() : version + " " + cipher;
}

} // namespace servers
