// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The SOCI adapter's SQLite checks: libsqlite3 asked directly about the sqlite3 handle of a
// session SOCI opened. Used by warmpool/soci.hpp; one header per backend so each backend's code,
// its client-library functions and its compile-time switch sit together.
//
// WARMPOOL_SOCI_SQLITE3 picks how (the result is WARMPOOL_SOCI_SQLITE3_NATIVE):
//   undefined  detect: when <soci/sqlite3/soci-sqlite3.h> and <sqlite3.h> are on the include
//              path, the checks are compiled in and libsqlite3's functions are found at run time
//              in the process, which has it loaded once SOCI opened an SQLite session (see
//              warmpool/detail/loaded_library.hpp). NATIVE = 2. Without the headers NATIVE = 0,
//              and soci_config refuses a "sqlite3://" connect string.
//   =1         called directly: link sqlite3 and soci_sqlite3, whose static factory
//              (soci::sqlite3) then opens the sessions. NATIVE = 1.
//   =0         no native checks: the portable fallback documented in warmpool/soci.hpp.
//
// Everything runs in process; there is no server to hang, so no check waits on a socket:
//   is_broken       the handle is there. peer_closed: false (no socket).
//   in_transaction  sqlite3_get_autocommit, local.
//   ping            SELECT 1.
//   rollback        ROLLBACK; true when autocommit is back on.
//   reset           drops every object of the temp schema (TEMP tables, views, triggers) and
//                   detaches every ATTACHed database. PRAGMAs set on the connection (foreign_keys,
//                   busy_timeout, cache_size, ...) and functions registered on the handle cannot
//                   be reset generically and persist: set them in soci_config::on_connect, which
//                   reset_on_release runs again after every reset, so a lease that changes one
//                   hands the next lease the on_connect value, or the value it left for PRAGMAs
//                   on_connect does not set.

#include <warmpool/detail/loaded_library.hpp>

#include <soci/soci.h>

#if defined(WARMPOOL_SOCI_SQLITE3)
#if (0 - WARMPOOL_SOCI_SQLITE3 - 1) == 1 // defined with no value: taken as =1
#define WARMPOOL_SOCI_SQLITE3_NATIVE 1
#elif WARMPOOL_SOCI_SQLITE3
#define WARMPOOL_SOCI_SQLITE3_NATIVE 1
#else
#define WARMPOOL_SOCI_SQLITE3_NATIVE 0
#endif
#elif __has_include(<soci/sqlite3/soci-sqlite3.h>) && __has_include(<sqlite3.h>) &&               \
    __has_include(<dlfcn.h>)
#define WARMPOOL_SOCI_SQLITE3_NATIVE 2
#else
#define WARMPOOL_SOCI_SQLITE3_NATIVE 0
#define WARMPOOL_DETAIL_SOCI_SQLITE3_MISSING 1
#endif

#if WARMPOOL_SOCI_SQLITE3_NATIVE
#include <soci/sqlite3/soci-sqlite3.h> // declares SQLite's API in namespace sqlite_api

#include <string>
#include <utility>
#include <vector>
#endif

#include <chrono>

#define WARMPOOL_DETAIL_SOCI_LITE_MODE                                                             \
    WARMPOOL_DETAIL_CAT(soci_lite_mode_, WARMPOOL_SOCI_SQLITE3_NATIVE)

namespace warmpool {
namespace detail {
// How this translation unit reaches the client library is part of the names (see
// "One program, one mode" in warmpool/soci.hpp).
inline namespace WARMPOOL_DETAIL_SOCI_LITE_MODE {
namespace soci_lite {

#if defined(WARMPOOL_DETAIL_SOCI_SQLITE3_MISSING)
/// Why the checks are not compiled in, for soci_config's error.
inline constexpr const char* missing =
#if !__has_include(<soci/sqlite3/soci-sqlite3.h>)
    "SOCI's header <soci/sqlite3/soci-sqlite3.h> was not found (install SOCI's SQLite "
    "backend; Debian: libsoci-dev)";
#elif !__has_include(<sqlite3.h>)
    "SQLite's header <sqlite3.h> was not found: add its directory to the include path "
    "(`pkg-config --cflags sqlite3`; Debian: package libsqlite3-dev)";
#else
    "this platform has no <dlfcn.h> to find libsqlite3 at run time: define "
    "WARMPOOL_SOCI_SQLITE3=1 and link sqlite3 and soci_sqlite3";
#endif
#endif

#if WARMPOOL_SOCI_SQLITE3_NATIVE

/// The SQLite functions the checks call: linked directly (=1) or found at run time.
struct functions {
    decltype(&sqlite_api::sqlite3_get_autocommit) get_autocommit = nullptr;
    decltype(&sqlite_api::sqlite3_exec) exec = nullptr;
};

#if WARMPOOL_SOCI_SQLITE3_NATIVE == 2
/// Fills the table from one scope; false when a function is missing there.
inline bool fill(functions& f, void* scope) noexcept {
    void* const autocommit = loaded_library::find(scope, "sqlite3_get_autocommit");
    void* const exec = loaded_library::find(scope, "sqlite3_exec");
    if (autocommit == nullptr || exec == nullptr) {
        return false;
    }
    loaded_library::assign(f.get_autocommit, autocommit);
    loaded_library::assign(f.exec, exec);
    return true;
}
#endif

/// The table, or nullptr when SQLite's functions cannot be found in this process. Resolved
/// once, on first use, which is always with an SQLite session open.
inline const functions* api() noexcept {
#if WARMPOOL_SOCI_SQLITE3_NATIVE == 1
    static const functions linked{&sqlite_api::sqlite3_get_autocommit, &sqlite_api::sqlite3_exec};
    return &linked;
#else
    return loaded_library::resolve_once<functions>({"libsoci_sqlite3", "libsqlite3.so"}, &fill);
#endif
}

/// What the connect error says when api() is nullptr.
inline constexpr const char* unresolved =
    "SQLite's functions (sqlite3_get_autocommit, sqlite3_exec) were not found in this process, "
    "so the native checks cannot run (looked in the global scope, SOCI's libsoci_sqlite3 and "
    "libsqlite3.so*). Link sqlite3 and soci_sqlite3 and define WARMPOOL_SOCI_SQLITE3=1, or "
    "define WARMPOOL_SOCI_SQLITE3=0 for the portable fallback";

inline sqlite_api::sqlite3* handle(soci::session& s) noexcept {
    return static_cast<soci::sqlite3_session_backend*>(s.get_backend())->conn_;
}

inline bool is_broken(soci::session& s) noexcept {
    return api() == nullptr || handle(s) == nullptr;
}

inline bool in_transaction(soci::session& s) noexcept {
    const functions* const lite = api();
    sqlite_api::sqlite3* const db = handle(s);
    return lite == nullptr || db == nullptr || lite->get_autocommit(db) == 0;
}

/// Runs `sql`; SQLITE_OK (0) or SQLite's error code.
inline int exec(const functions& lite, sqlite_api::sqlite3* db, const char* sql) noexcept {
    return lite.exec(db, sql, nullptr, nullptr, nullptr);
}

inline bool ping(soci::session& s, std::chrono::milliseconds) noexcept {
    const functions* const lite = api();
    sqlite_api::sqlite3* const db = handle(s);
    return lite != nullptr && db != nullptr && exec(*lite, db, "SELECT 1") == 0;
}

/// In process, so there is nothing for `timeout` to bound. True when autocommit is back on:
/// ROLLBACK fails with nothing open, and with statements still running it may leave the
/// transaction open, which is what counts.
inline bool rollback(soci::session& s, std::chrono::milliseconds) noexcept {
    const functions* const lite = api();
    sqlite_api::sqlite3* const db = handle(s);
    if (lite == nullptr || db == nullptr) {
        return false;
    }
    (void)exec(*lite, db, "ROLLBACK");
    return lite->get_autocommit(db) != 0;
}

/// `name` as a quoted identifier.
inline std::string quoted(const std::string& name) {
    std::string out = "\"";
    for (const char c : name) {
        out += c;
        if (c == '"') {
            out += '"';
        }
    }
    return out + "\"";
}

/// The temp schema emptied and attached databases detached (see the top of this file).
inline bool reset(soci::session& s, std::chrono::milliseconds) noexcept {
    const functions* const lite = api();
    sqlite_api::sqlite3* const db = handle(s);
    if (lite == nullptr || db == nullptr) {
        return false;
    }
    try {
        using rows = std::vector<std::pair<std::string, std::string>>;
        // Triggers first (a TEMP trigger may sit on a main table), then views, then tables
        // (their indexes and triggers go with them).
        rows temp;
        const auto collect = [](void* out, int columns, char** values, char**) -> int {
            if (columns >= 2 && values[0] != nullptr && values[1] != nullptr) {
                static_cast<rows*>(out)->emplace_back(values[0], values[1]);
            }
            return 0;
        };
        if (lite->exec(db,
                       "SELECT type, name FROM sqlite_temp_master WHERE type IN "
                       "('trigger', 'view', 'table') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                       "ORDER BY CASE type WHEN 'trigger' THEN 0 WHEN 'view' THEN 1 ELSE 2 END",
                       collect, &temp, nullptr) != 0) {
            return false;
        }
        for (const auto& [type, name] : temp) {
            const std::string drop = "DROP " + type + " IF EXISTS temp." + quoted(name);
            if (exec(*lite, db, drop.c_str()) != 0) {
                return false;
            }
        }
        // PRAGMA database_list: seq, name, file; main and temp stay.
        rows attached;
        const auto collect_attached = [](void* out, int columns, char** values, char**) -> int {
            if (columns >= 3 && values[1] != nullptr) {
                const std::string name = values[1];
                if (name != "main" && name != "temp") {
                    static_cast<rows*>(out)->emplace_back(name, "");
                }
            }
            return 0;
        };
        if (lite->exec(db, "PRAGMA database_list", collect_attached, &attached, nullptr) != 0) {
            return false;
        }
        for (const auto& entry : attached) {
            const std::string detach = "DETACH DATABASE " + quoted(entry.first);
            if (exec(*lite, db, detach.c_str()) != 0) {
                return false;
            }
        }
        return lite->get_autocommit(db) != 0;
    } catch (...) {
        return false;
    }
}

#endif // WARMPOOL_SOCI_SQLITE3_NATIVE

} // namespace soci_lite
} // namespace WARMPOOL_DETAIL_SOCI_LITE_MODE
} // namespace detail
} // namespace warmpool
