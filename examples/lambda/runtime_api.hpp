// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// A client of the Lambda Runtime API (2018-06-01) over libcurl:
// https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html
//
// One runtime_api per thread: it owns one CURL easy handle, reused for every call so the
// connection to the Runtime API is kept alive between invocations. Call
// curl_global_init() once before creating any (main() does, before starting threads).

#include <curl/curl.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>

namespace ledger_example {

/// A call to the Runtime API failed: no answer (curl's error) or an unexpected HTTP status
/// (status() > 0, the body in the message).
class runtime_api_error : public std::runtime_error {
public:
    runtime_api_error(const std::string& what, long status)
        : std::runtime_error(what), status_(status) {}

    /// The HTTP status, or 0 when no response arrived.
    long status() const noexcept { return status_; }

private:
    long status_;
};

/// One event, as GET /runtime/invocation/next hands it over.
struct invocation {
    std::string request_id; // Lambda-Runtime-Aws-Request-Id
    // Lambda-Runtime-Deadline-Ms (Unix epoch ms); empty if the header was missing, malformed or
    // more than 16 minutes ahead (Lambda's longest timeout is 15), which the real Runtime API
    // never sends.
    std::optional<std::chrono::system_clock::time_point> deadline;
    std::string deadline_header; // as received, for the InvalidInvocation message
    std::string function_arn;    // Lambda-Runtime-Invoked-Function-Arn
    std::string trace_id;        // Lambda-Runtime-Trace-Id (may be empty)
    std::string body;            // the event, JSON
};

/// An error as the Runtime API takes it: {"errorMessage": …, "errorType": …}.
struct error_report {
    std::string type;
    std::string message;
};

class runtime_api {
public:
    /// `endpoint` is AWS_LAMBDA_RUNTIME_API: host:port.
    explicit runtime_api(const std::string& endpoint);
    ~runtime_api();

    runtime_api(const runtime_api&) = delete;
    runtime_api& operator=(const runtime_api&) = delete;

    /// GET /runtime/invocation/next. Blocks until an event arrives, with no timeout: Lambda
    /// freezes the process while it waits, for as long as no event comes.
    invocation next();

    /// POST /runtime/invocation/{id}/response with the result (JSON).
    void respond(const std::string& request_id, const std::string& result_json);

    /// POST /runtime/invocation/{id}/error.
    void fail(const std::string& request_id, const error_report& error);

    /// POST /runtime/init/error: the init phase failed; the process should exit non-zero.
    void init_error(const error_report& error);

    /// GET /runtime/restore/next (SnapStart): returns in the copy restored from the snapshot
    /// taken while it blocked. No timeout, like next().
    void restore_next();

    /// POST /runtime/restore/error: an after-restore step failed.
    void restore_error(const error_report& error);

private:
    struct response {
        long status = 0;
        std::string body;
        std::string request_id, deadline_ms, function_arn, trace_id;
    };

    response get(const std::string& path);
    response post(const std::string& path, const std::string& body, const char* error_type);
    response perform(const std::string& what);
    std::string escaped(const std::string& path_segment);
    static std::string error_body(const error_report& error);

    static std::size_t on_body(char* data, std::size_t size, std::size_t count, void* self);
    static std::size_t on_header(char* data, std::size_t size, std::size_t count, void* self);

    std::string base_; // http://host:port/2018-06-01
    CURL* curl_;       // one easy handle, reused: keeps the connection alive
    response current_; // filled by the callbacks during perform()
    char curl_error_[CURL_ERROR_SIZE] = {};
};

} // namespace ledger_example
