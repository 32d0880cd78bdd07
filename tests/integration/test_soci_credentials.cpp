// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

// Rotating credentials: soci_config::connect_params supplies the password at every connect. The
// account's password is changed on the server between connects, as a secrets manager rotates
// it (or as an RDS IAM token expires after 15 minutes), and the pool keeps connecting with no
// restart. Whatever the hook returns never shows in messages, events or target().

#include <warmpool/soci.hpp>

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

#if WARMPOOL_SOCI_POSTGRESQL_NATIVE && WARMPOOL_SOCI_MYSQL_NATIVE

#include "support/real_server.hpp"
#include "support/server_kind.hpp"

#include <doctest/doctest.h>

#include <mutex>
#include <string>
#include <vector>

namespace {

using namespace servers;

// A password-checked account: MariaDB checks every account's password; PostgreSQL checks this
// role's because scripts/servers.sh lists it with scram-sha-256 in pg_hba.conf (everyone else is
// trusted on loopback).
struct rotating_account {
    const server_kind& kind;
    std::unique_ptr<soci::session> admin;
    std::string base; // the connect string for the account, without a password

    rotating_account(const server_kind& k, const std::string& cs)
        : kind(k), admin(admin_session(cs)) {
        if (&kind == &postgresql) {
            *admin << "drop role if exists warmpool_rotating";
            *admin << "create role warmpool_rotating login password 'first-Secret-1'";
            base = with_param(without_param(cs, "password"), "user", "warmpool_rotating");
        } else {
            *admin << "drop user if exists 'warmpool_rotating'@'127.0.0.1'";
            *admin << "create user 'warmpool_rotating'@'127.0.0.1' identified by "
                      "'first-Secret-1'";
            base = with_param(without_param(without_param(cs, "password"), "db"), "user",
                              "warmpool_rotating");
        }
    }
    ~rotating_account() {
        try {
            if (&kind == &postgresql) {
                *admin << "drop role if exists warmpool_rotating";
            } else {
                *admin << "drop user if exists 'warmpool_rotating'@'127.0.0.1'";
            }
        } catch (...) {
        }
    }

    void set_password(const std::string& pw) {
        if (&kind == &postgresql) {
            *admin << "alter role warmpool_rotating password '" + pw + "'";
        } else {
            *admin << "alter user 'warmpool_rotating'@'127.0.0.1' identified by '" + pw + "'";
        }
    }
};

struct secret_store {
    std::mutex m;
    std::string current;
    int asked = 0;
    std::string get() {
        std::lock_guard<std::mutex> lock(m);
        ++asked;
        return current;
    }
    void set(std::string s) {
        std::lock_guard<std::mutex> lock(m);
        current = std::move(s);
    }
};

void rotates(const server_kind& kind) {
    const std::string cs = need(kind.var);
    rotating_account account(kind, cs);
    secret_store secrets;
    secrets.set("first-Secret-1");

    warmpool::soci_config cfg(account.base);
    cfg.connect_params = [&](const std::string& params) {
        return params + " password=" + secrets.get();
    };
    std::vector<std::string> messages;
    std::mutex messages_mutex;
    warmpool::options o = pool_of(1);
    o.connect_attempts = 1;
    o.on_event = [&](const warmpool::event& e) {
        std::lock_guard<std::mutex> lock(messages_mutex);
        messages.emplace_back(e.message);
    };
    warmpool::soci_pool pool(cfg, o);
    {
        auto l = pool.acquire();
        int one = 0;
        *l << "select 1", soci::into(one);
        CHECK(one == 1);
    }
    CHECK(secrets.asked == 1);

    // Rotated on the server, then in the store: the next connect uses the new secret.
    account.set_password("second-Secret-2");
    secrets.set("second-Secret-2");
    pool.close_idle();
    {
        auto l = pool.acquire();
        int one = 0;
        *l << "select 1", soci::into(one);
        CHECK(one == 1);
    }
    CHECK(secrets.asked == 2);
    CHECK(pool.stats().created == 2);

    // A stale secret: the connect fails permanently, and the secret is nowhere to be read.
    account.set_password("third-Secret-3");
    pool.close_idle();
    std::string error;
    try {
        (void)pool.acquire();
    } catch (const warmpool::connect_error& e) {
        error = e.what();
        CHECK_FALSE(e.transient());
    }
    REQUIRE_FALSE(error.empty());
    CAPTURE(error);
    CHECK(error.find("second-Secret-2") == std::string::npos);
    CHECK(pool.target().find("Secret") == std::string::npos);
    {
        std::lock_guard<std::mutex> lock(messages_mutex);
        for (const std::string& m : messages) {
            CAPTURE(m);
            CHECK(m.find("Secret") == std::string::npos);
        }
    }

    // Fixed in the store: no restart needed.
    secrets.set("third-Secret-3");
    auto l = pool.acquire();
    int one = 0;
    *l << "select 1", soci::into(one);
    CHECK(one == 1);
}

} // namespace

TEST_CASE("PostgreSQL: connect_params supplies a password rotated on the server between "
          "connects" *
          skip_without(pg)) {
    rotates(postgresql);
}

TEST_CASE("MariaDB: connect_params supplies a password rotated on the server between connects" *
          skip_without(mysql)) {
    rotates(mariadb);
}

#endif

TEST_CASE("connect_params: a throwing hook fails the connect, permanently unless it said "
          "otherwise, and names the hook") {
    warmpool::soci_config cfg("sqlite3://db=:memory:");
    cfg.connect_params = [](const std::string&) -> std::string {
        throw std::runtime_error("vault unreachable");
    };
    warmpool::soci_pool pool(cfg);
    try {
        (void)pool.acquire();
        FAIL("expected connect_error");
    } catch (const warmpool::connect_error& e) {
        CHECK_FALSE(e.transient());
        CHECK(std::string(e.what()).find("connect_params hook failed: vault unreachable") !=
              std::string::npos);
    }
    warmpool::soci_config again("sqlite3://db=:memory:");
    again.connect_params = [](const std::string&) -> std::string {
        throw warmpool::connect_error("token service busy", true);
    };
    warmpool::options o;
    o.connect_attempts = 1;
    warmpool::soci_pool transient(again, o);
    try {
        (void)transient.acquire();
        FAIL("expected connect_error");
    } catch (const warmpool::connect_error& e) {
        CHECK(e.transient());
    }
}
