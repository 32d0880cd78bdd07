// Real threads, real scheduling, the real clock: eight threads through a pool of two or three
// connections, with random checkouts, give-backs, faults and housekeeping, then close() while
// some are still running. Unlike the simulation nothing here replays; it is the simulation's
// counterpart for the thread sanitizer, which checks every interleaving the OS happens to
// produce. The backend is the simulation's (support/sim_traits.hpp) without its hangs.
//
// Run it alone: warmpool_unit_tests -ts=stress
#include "support/sim_traits.hpp"

#include <warmpool/warmpool.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using warmpool_sim::ms;
using warmpool_sim::sim_connection;
using warmpool_sim::sim_traits;
using warmpool_sim::sim_world;
// The real clock: a waiter the pool forgot to notify sleeps until its deadline here, and shows
// up as a timeout.
using pool_t = warmpool::basic_pool<sim_traits>;

// splitmix64, one stream per thread.
struct rng {
    std::uint64_t state;
    std::uint64_t next() {
        std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    int below(int n) { return static_cast<int>(next() % static_cast<std::uint64_t>(n)); }
};

struct tally {
    std::atomic<long> shared{0};   // a connection seen by two leases at once
    std::atomic<long> leases{0};   // leases obtained
    std::atomic<long> refused{0};  // try_acquire() with nothing free, timeouts, pool_closed
    std::atomic<long> late{0};     // acquire() with its long default timeout timed out
    std::atomic<long> errors{0};   // unexpected exceptions
    std::atomic<long> observed{0}; // events seen
    std::atomic<int> finished{0};  // threads done
};

// One lease's life: exclusive use, maybe a fault left behind, then given back or invalidated.
void use(pool_t::lease& l, rng& r, tally& t) {
    sim_connection& c = *l;
    if (c.users.fetch_add(1) != 0) {
        ++t.shared;
    }
    ++t.leases;
    switch (r.below(12)) {
    case 0:
        c.in_tx = true; // rolled back at give-back
        break;
    case 1:
        c.in_tx = true;
        c.rollback_fails = true; // closed at give-back
        break;
    case 2:
        c.dirty = true; // reset at give-back
        break;
    case 3:
        c.ping_fails = true; // replaced at the next checkout
        break;
    case 4:
        c.peer_gone = true;
        break;
    case 5:
        c.broken = true;
        break;
    case 6:
        c.veto = r.below(4) == 0;
        break;
    default:
        break;
    }
    std::this_thread::yield();
    c.users.fetch_sub(1);
    if (r.below(10) == 0) {
        l.invalidate();
    } else {
        l.release();
    }
}

void worker(pool_t& p, int index, int rounds, tally& t) {
    rng r{0xC0FFEEull + static_cast<std::uint64_t>(index)};
    for (int i = 0; i < rounds && t.late == 0; ++i) { // one lost wakeup is enough to know
        try {
            switch (r.below(10)) {
            case 0: {
                auto l = p.try_acquire();
                if (l) {
                    use(*l, r, t);
                } else {
                    ++t.refused;
                }
                break;
            }
            case 1: {
                auto l = p.acquire(ms{0}); // no waiting for another user
                use(l, r, t);
                break;
            }
            case 2:
                p.housekeep();
                break;
            default:
                try {
                    auto l = p.acquire();
                    use(l, r, t);
                } catch (const warmpool::acquire_timeout&) {
                    ++t.late;
                }
                break;
            }
        } catch (const warmpool::acquire_timeout&) {
            ++t.refused;
        } catch (const warmpool::connect_error&) {
            ++t.refused;
        } catch (const warmpool::pool_closed&) {
            ++t.refused;
            return;
        } catch (...) {
            ++t.errors;
        }
    }
}

void stress(std::size_t max_size, warmpool::options::duration handoff_after, int rounds) {
    sim_world world(max_size, ms{2}, /*reset_on_release=*/true);
    tally t;
    warmpool::options o;
    o.max_size = max_size;
    o.min_idle = 1;
    // Leases are held for a moment: no acquire() waits anywhere near this long unless a wakeup
    // is lost.
    o.acquire_timeout = std::chrono::seconds(20);
    o.handoff_after = handoff_after;
    o.validation_window = ms{0}; // a ping on every checkout
    o.validation_timeout = ms{2};
    o.reset_on_release = true;
    o.connect_backoff_base = ms{0};
    o.connect_backoff_cap = ms{0};
    o.on_event = [&t](const warmpool::event&) {
        if (++t.observed % 7 == 0) {
            throw std::runtime_error("an observer that throws");
        }
    };
    {
        pool_t p(&world, o);
        p.warm_up();
        constexpr int threads = 8;
        std::vector<std::thread> workers;
        for (int i = 0; i < threads; ++i) {
            workers.emplace_back([&p, i, rounds, &t] {
                worker(p, i, rounds, t);
                ++t.finished;
            });
        }
        // Close while the busiest part is still running: every thread must get out cleanly.
        while (t.leases.load() < static_cast<long>(threads) * rounds / 2 &&
               t.finished.load() < threads) {
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        p.close();
        for (auto& w : workers) {
            w.join();
        }
        const auto s = p.stats();
        CHECK(s.waiting == 0);
        CHECK(s.in_use == 0);
        CHECK(s.open == 0);
        CHECK(s.created == s.closed);
    }
    const auto w = world.counts();
    for (const auto& v : world.violations()) {
        INFO(v.invariant << ": " << v.message);
        CHECK(v.invariant == "");
    }
    CHECK(t.shared == 0);
    CHECK(t.errors == 0);
    CHECK(t.late == 0);
    CHECK(t.leases > 0);
    CHECK(w.max_alive <= static_cast<int>(max_size));
    CHECK(w.alive_current == 0); // nothing left open after close() and the last give-back
    CHECK(w.opened == w.destroyed);
}

} // namespace

TEST_SUITE("stress") {

    TEST_CASE("eight threads through a pool of two or three never share a connection nor open more "
              "than max_size, and close() leaves nothing open") {
        SUBCASE("three connections, hand-off after 1 ms") {
            stress(3, ms{1}, 4000);
        }
        SUBCASE("two connections, strict first come, first served") {
            stress(2, ms{0}, 4000);
        }
    }

} // TEST_SUITE
