// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The last line of defence against a silent timeout: answers an invocation with
// DeadlineExceeded when its handler is still busy shortly before Lambda's deadline.
//
// The handler keeps its own deadline (ledger.hpp) at every step it controls, and the cutoff
// (cutoff.hpp) ends waits on a connection's socket. One wait is left that neither reaches: a
// connect to a server that accepts TCP connections but does not answer. The client libraries
// take their connect timeout in whole seconds, at least 2 (libpq, MariaDB Connector/C), and the
// socket is theirs until the connect returns. So each invocation gets a ticket here: whoever
// claims it first answers the invocation, the loop with the handler's outcome or this
// reporter's thread with DeadlineExceeded, halfway through the margin (Lambda's deadline less
// WARMPOOL_DEADLINE_MARGIN_MS / 2). A handler that finishes later commits nothing (it checks its
// deadline before COMMIT), and its loop logs its outcome and takes the next event.
//
// The ticket also holds the one decision the reporter and the handler must share: whether
// COMMIT may be sent. The handler asks begin_commit() just before sending it; once the reporter
// has answered, the answer is no, and once COMMIT is on its way, the reporter's answer (if it
// must still give one, for a COMMIT the server does not answer) says the outcome is unknown
// instead of "nothing was committed". Either way a retry with the same request id is safe.

#include <warmpool/soci.hpp>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace ledger_example {

class deadline_reporter {
public:
    /// One invocation's right to be answered, claimed once.
    class ticket {
    public:
        ticket(std::string request_id, std::chrono::system_clock::time_point report_at)
            : request_id_(std::move(request_id)), report_at_(report_at) {}

        /// True for the first caller only: that caller answers the invocation.
        bool claim() noexcept;

        /// The handler is about to send COMMIT: true if the invocation is not answered yet, and
        /// from then on the reporter says COMMIT's outcome is unknown. False if the reporter
        /// has answered DeadlineExceeded: COMMIT must not be sent.
        bool begin_commit() noexcept;

        /// For a loop whose claim() failed: returns once the reporter's answer has been
        /// posted (or failed), so the loop's next GET /next cannot overtake it.
        void wait_until_answered();

    private:
        friend class deadline_reporter;
        void answered() noexcept;

        std::string request_id_;
        std::chrono::system_clock::time_point report_at_;
        std::mutex mutex_;
        std::condition_variable done_;
        bool claimed_ = false;
        bool answered_ = false;
        bool commit_started_ = false;
    };

    /// `endpoint` is AWS_LAMBDA_RUNTIME_API. The reporter's thread (with its own Runtime API
    /// client) starts here. If the Runtime API answers a report with HTTP 500, the process
    /// ends through end_process(pool, 1, …), as the loops do.
    deadline_reporter(std::string endpoint, warmpool::soci_pool& pool);

    deadline_reporter(const deadline_reporter&) = delete;
    deadline_reporter& operator=(const deadline_reporter&) = delete;

    /// A ticket the reporter claims at `report_at` unless the loop claimed it before.
    std::shared_ptr<ticket> watch(const std::string& request_id,
                                  std::chrono::system_clock::time_point report_at);

    /// The loop is done with the ticket (claimed or not): the reporter forgets it.
    void forget(const std::shared_ptr<ticket>& t) noexcept;

private:
    void run();

    std::string endpoint_;
    warmpool::soci_pool& pool_;
    std::mutex mutex_;
    std::condition_variable wakeup_;
    std::vector<std::shared_ptr<ticket>> watched_;
};

} // namespace ledger_example
