// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0

#include "runtime_api.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>

namespace ledger_example {
namespace {

// The POSTs answer at once (202 Accepted): a few seconds cover a slow moment without letting a
// hung Runtime API hold an invocation's thread for long. GETs that wait for an event have no
// timeout at all (see next()).
constexpr long post_timeout_ms = 5'000;
constexpr long post_connect_timeout_ms = 2'000;

// Error bodies are JSON; this header tells Lambda the error's type without parsing it.
constexpr const char* error_type_header = "Lambda-Runtime-Function-Error-Type: ";

// Lambda's longest timeout (15 minutes) and a minute for clocks that disagree.
constexpr std::chrono::milliseconds max_deadline_ahead{16LL * 60 * 1000};

bool same_name(const std::string& a, const char* b) {
    std::size_t i = 0;
    for (; i < a.size() && b[i] != '\0'; ++i) {
        if (std::tolower(static_cast<unsigned char>(a[i])) !=
            std::tolower(static_cast<unsigned char>(b[i]))) {
            return false;
        }
    }
    return i == a.size() && b[i] == '\0';
}

std::string trimmed(std::string s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) {
        s.pop_back();
    }
    std::size_t start = 0;
    while (start < s.size() && std::isspace(static_cast<unsigned char>(s[start]))) {
        ++start;
    }
    return s.substr(start);
}

/// A response body for an error message: one line, at most 200 characters.
std::string excerpt(const std::string& body) {
    std::string out = trimmed(body.substr(0, 200));
    for (char& c : out) {
        if (c == '\n' || c == '\r') {
            c = ' ';
        }
    }
    return out.empty() ? "(empty body)" : out;
}

/// Lambda-Runtime-Deadline-Ms as a time point, or empty when it is missing, malformed, or more
/// than max_deadline_ahead in the future. Lambda's longest timeout is 15 minutes, so a later
/// deadline is not Lambda's; it is refused rather than converted, because past about 9.2e12 ms
/// the conversion to system_clock's nanoseconds overflows and the deadline wraps into the past.
std::optional<std::chrono::system_clock::time_point> epoch_ms(const std::string& text) {
    if (text.empty() || !std::isdigit(static_cast<unsigned char>(text.front()))) {
        return std::nullopt;
    }
    errno = 0;
    char* end = nullptr;
    const long long ms = std::strtoll(text.c_str(), &end, 10);
    if (*end != '\0' || errno == ERANGE || ms <= 0) {
        return std::nullopt;
    }
    // Compared in milliseconds, where neither side can overflow: now is about 1.7e12 ms.
    const long long now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    if (ms > now_ms + max_deadline_ahead.count()) {
        return std::nullopt;
    }
    return std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
}

/// Frees a header list however the call that used it ends.
struct header_list_deleter {
    void operator()(curl_slist* list) const noexcept { curl_slist_free_all(list); }
};

} // namespace

runtime_api::runtime_api(const std::string& endpoint)
    : base_("http://" + endpoint + "/2018-06-01"), curl_(curl_easy_init()) {
    if (curl_ == nullptr) {
        throw runtime_api_error("curl_easy_init failed (out of memory?)", 0);
    }
}

runtime_api::~runtime_api() {
    curl_easy_cleanup(curl_);
}

std::size_t runtime_api::on_body(char* data, std::size_t size, std::size_t count, void* self) {
    static_cast<runtime_api*>(self)->current_.body.append(data, size * count);
    return size * count;
}

std::size_t runtime_api::on_header(char* data, std::size_t size, std::size_t count, void* self) {
    response& r = static_cast<runtime_api*>(self)->current_;
    const std::string line(data, size * count);
    const std::size_t colon = line.find(':');
    if (colon != std::string::npos) {
        const std::string name = line.substr(0, colon);
        const std::string value = trimmed(line.substr(colon + 1));
        if (same_name(name, "Lambda-Runtime-Aws-Request-Id")) {
            r.request_id = value;
        } else if (same_name(name, "Lambda-Runtime-Deadline-Ms")) {
            r.deadline_ms = value;
        } else if (same_name(name, "Lambda-Runtime-Invoked-Function-Arn")) {
            r.function_arn = value;
        } else if (same_name(name, "Lambda-Runtime-Trace-Id")) {
            r.trace_id = value;
        }
    }
    return size * count;
}

runtime_api::response runtime_api::perform(const std::string& what) {
    current_ = response{};
    curl_error_[0] = '\0';
    // Settings every call shares. curl_easy_reset() (called before each request) keeps the
    // handle's live connection, so these are set again each time.
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L); // no SIGALRM: threads, and a frozen process
    curl_easy_setopt(curl_, CURLOPT_NOPROXY, "*"); // the Runtime API is local: never via a proxy
    curl_easy_setopt(curl_, CURLOPT_ERRORBUFFER, curl_error_);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, &runtime_api::on_body);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, this);
    curl_easy_setopt(curl_, CURLOPT_HEADERFUNCTION, &runtime_api::on_header);
    curl_easy_setopt(curl_, CURLOPT_HEADERDATA, this);
    const CURLcode rc = curl_easy_perform(curl_);
    if (rc != CURLE_OK) {
        throw runtime_api_error(what + " failed: " +
                                    (curl_error_[0] != '\0' ? std::string(curl_error_)
                                                            : std::string(curl_easy_strerror(rc))),
                                0);
    }
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &current_.status);
    return std::move(current_);
}

runtime_api::response runtime_api::get(const std::string& path) {
    curl_easy_reset(curl_);
    const std::string url = base_ + path;
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_HTTPGET, 1L);
    // No CURLOPT_TIMEOUT: the call returns when an event arrives, which may be hours later, and
    // the process is frozen meanwhile; a timeout would only turn a quiet function into errors.
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, 0L);
    return perform("GET " + path);
}

runtime_api::response runtime_api::post(const std::string& path, const std::string& body,
                                        const char* error_type) {
    curl_easy_reset(curl_);
    const std::string url = base_ + path;
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_POST, 1L);
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, post_timeout_ms);
    curl_easy_setopt(curl_, CURLOPT_CONNECTTIMEOUT_MS, post_connect_timeout_ms);

    // Owned here and nowhere else: freed once, on return or throw.
    std::unique_ptr<curl_slist, header_list_deleter> headers;
    const auto append = [&headers](const char* line) {
        curl_slist* longer = curl_slist_append(headers.get(), line);
        if (longer == nullptr) {
            throw runtime_api_error("curl_slist_append failed (out of memory?)", 0);
        }
        (void)headers.release(); // the same list, now longer
        headers.reset(longer);
    };
    append("Content-Type: application/json");
    // Without this, curl sends "Expect: 100-continue" for large bodies and waits up to a second
    // for an interim answer that not every server sends.
    append("Expect:");
    if (error_type != nullptr) {
        append((error_type_header + std::string(error_type)).c_str());
    }
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers.get());
    response r = perform("POST " + path);
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, nullptr); // the list is freed on return
    if (r.status != 202) {
        throw runtime_api_error("POST " + path + " answered HTTP " + std::to_string(r.status) +
                                    ": " + excerpt(r.body),
                                r.status);
    }
    return r;
}

invocation runtime_api::next() {
    const response r = get("/runtime/invocation/next");
    if (r.status != 200) {
        throw runtime_api_error("GET /runtime/invocation/next answered HTTP " +
                                    std::to_string(r.status) + ": " + excerpt(r.body),
                                r.status);
    }
    if (r.request_id.empty()) {
        throw runtime_api_error("GET /runtime/invocation/next answered without a "
                                "Lambda-Runtime-Aws-Request-Id header",
                                r.status);
    }
    invocation inv;
    inv.request_id = r.request_id;
    inv.deadline = epoch_ms(r.deadline_ms);
    inv.deadline_header = r.deadline_ms;
    inv.function_arn = r.function_arn;
    inv.trace_id = r.trace_id;
    inv.body = r.body;
    return inv;
}

void runtime_api::respond(const std::string& request_id, const std::string& result_json) {
    post("/runtime/invocation/" + escaped(request_id) + "/response", result_json, nullptr);
}

void runtime_api::fail(const std::string& request_id, const error_report& error) {
    post("/runtime/invocation/" + escaped(request_id) + "/error", error_body(error),
         error.type.c_str());
}

void runtime_api::init_error(const error_report& error) {
    post("/runtime/init/error", error_body(error), error.type.c_str());
}

void runtime_api::restore_next() {
    const response r = get("/runtime/restore/next");
    if (r.status != 200) {
        throw runtime_api_error("GET /runtime/restore/next answered HTTP " +
                                    std::to_string(r.status) + ": " + excerpt(r.body),
                                r.status);
    }
}

void runtime_api::restore_error(const error_report& error) {
    post("/runtime/restore/error", error_body(error), error.type.c_str());
}

std::string runtime_api::escaped(const std::string& path_segment) {
    // Request ids are UUIDs; escaping keeps any other id from changing the path.
    char* e = curl_easy_escape(curl_, path_segment.data(), static_cast<int>(path_segment.size()));
    if (e == nullptr) {
        throw runtime_api_error("curl_easy_escape failed (out of memory?)", 0);
    }
    std::string out(e);
    curl_free(e);
    return out;
}

std::string runtime_api::error_body(const error_report& error) {
    // dump() replaces invalid UTF-8 (a backend's message in another encoding) instead of
    // throwing: the error must reach Lambda whatever its text.
    return nlohmann::json{{"errorMessage", error.message}, {"errorType", error.type}}.dump(
        -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

} // namespace ledger_example
