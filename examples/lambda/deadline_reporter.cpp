// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

#include "deadline_reporter.hpp"

#include "runtime_api.hpp"
#include "shutdown.hpp"

#include <algorithm>
#include <cstdio>
#include <thread>
#include <utility>

namespace ledger_example {

bool deadline_reporter::ticket::claim() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    return !std::exchange(claimed_, true);
}

bool deadline_reporter::ticket::begin_commit() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (claimed_) {
        return false;
    }
    commit_started_ = true;
    return true;
}

void deadline_reporter::ticket::wait_until_answered() {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return answered_; });
}

void deadline_reporter::ticket::answered() noexcept {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        answered_ = true;
    }
    done_.notify_all();
}

deadline_reporter::deadline_reporter(std::string endpoint, warmpool::soci_pool& pool)
    : endpoint_(std::move(endpoint)), pool_(pool) {
    // Never joined: the process ends with _Exit (shutdown.hpp). Started by a thread whose
    // SIGTERM is blocked, so it inherits that.
    std::thread([this] { run(); }).detach();
}

std::shared_ptr<deadline_reporter::ticket>
deadline_reporter::watch(const std::string& request_id,
                         std::chrono::system_clock::time_point report_at) {
    auto t = std::make_shared<ticket>(request_id, report_at);
    std::lock_guard<std::mutex> lock(mutex_);
    watched_.push_back(t);
    wakeup_.notify_one();
    return t;
}

void deadline_reporter::forget(const std::shared_ptr<ticket>& t) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    watched_.erase(std::remove(watched_.begin(), watched_.end(), t), watched_.end());
}

void deadline_reporter::run() {
    runtime_api api(endpoint_); // this thread's own connection to the Runtime API
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        if (watched_.empty()) {
            wakeup_.wait(lock);
            continue;
        }
        const auto earliest =
            std::min_element(watched_.begin(), watched_.end(), [](const auto& a, const auto& b) {
                return a->report_at_ < b->report_at_;
            });
        const std::shared_ptr<ticket> due = *earliest;
        if (std::chrono::system_clock::now() < due->report_at_) {
            wakeup_.wait_until(lock, due->report_at_);
            continue; // a ticket may have come or gone meanwhile
        }
        watched_.erase(earliest);
        bool commit_started = false;
        {
            std::lock_guard<std::mutex> ticket_lock(due->mutex_);
            if (std::exchange(due->claimed_, true)) {
                continue; // answered by its loop just now
            }
            commit_started = due->commit_started_;
        }
        lock.unlock(); // the POST takes a round trip: watch() and forget() must not wait on it
        const std::string message =
            commit_started
                ? "the handler sent COMMIT before the deadline and the database had not answered "
                  "it at the deadline, so whether it took effect is unknown; a retry with the "
                  "same request id is safe (it finds the committed row, or commits once)"
                : "the handler was still waiting on the database at the deadline (a connect or "
                  "call that the deadline could not cut short); it commits nothing after this "
                  "answer, and a retry with the same request id is safe";
        try {
            api.fail(due->request_id_, {"DeadlineExceeded", message});
            std::fprintf(stderr, "invocation %s DeadlineExceeded (reported at the deadline: %s)\n",
                         due->request_id_.c_str(), message.c_str());
        } catch (const runtime_api_error& e) {
            // 500: the Runtime API cannot go on; Lambda starts a new environment.
            if (e.status() >= 500) {
                end_process(pool_, 1, std::string("the Runtime API failed: ") + e.what());
            }
            std::fprintf(stderr, "runtime: %s\n", e.what());
        }
        due->answered();
        lock.lock();
    }
}

} // namespace ledger_example
