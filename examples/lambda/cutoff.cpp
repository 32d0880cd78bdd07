// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

#include "cutoff.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

// The backends' own headers reach a session's socket. The warmpool::soci target links each
// backend it found (WARMPOOL_SOCI_<BACKEND>=1), so their client libraries are there to call.
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE == 1
#include <soci/postgresql/soci-postgresql.h>
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE == 1
#include <soci/mysql/soci-mysql.h>
#endif

namespace ledger_example {

/// One thread for every cutoff of the process: it sleeps until the earliest deadline.
class watchdog {
public:
    static watchdog& instance() {
        // Started at the first invocation, by a thread whose SIGTERM is blocked, like every
        // thread of this program (shutdown.hpp), so it inherits that.
        static watchdog* w = new watchdog; // never destroyed: the process ends with _Exit
        return *w;
    }

    void arm(cutoff* c) {
        std::lock_guard<std::mutex> lock(mutex_);
        armed_.push_back(c);
        wakeup_.notify_one();
    }

    void disarm(cutoff* c) noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        armed_.erase(std::remove(armed_.begin(), armed_.end(), c), armed_.end());
    }

    bool fired(const cutoff* c) noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        return c->fired_;
    }

private:
    watchdog() {
        std::thread([this] { run(); }).detach();
    }

    void run() {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            if (armed_.empty()) {
                wakeup_.wait(lock);
                continue;
            }
            const auto earliest =
                (*std::min_element(armed_.begin(), armed_.end(), [](cutoff* a, cutoff* b) {
                    return a->deadline_ < b->deadline_;
                }))->deadline_;
            wakeup_.wait_until(lock, earliest);
            const auto now = std::chrono::steady_clock::now();
            for (cutoff* c : armed_) {
                // Under the lock: disarm() waits, so the descriptor is still the session's.
                if (!c->fired_ && c->deadline_ <= now) {
                    ::shutdown(c->fd_, SHUT_RDWR);
                    c->fired_ = true;
                }
            }
            armed_.erase(
                std::remove_if(armed_.begin(), armed_.end(), [](cutoff* c) { return c->fired_; }),
                armed_.end());
        }
    }

    std::mutex mutex_;
    std::condition_variable wakeup_;
    std::vector<cutoff*> armed_;
};

cutoff::cutoff(soci::session& s, std::chrono::system_clock::time_point deadline)
    : fd_(socket_of(s)), deadline_(std::chrono::steady_clock::now() +
                                   std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                       deadline - std::chrono::system_clock::now())) {
    if (fd_ >= 0) {
        watchdog::instance().arm(this);
    }
}

cutoff::~cutoff() {
    disarm();
}

void cutoff::disarm() noexcept {
    if (fd_ >= 0) {
        watchdog::instance().disarm(this);
    }
}

bool cutoff::fired() const noexcept {
    return fd_ >= 0 && watchdog::instance().fired(this);
}

int cutoff::socket_of(soci::session& s) noexcept {
    soci::details::session_backend* backend = s.get_backend();
    if (backend == nullptr) {
        return -1;
    }
    try {
        const std::string name = backend->get_backend_name();
#if WARMPOOL_SOCI_POSTGRESQL_NATIVE == 1
        if (name == "postgresql") {
            return PQsocket(static_cast<soci::postgresql_session_backend*>(backend)->conn_);
        }
#endif
#if WARMPOOL_SOCI_MYSQL_NATIVE == 1
        if (name == "mysql") {
            return static_cast<int>(
                mysql_get_socket(static_cast<soci::mysql_session_backend*>(backend)->conn_));
        }
#endif
        (void)name;
    } catch (...) {
    }
    return -1;
}

} // namespace ledger_example
