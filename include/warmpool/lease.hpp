// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <warmpool/pool.hpp>

#include <cstdint>
#include <utility>

namespace warmpool {

/// Exclusive use of one pooled connection, given back when the lease is destroyed.
///
/// Move-only. Giving back never throws: an open transaction is rolled back, and a connection
/// that is broken, or whose rollback failed, is closed instead of pooled. A lease must not
/// outlive its pool.
template <class Traits, class Clock>
class basic_pool<Traits, Clock>::lease {
public:
    /// An empty lease, holding nothing.
    lease() noexcept = default;

    lease(lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)), slot_(std::exchange(other.slot_, nullptr)) {}

    lease& operator=(lease&& other) noexcept {
        if (this != &other) {
            release();
            pool_ = std::exchange(other.pool_, nullptr);
            slot_ = std::exchange(other.slot_, nullptr);
        }
        return *this;
    }

    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;

    ~lease() { release(); }

    /// The connection. The lease must not be empty.
    connection_type& operator*() const noexcept { return *slot_->conn; }
    connection_type* operator->() const noexcept { return slot_->conn.get(); }

    /// The connection, or nullptr for an empty lease.
    connection_type* get() const noexcept { return slot_ ? slot_->conn.get() : nullptr; }

    explicit operator bool() const noexcept { return slot_ != nullptr; }

    /// The pool's id for this connection (1, 2, …; as in events), or 0 for an empty lease.
    std::uint64_t connection_id() const noexcept { return slot_ ? slot_->id : 0; }

    /// Gives the connection back now; the lease becomes empty. No-op on an empty lease.
    void release() noexcept {
        if (slot_ != nullptr) {
            std::exchange(pool_, nullptr)->give_back(std::exchange(slot_, nullptr), false);
        }
    }

    /// Closes the connection instead of giving it back (after an error that may have left it in
    /// an unknown state); the pool opens a new one when needed. The lease becomes empty.
    void invalidate() noexcept {
        if (slot_ != nullptr) {
            std::exchange(pool_, nullptr)->give_back(std::exchange(slot_, nullptr), true);
        }
    }

private:
    friend class basic_pool;

    lease(basic_pool* pool, slot* s) noexcept : pool_(pool), slot_(s) {}

    basic_pool* pool_ = nullptr;
    slot* slot_ = nullptr;
};

} // namespace warmpool
