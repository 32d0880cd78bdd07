// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

#include "shutdown.hpp"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace ledger_example {
namespace {

sigset_t shutdown_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    return set;
}

} // namespace

void block_shutdown_signals() {
    const sigset_t set = shutdown_signals();
    if (const int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr); rc != 0) {
        std::fprintf(stderr,
                     "bootstrap: pthread_sigmask failed (error %d); SIGTERM will end the "
                     "process without closing the pool\n",
                     rc);
    }
}

void watch_for_shutdown(warmpool::soci_pool& pool) {
    std::thread([&pool] {
        const sigset_t set = shutdown_signals();
        int signal = 0;
        while (sigwait(&set, &signal) != 0) {
        }
        end_process(pool, 0, signal == SIGTERM ? "SIGTERM" : "SIGINT");
    }).detach(); // never joined: it ends the process, or the process ends around it
}

void end_process(warmpool::soci_pool& pool, int status, const std::string& why) {
    static std::atomic<bool> ending{false};
    if (ending.exchange(true)) {
        for (;;) { // the first caller is closing the pool and will end the process
            std::this_thread::sleep_for(std::chrono::seconds(1));
        }
    }
    const auto start = std::chrono::steady_clock::now();
    pool.close();
    const auto closed_in =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start);
    const warmpool::pool_stats s = pool.stats();
    std::fprintf(stderr,
                 "shutdown: %s; pool closed in %.1f ms (connections opened %llu, closed at "
                 "shutdown %llu; leases %llu), exit %d\n",
                 why.c_str(), closed_in.count(), static_cast<unsigned long long>(s.created),
                 static_cast<unsigned long long>(s.closed_pool_closed),
                 static_cast<unsigned long long>(s.acquired), status);
    std::fflush(stderr);
    // Not exit(): it would run static destructors (the pool's among them) while the loop threads
    // may still hold a lease or sit in libcurl. The kernel closes every socket left.
    std::_Exit(status);
}

} // namespace ledger_example
