// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Tools for the tests that break real servers on purpose: control commands with a guard that
// always brings the server back, SIGSTOP with a guard that always resumes, bounded polling,
// connect string edits, server-side ids of a session, and child processes that report back
// through a pipe.

#include "servers.hpp"

#include <warmpool/soci.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <cerrno>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace servers {

using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

/// Milliseconds since `start`.
inline long long elapsed_ms(steady::time_point start) {
    return std::chrono::duration_cast<milliseconds>(steady::now() - start).count();
}

/// Polls `done` every `step` until it returns true or `timeout` passes. True when it did.
template <class F>
bool eventually(F&& done, milliseconds timeout, milliseconds step = milliseconds{20}) {
    const auto until = steady::now() + timeout;
    for (;;) {
        if (done()) {
            return true;
        }
        if (steady::now() >= until) {
            return false;
        }
        std::this_thread::sleep_for(step);
    }
}

/// Runs the control command named by `ctl_var` (see scripts/servers.sh) with one action:
/// start, stop, status, … Its exit status; -1 when the variable is unset.
inline int control(const char* ctl_var, const char* action) {
    const char* ctl = env(ctl_var);
    if (ctl == nullptr) {
        return -1;
    }
    const std::string command = "'" + std::string(ctl) + "' " + action + " >/dev/null 2>&1";
    const int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// Brings the server back when the scope ends, whatever happened in it: later tests (and other
/// CI stages) need it running.
class keep_running {
public:
    explicit keep_running(const char* ctl_var) : ctl_var_(ctl_var) {}
    ~keep_running() {
        if (control(ctl_var_, "status") != 0) {
            (void)control(ctl_var_, "start");
        }
    }
    keep_running(const keep_running&) = delete;
    keep_running& operator=(const keep_running&) = delete;

private:
    const char* ctl_var_;
};

/// True when every thread of `pid` is stopped (Linux: the state letter in /proc/PID/task/*/stat).
inline bool all_threads_stopped(pid_t pid) {
    std::error_code ec;
    const std::filesystem::path tasks = "/proc/" + std::to_string(pid) + "/task";
    bool any = false;
    for (const auto& task : std::filesystem::directory_iterator(tasks, ec)) {
        std::ifstream stat(task.path() / "stat");
        std::string line;
        std::getline(stat, line);
        const std::size_t paren = line.rfind(')'); // the command name may hold spaces
        if (paren == std::string::npos || paren + 2 >= line.size()) {
            continue; // the thread just ended
        }
        const char state = line[paren + 2];
        if (state != 'T' && state != 't') {
            return false;
        }
        any = true;
    }
    return any;
}

/// SIGSTOPs a process and SIGCONTs it when the scope ends (or earlier, by resume()). The
/// constructor returns once every thread has stopped: kill() only queues the signal, and a
/// server thread may still answer a query sent right after it.
class stopped_process {
public:
    explicit stopped_process(pid_t pid) : pid_(pid), signalled_(::kill(pid, SIGSTOP) == 0) {
        stopped_ = signalled_ && eventually([&] { return all_threads_stopped(pid_); },
                                            milliseconds{5'000}, milliseconds{1});
    }
    ~stopped_process() { resume(); }
    stopped_process(const stopped_process&) = delete;
    stopped_process& operator=(const stopped_process&) = delete;

    bool stopped() const { return stopped_; }
    void resume() {
        if (signalled_) {
            ::kill(pid_, SIGCONT);
            signalled_ = false;
            stopped_ = false;
        }
    }

private:
    pid_t pid_;
    bool signalled_;
    bool stopped_ = false;
};

// --- connect strings -----------------------------------------------------------------------

/// `cs` ("backend://k=v k=v …", keyword form) without its `key=…` word.
inline std::string without_param(const std::string& cs, const std::string& key) {
    const std::size_t sep = cs.find("://");
    const std::string scheme = sep == std::string::npos ? "" : cs.substr(0, sep + 3);
    const std::string params = sep == std::string::npos ? cs : cs.substr(sep + 3);
    std::vector<std::string> words;
    std::string word;
    bool quoted = false;
    for (const char c : params) {
        if (c == '\'') {
            quoted = !quoted;
        }
        if (c == ' ' && !quoted) {
            if (!word.empty()) {
                words.push_back(word);
            }
            word.clear();
        } else {
            word += c;
        }
    }
    if (!word.empty()) {
        words.push_back(word);
    }
    std::string out = scheme;
    for (const std::string& w : words) {
        if (w.rfind(key + "=", 0) != 0) {
            out += (out.size() > scheme.size() ? " " : "") + w;
        }
    }
    return out;
}

/// `cs` with `key` set to `value`: an existing `key=…` word is dropped, the new one appended.
/// Values with spaces must be quoted by the caller ("options='-c a=b'"). SOCI's MySQL parser
/// rejects a repeated key, hence no plain append.
inline std::string with_param(const std::string& cs, const std::string& key,
                              const std::string& value) {
    return without_param(cs, key) + " " + key + "=" + value;
}

// --- sessions outside any pool -------------------------------------------------------------

/// A plain session for looking at and acting on the server (pg_stat_activity, KILL, …).
inline std::unique_ptr<soci::session> admin_session(const std::string& cs) {
    return warmpool::soci_traits::connect(cs, milliseconds{10'000});
}

/// What most tests against a real server start from: `max_size` connections, and a generous
/// acquire deadline.
inline warmpool::options pool_of(std::size_t max_size) {
    warmpool::options o;
    o.max_size = max_size;
    o.acquire_timeout = milliseconds{10'000};
    return o;
}

/// The server's id for the session: PostgreSQL's backend pid, MySQL's connection id.
inline long long pg_backend_pid(soci::session& s) {
    long long pid = 0;
    s << "select pg_backend_pid()", soci::into(pid);
    return pid;
}

inline long long mysql_connection_id(soci::session& s) {
    long long id = 0;
    s << "select connection_id()", soci::into(id);
    return id;
}

inline bool pg_backend_exists(soci::session& admin, long long pid) {
    long long n = 0;
    admin << "select count(*) from pg_stat_activity where pid = :pid", soci::use(pid),
        soci::into(n);
    return n > 0;
}

inline bool mysql_connection_exists(soci::session& admin, long long id) {
    long long n = 0;
    admin << "select count(*) from information_schema.processlist where id = :id", soci::use(id),
        soci::into(n);
    return n > 0;
}

/// Asks PostgreSQL to end a backend, if it still exists (no warning for one already gone).
inline void pg_terminate(soci::session& admin, long long pid) {
    long long n = 0;
    admin << "select count(pg_terminate_backend(pid)) from pg_stat_activity where pid = :pid",
        soci::use(pid), soci::into(n);
}

/// Waits (bounded) until the server has forgotten the session: then its socket is closed too.
inline bool pg_backend_gone(soci::session& admin, long long pid,
                            milliseconds timeout = milliseconds{10'000}) {
    return eventually([&] { return !pg_backend_exists(admin, pid); }, timeout);
}

// --- child processes -----------------------------------------------------------------------

/// A forked child running `body(report)`; `report` is a stream whose text reaches the parent
/// through a pipe when the child ends. The child never returns into doctest: it leaves with
/// _exit(), so no destructor of the parent's objects runs there.
class child {
public:
    template <class F>
    explicit child(F&& body) {
        int out[2];
        int in[2];
        if (::pipe(out) != 0 || ::pipe(in) != 0) {
            return;
        }
        std::fflush(nullptr);
        pid_ = ::fork();
        if (pid_ == 0) {
            ::close(out[0]);
            ::close(in[1]);
            to_parent_ = out[1];
            from_parent_ = in[0];
            int code = 0;
            std::ostringstream report;
            try {
                code = body(*this, report);
            } catch (const std::exception& e) {
                report << "exception=" << e.what() << "\n";
                code = 100;
            } catch (...) {
                report << "exception=unknown\n";
                code = 101;
            }
            write_all(to_parent_, report.str());
            ::_exit(code);
        }
        ::close(out[1]);
        ::close(in[0]);
        if (pid_ < 0) {
            ::close(out[0]);
            ::close(in[1]);
            return;
        }
        from_child_ = out[0];
        to_child_ = in[1];
    }

    ~child() {
        if (to_child_ >= 0) {
            ::close(to_child_);
        }
        if (pid_ > 0 && !reaped_) {
            ::kill(pid_, SIGCONT);
            ::kill(pid_, SIGKILL);
            (void)wait();
        }
        if (from_child_ >= 0) {
            ::close(from_child_);
        }
    }
    child(const child&) = delete;
    child& operator=(const child&) = delete;

    pid_t pid() const { return pid_; }
    bool started() const { return pid_ > 0; }

    // In the child: send a line now (before the final report), or wait for the parent's go.
    void tell_parent(const std::string& line) const { write_all(to_parent_, line + "\n"); }
    bool wait_for_parent() const {
        char c = 0;
        for (;;) {
            const ssize_t n = ::read(from_parent_, &c, 1);
            if (n >= 0 || errno != EINTR) {
                return n == 1;
            }
        }
    }

    // In the parent: one line the child sent with tell_parent(); "" at end of stream.
    std::string read_line() {
        std::string line;
        char c = 0;
        for (;;) {
            const ssize_t n = ::read(from_child_, &c, 1);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0 || c == '\n') {
                return line;
            }
            line += c;
        }
    }
    void go() {
        const char c = 'g';
        (void)::write(to_child_, &c, 1);
    }

    /// Waits for the child to end; its exit code (128 + signal when killed).
    int wait() {
        if (pid_ <= 0 || reaped_) {
            return status_;
        }
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        reaped_ = true;
        status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return status_;
    }

    /// Everything the child reported, as key=value lines, after it ended.
    std::map<std::string, std::string> results() {
        std::string all;
        char buf[4096];
        for (;;) {
            const ssize_t n = ::read(from_child_, buf, sizeof buf);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                break;
            }
            all.append(buf, static_cast<std::size_t>(n));
        }
        (void)wait();
        std::map<std::string, std::string> kv;
        std::istringstream lines(all);
        std::string line;
        while (std::getline(lines, line)) {
            const std::size_t eq = line.find('=');
            if (eq != std::string::npos) {
                kv[line.substr(0, eq)] = line.substr(eq + 1);
            }
        }
        return kv;
    }

private:
    static void write_all(int fd, const std::string& s) {
        std::size_t done = 0;
        while (fd >= 0 && done < s.size()) {
            const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                return;
            }
            done += static_cast<std::size_t>(n);
        }
    }

    pid_t pid_ = -1;
    int from_child_ = -1;
    int to_child_ = -1;
    int to_parent_ = -1;
    int from_parent_ = -1;
    bool reaped_ = false;
    int status_ = -1;
};

/// What a crowd of client processes saw.
struct crowd_outcome {
    int succeeded = 0;
    std::vector<std::string> errors;    // each failed client's connect_error message
    std::vector<std::string> transient; // and its transient() ("1" or "0")
};

/// `clients` processes, each with its own single-slot pool, start together: acquire, run
/// "select 1", hold the connection 200 ms, give it back, exit. With `retry` off a client makes
/// one connect attempt (options::connect_attempts = 1); on, the default jittered backoff.
inline crowd_outcome crowd(const std::string& cs, int clients, bool retry) {
    std::vector<std::unique_ptr<child>> kids;
    for (int i = 0; i < clients; ++i) {
        kids.push_back(std::make_unique<child>([&](child& self, std::ostream& report) {
            warmpool::options o = warmpool::options::single_slot();
            if (!retry) {
                o.connect_attempts = 1;
            }
            warmpool::soci_pool pool(cs, o);
            if (!self.wait_for_parent()) {
                return 2;
            }
            try {
                auto sql = pool.acquire();
                int one = 0;
                *sql << "select 1", soci::into(one);
                std::this_thread::sleep_for(milliseconds{200});
                report << "ok=1\n";
                return 0;
            } catch (const warmpool::connect_error& e) {
                report << "error=" << e.what() << "\ntransient=" << e.transient() << "\n";
                return 1;
            }
        }));
        if (!kids.back()->started()) {
            return {};
        }
    }
    for (auto& k : kids) {
        k->go(); // all at once
    }
    crowd_outcome out;
    for (auto& k : kids) {
        auto r = k->results();
        if (r["ok"] == "1") {
            ++out.succeeded;
        } else {
            out.errors.push_back(r.count("error") != 0 ? r["error"]
                                                       : "no report; exception=" + r["exception"]);
            out.transient.push_back(r["transient"]);
        }
    }
    return out;
}

} // namespace servers
