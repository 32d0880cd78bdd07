// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// A TCP relay between the pool and a real server, on 127.0.0.1, that can hold back the end of
// what a server sends. When PostgreSQL ends a session it writes its goodbye (a FATAL message;
// over TLS that record, then a close_notify alert) and closes the socket. On loopback all of it
// arrives within microseconds, but across a network the segment carrying the rest can be lost
// and resent hundreds of milliseconds later. Holding it back makes that moment last: the
// client's socket is readable, with no hang-up. Whatever the client sends after that is
// answered by closing its connection, as the server host's kernel would answer data for a
// closed socket with a reset.

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

namespace servers {

class tcp_relay {
public:
    /// Listens on 127.0.0.1 (a port the kernel picks) and relays every connection to
    /// 127.0.0.1:`server_port`.
    explicit tcp_relay(int server_port) : server_port_(server_port) {
        listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a = loopback(0);
        socklen_t len = sizeof a;
        if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
            ::listen(listener_, 16) != 0 ||
            ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
            const int err = errno;
            close_fd(listener_);
            throw std::runtime_error(std::string("tcp_relay: cannot listen on 127.0.0.1: ") +
                                     std::strerror(err));
        }
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] { run(); });
    }

    ~tcp_relay() {
        stop_ = true;
        thread_.join();
        for (pair& p : pairs_) {
            close_fd(p.client);
            close_fd(p.server);
        }
        close_fd(listener_);
    }
    tcp_relay(const tcp_relay&) = delete;
    tcp_relay& operator=(const tcp_relay&) = delete;

    int port() const { return port_; }

    /// What the relay holds back from now on, on the connections open now; those it accepts
    /// later (the pool's replacements) pass everything.
    enum class hold {
        nothing,
        hangup,                // the server's bytes pass, its hang-up does not
        after_first_tls_record // one whole TLS record passes; the rest and the hang-up do not
    };
    void hold_from_now(hold what) {
        hold_before_ = accepted_.load();
        hold_ = what;
    }

    /// How many server hang-ups were held back so far. One is counted once every byte the
    /// server sent before it reached the client's socket (nothing left unacknowledged).
    int held() const { return held_; }

    /// Bytes the clients sent so far (all connections), and connections still open.
    long long client_bytes() const { return client_bytes_; }
    int open_connections() const { return open_; }

private:
    struct pair {
        int client = -1;
        int server = -1;
        bool server_gone = false; // the server hung up and that was held back
        bool counted = false;     // ... and held_ counts it
        std::string record;       // after_first_tls_record: the record so far
        bool record_passed = false;
        int number = 0; // 0, 1, … in the order accepted
    };

    /// after_first_tls_record: collects the server's bytes until one TLS record (a five-byte
    /// header whose last two bytes are the length of what follows) is whole, passes it on and
    /// drops everything after it. False when the client is gone.
    bool pass_first_record(pair& p, const char* data, ssize_t n) {
        if (p.record_passed) {
            return true;
        }
        p.record.append(data, static_cast<std::size_t>(n));
        if (p.record.size() < 5) {
            return true;
        }
        const std::size_t length =
            5 + ((static_cast<std::size_t>(static_cast<unsigned char>(p.record[3])) << 8) |
                 static_cast<unsigned char>(p.record[4]));
        if (p.record.size() < length) {
            return true;
        }
        p.record_passed = true;
        return send_all(p.client, p.record.data(), static_cast<ssize_t>(length));
    }

    static sockaddr_in loopback(int port) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<std::uint16_t>(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return a;
    }

    static void close_fd(int& fd) {
        if (fd >= 0) {
            ::close(fd);
            fd = -1;
        }
    }

    /// Writes all of `n` bytes (the relay's sockets are blocking: loopback buffers drain fast).
    static bool send_all(int fd, const char* data, ssize_t n) {
        while (n > 0) {
            const ssize_t w = ::send(fd, data, static_cast<std::size_t>(n), MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w <= 0) {
                return false;
            }
            data += w;
            n -= w;
        }
        return true;
    }

    void accept_one() {
        const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) {
            return;
        }
        const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const sockaddr_in a = loopback(server_port_);
        if (server < 0 || ::connect(server, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
            ::close(client);
            if (server >= 0) {
                ::close(server);
            }
            return;
        }
        // As the servers do: Nagle's algorithm would hold a small write back until the client's
        // delayed acknowledgement of the previous one, tens of milliseconds later.
        const int on = 1;
        (void)::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        (void)::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        pairs_.push_back({client, server, false, false, {}, false, accepted_.load()});
        ++accepted_;
    }

    // One side readable: relay what it sent, or act on its end of stream.
    void from_server(pair& p) {
        char buf[16384];
        const ssize_t n = ::recv(p.server, buf, sizeof buf, 0);
        const hold mode = p.number < hold_before_ ? hold_.load() : hold::nothing;
        if (n > 0) {
            const bool sent = mode == hold::after_first_tls_record ? pass_first_record(p, buf, n)
                                                                   : send_all(p.client, buf, n);
            if (!sent) {
                close_fd(p.client);
                close_fd(p.server);
            }
            return;
        }
        if (n < 0 && errno == EINTR) {
            return;
        }
        if (mode != hold::nothing) {
            close_fd(p.server);
            p.server_gone = true;
        } else {
            close_fd(p.client);
            close_fd(p.server);
        }
    }

    void from_client(pair& p) {
        char buf[16384];
        const ssize_t n = ::recv(p.client, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) {
            return;
        }
        if (n > 0) {
            client_bytes_ += n;
        }
        if (n > 0 && !p.server_gone && send_all(p.server, buf, n)) {
            return;
        }
        // The client ended, or wrote to a session whose server is gone: a reset, in effect.
        close_fd(p.client);
        close_fd(p.server);
    }

    void run() {
        while (!stop_) {
            std::vector<pollfd> fds{{listener_, POLLIN, 0}};
            for (const pair& p : pairs_) {
                fds.push_back({p.client, POLLIN, 0});
                fds.push_back({p.server_gone ? -1 : p.server, POLLIN, 0});
            }
            // A short timeout, so that the destructor's stop is seen promptly and a held hang-up
            // is counted once its last bytes were acknowledged.
            if (::poll(fds.data(), fds.size(), 5) < 0) {
                continue;
            }
            const std::size_t count = pairs_.size();
            for (std::size_t i = 0; i < count; ++i) {
                if (fds[1 + 2 * i + 1].revents != 0 && pairs_[i].server >= 0) {
                    from_server(pairs_[i]);
                }
                if (fds[1 + 2 * i].revents != 0 && pairs_[i].client >= 0) {
                    from_client(pairs_[i]);
                }
            }
            if (fds[0].revents != 0) {
                accept_one();
            }
            for (pair& p : pairs_) {
                int unacknowledged = 0;
                if (p.server_gone && !p.counted && p.client >= 0 &&
                    ::ioctl(p.client, SIOCOUTQ, &unacknowledged) == 0 && unacknowledged == 0) {
                    p.counted = true;
                    ++held_;
                }
            }
            std::vector<pair> open;
            for (const pair& p : pairs_) {
                if (p.client >= 0) {
                    open.push_back(p);
                }
            }
            pairs_.swap(open);
            open_ = static_cast<int>(pairs_.size());
        }
    }

    int server_port_;
    int listener_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<hold> hold_{hold::nothing};
    std::atomic<int> hold_before_{0}; // hold_ applies to the connections numbered below this
    std::atomic<int> accepted_{0};
    std::atomic<int> held_{0};
    std::atomic<long long> client_bytes_{0};
    std::atomic<int> open_{0};
    std::vector<pair> pairs_; // only the relay's thread touches it until the destructor joins
    std::thread thread_;
};

} // namespace servers
