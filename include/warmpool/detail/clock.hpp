// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// How the pool reads time and waits, for any Clock. The pool never names a real clock itself:
// tests plug in a manual clock, production uses std::chrono::steady_clock.
//
// A Clock may optionally provide
//   using wall_clock = ...;  // a second clock that keeps running while the process is frozen
//   static void wait_until(std::condition_variable&, std::unique_lock<std::mutex>&, time_point);
// For std::chrono::steady_clock the wall clock is std::chrono::system_clock.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <type_traits>
#include <utility>

#if defined(__linux__)
#include <time.h>
#endif

namespace warmpool {
namespace detail {

template <class C, class = void>
struct wall_clock_of {
    // A clock with no wall clock of its own measures idle time with itself alone.
    using type = std::conditional_t<std::is_same<C, std::chrono::steady_clock>::value,
                                    std::chrono::system_clock, C>;
};
template <class C>
struct wall_clock_of<C, std::void_t<typename C::wall_clock>> {
    using type = typename C::wall_clock;
};

template <class C, class = void>
struct has_wait_until : std::false_type {};
template <class C>
struct has_wait_until<
    C, std::void_t<decltype(C::wait_until(std::declval<std::condition_variable&>(),
                                          std::declval<std::unique_lock<std::mutex>&>(),
                                          std::declval<typename C::time_point>()))>>
    : std::true_type {};

#if defined(__linux__)
// The coarse clocks cost a few nanoseconds where clock_gettime(CLOCK_MONOTONIC) costs tens on
// virtual machines; their ~4 ms resolution is ample for windows and timeouts counted in
// milliseconds. They run on the same timelines as steady_clock and system_clock (libstdc++ and
// libc++ both read CLOCK_MONOTONIC and CLOCK_REALTIME), so their readings mix with those clocks'.
template <class TimePoint>
inline TimePoint read_coarse(clockid_t id) noexcept {
    timespec ts{};
    ::clock_gettime(id, &ts);
    const auto since_epoch = std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
    return TimePoint(std::chrono::duration_cast<typename TimePoint::duration>(since_epoch));
}
#endif

/// Cheap reading of any clock: the coarse kernel clock where the clock is one of the standard
/// ones on Linux, Clock::now() otherwise. For timestamps compared against millisecond limits.
template <class C>
inline typename C::time_point cheap_now() noexcept {
#if defined(__linux__)
    if constexpr (std::is_same<C, std::chrono::steady_clock>::value) {
        return read_coarse<typename C::time_point>(CLOCK_MONOTONIC_COARSE);
    } else if constexpr (std::is_same<C, std::chrono::system_clock>::value) {
        return read_coarse<typename C::time_point>(CLOCK_REALTIME_COARSE);
    } else {
        return C::now();
    }
#else
    return C::now();
#endif
}

/// Blocks on `cv` until notified, or until `deadline` by Clock, or spuriously. Callers loop.
template <class C>
inline void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                       typename C::time_point deadline) {
    if constexpr (has_wait_until<C>::value) {
        C::wait_until(cv, lock, deadline);
    } else {
        // One wait lasts an hour at most: the standard library adds the time left to its own
        // clock's now(), which overflows for a deadline near time_point::max(), and an overflowed
        // wait returns at once: a busy spin holding the lock. Callers loop until their deadline.
        const auto left =
            std::min<typename C::duration>(deadline - C::now(), std::chrono::hours(1));
        if (left > C::duration::zero()) {
            cv.wait_for(lock, left);
        }
    }
}

} // namespace detail
} // namespace warmpool
