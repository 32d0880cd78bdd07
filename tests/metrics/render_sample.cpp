// Renders the metrics of two mock pools that have been through connects, a connect retry, a
// timeout, pings, rollbacks and closes, for tests/metrics/check.py to hand to the real parsers
// (promtool, and prometheus_client where installed). Core only: mock traits and a manual clock,
// no SOCI, no sleeping.
#include "manual_clock.hpp"
#include "mock_traits.hpp"

#include <warmpool/metrics.hpp>
#include <warmpool/warmpool.hpp>

#include <cstdio>
#include <exception>
#include <iostream>
#include <memory>

namespace {

using namespace std::chrono_literals;
using mock_pool = warmpool::basic_pool<warmpool_test::mock_traits, warmpool_test::manual_clock>;
using warmpool_test::manual_clock;

void exercise(mock_pool& pool, warmpool_test::mock_server& server) {
    {
        auto a = pool.acquire(); // connects
        auto b = pool.acquire(); // connects
        manual_clock::advance(30ms);
        b->in_tx = true; // rolled back at give-back
    }
    {
        // Both leases out: a third caller waits out acquire_timeout (the manual clock jumps).
        auto a = pool.acquire();
        auto b = pool.acquire();
        try {
            (void)pool.acquire();
        } catch (const warmpool::acquire_timeout&) {
        }
        manual_clock::advance(2s);
        a.invalidate(); // closed: invalidated
    }
    server.fail_next(1, warmpool_test::connect_outcome::transient);
    {
        auto c = pool.acquire(); // idle for 2 s: pinged; the replacement connect retries once
        auto d = pool.acquire();
        manual_clock::advance(250us);
    }
}

} // namespace

int main() {
    try {
        manual_clock::reset();
        auto orders_server = std::make_shared<warmpool_test::mock_server>();
        orders_server->connect_cost = 4ms;
        warmpool::options orders_options;
        orders_options.max_size = 2;
        orders_options.min_idle = 1;
        orders_options.acquire_timeout = 100ms;
        mock_pool orders(orders_server, orders_options);
        exercise(orders, *orders_server);

        auto audit_server = std::make_shared<warmpool_test::mock_server>();
        audit_server->connect_cost = 40ms;
        warmpool::options audit_options;
        audit_options.max_size = 3;
        audit_options.acquire_timeout = 50ms;
        mock_pool audit(audit_server, audit_options);
        exercise(audit, *audit_server);
        auto held = audit.acquire(); // one lease out at scrape time

        // Label values with every character the format escapes.
        warmpool::write_prometheus(
            std::cout,
            {warmpool::metrics_of(orders, "orders", {{"service", "shop"}}),
             warmpool::metrics_of(audit, "audit \"v2\"",
                                  {{"service", "shop"}, {"note", "back\\slash\nline"}})});
        std::cout.flush();
        return std::cout ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "render_sample: %s\n", e.what());
        return 1;
    }
}
