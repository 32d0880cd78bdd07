#include "support/fixture.hpp"

#include <doctest/doctest.h>

#if defined(__unix__)
#include <sys/wait.h>
#include <unistd.h>
#endif

using namespace warmpool_test;
using warmpool::event_type;

namespace {

// What pthread_atfork's child handler does in a real child process.
void pretend_we_are_the_child() {
    warmpool::detail::on_fork_child();
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

TEST_CASE("events for a lease given back across a fork name its connection") {
    fixture f;
    pool p(f.server, f.recorded());
    auto l = p.acquire();
    pretend_we_are_the_child();
    l.release(); // the slot is forgotten here; the event must not read it afterwards
    bool released = false;
    for (const auto& e : f.events) {
        released = released || (e.type == event_type::released && e.connection_id == 1);
    }
    CHECK(released);
    p.close();
    CHECK(f.server->reap_abandoned() == 1);
}

#if defined(__unix__)
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
