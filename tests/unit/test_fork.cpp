#include "support/fixture.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <new>
#include <thread>

#if defined(__unix__)
#include <sys/wait.h>
#include <unistd.h>
#endif

using namespace warmpool_test;
using warmpool::event_type;

namespace {

// What pthread_atfork's child handler tells the pools in a real child process.
void pretend_we_are_the_child() {
    warmpool::detail::mark_forked();
}

} // namespace

TEST_CASE("after a fork the child abandons inherited idle connections without closing them") {
    fixture f;
    warmpool::options o;
    o.max_size = 3;
    o.min_idle = 2;
    pool p(f.server, f.recorded(o));
    p.warm_up();
    pretend_we_are_the_child();
    auto l = p.acquire();
    CHECK(l->number == 3);           // a connection of its own
    CHECK(f.server->destroyed == 0); // nothing sent on the parent's sockets
    const auto s = p.stats();
    CHECK(s.forks == 1);
    CHECK(s.open == 1);
    CHECK(f.count(event_type::forked) == 1);
    l.release();
    p.close();
    CHECK(f.server->destroyed == 1);
    CHECK(f.server->reap_abandoned() == 2);
}

TEST_CASE("a lease held across a fork is abandoned, not rolled back, when given back") {
    fixture f;
    pool p(f.server);
    auto l = p.acquire();
    l->in_tx = true;
    mock_connection* inherited = l.get();
    pretend_we_are_the_child();
    l.release();
    CHECK(inherited->rollbacks == 0);
    CHECK(f.server->destroyed == 0);
    CHECK(p.stats().open == 0);
    auto m = p.acquire();
    CHECK(m->number == 2);
    m.release();
    p.close();
    CHECK(f.server->reap_abandoned() == 1);
}

TEST_CASE("a lease given back across a fork is forgotten without an event or a count") {
    fixture f;
    pool p(f.server, f.recorded());
    auto l = p.acquire();
    const auto before = p.stats();
    const auto events_before = f.events.size();
    pretend_we_are_the_child();
    l.release(); // the slot is freed here; nothing may read it afterwards
    CHECK(f.count(event_type::released) == 0);
    REQUIRE(f.events.size() == events_before + 1); // only the fork, announced by who noticed it
    CHECK(f.events.back().type == event_type::forked);
    const auto after = p.stats();
    CHECK(after.open == 0);
    CHECK(after.in_use == 0);
    CHECK(after.closed == before.closed);
    p.close();
    CHECK(f.server->destroyed == 0);
    CHECK(f.server->reap_abandoned() == 1);
}

TEST_CASE("the child neither counts nor closes connections its parent had leased out") {
    fixture f;
    warmpool::options o;
    o.max_size = 1;
    o.acquire_timeout = 0ms;
    auto p = std::make_unique<pool>(f.server, o);
    // A lease held by another thread of the parent: in the child that thread, and so its lease,
    // never runs again. Storage that is never destroyed plays its stack.
    alignas(pool::lease) unsigned char parent_stack[sizeof(pool::lease)];
    auto* theirs = new (parent_stack) pool::lease(p->acquire());
    mock_connection* parents = theirs->get();
    pretend_we_are_the_child();
    {
        auto mine = p->acquire(); // max_size 1: the parent's lease must not hold the only slot
        CHECK(mine.get() != parents);
        CHECK(p->stats().open == 1);
        CHECK(p->stats().in_use == 1);
    }
    p.reset();                       // the child's pool ends: the parent's session must survive it
    CHECK(f.server->destroyed == 1); // the child's own connection only
    CHECK(parents->rollbacks == 0);
    CHECK(parents->pings == 0);
    CHECK(f.server->reap_abandoned() == 1);
}

#if defined(__unix__)
namespace {

// Runs `child` in a forked process, which must exit 0 within 20 s (a hang is a failure).
int in_child_process(const std::function<int()>& child) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::alarm(20);
        int code = 99;
        try {
            code = child();
        } catch (...) {
            code = 98;
        }
        ::_exit(code); // skips destructors that would run the parent's clean-up a second time
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    if (WIFSIGNALED(status)) {
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}

} // namespace

TEST_CASE("a child destroys a pool whose housekeeping thread was waiting when it forked") {
    fixture f;
    manual_clock::set_auto_advance(false);
    manual_clock::set_polling(false); // the housekeeper sleeps until notified
    warmpool::options o;
    o.background_housekeeping = true;
    o.housekeeping_interval = 10s;
    pool p(f.server, o);
    for (long i = 0; i < 100'000'000 && manual_clock::waits() == 0; ++i) {
        std::this_thread::yield();
    }
    REQUIRE(manual_clock::waits() > 0);
    (void)p.stats(); // takes the pool's lock: the housekeeper has released it inside its wait
    const int code = in_child_process([&] {
        auto* q = &p;
        q->~pool(); // what the child's exit() would do to a static pool; it must not hang
        new (q) pool(f.server, warmpool::options{}); // leave an object for the parent's copy
        return 0;
    });
    CHECK(code == 0);
}

TEST_CASE("forking while another thread is inside the pool leaves the child a usable pool") {
    // fork() copies the pool's lock in whatever state it is in; the atfork handlers take it
    // first, so the child never finds it held by a thread that does not exist there.
    fixture f;
    warmpool::options o;
    o.max_size = 2;
    pool p(f.server, o);
    std::atomic<bool> stop{false};
    std::atomic<long> cycles{0};
    std::thread busy([&] {
        while (!stop.load()) {
            auto l = p.acquire();
            (void)p.stats();
            ++cycles;
        }
    });
    // Past its first connect, the busy thread holds no lock but the pool's (the mock server's
    // own lock is taken only to connect and close).
    while (cycles.load() < 10) {
        std::this_thread::yield();
    }
    int failures = 0;
    for (int i = 0; i < 30 && failures == 0; ++i) {
        failures += in_child_process([&] {
                        auto l =
                            p.acquire(); // would wait forever on a lock held by the busy thread
                        return (p.stats().forks == 1 && p.stats().open == 1) ? 0 : 1;
                    }) != 0;
    }
    stop = true;
    busy.join();
    CHECK(failures == 0);
}

TEST_CASE("a real fork: the child connects anew and the parent keeps its connection") {
    fixture f;
    pool p(f.server);
    mock_connection* parents = nullptr;
    {
        auto l = p.acquire();
        parents = l.get();
    }
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // In the child: exit codes tell the parent what went wrong; _exit skips destructors that
        // would run the parent's clean-up a second time.
        int code = 0;
        try {
            auto l = p.acquire();
            if (l.get() == parents) {
                code = 2;
            } else if (p.stats().forks != 1) {
                code = 3;
            } else if (f.server->destroyed != 0) {
                code = 4;
            }
        } catch (...) {
            code = 5;
        }
        ::_exit(code);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    auto l = p.acquire();
    CHECK(l.get() == parents);
    CHECK(p.stats().forks == 0);
}
#endif

TEST_CASE("stats() in a child shows the child's pool and announces the fork") {
    fixture f;
    warmpool::options o;
    o.min_idle = 2;
    pool p(f.server, f.recorded(o));
    p.warm_up();
    pretend_we_are_the_child();
    const auto s = p.stats();
    CHECK(s.open == 0);
    CHECK(s.idle == 0);
    CHECK(s.forks == 1);
    CHECK(f.count(event_type::forked) == 1);
    p.close();
    CHECK(f.server->destroyed == 0);
    CHECK(f.server->reap_abandoned() == 2);
}
