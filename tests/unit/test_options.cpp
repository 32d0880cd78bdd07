#include "support/fixture.hpp"

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

using namespace warmpool_test;
using warmpool::options;

namespace {

std::string rejection(const options& o) {
    try {
        pool p(std::make_shared<mock_server>(), o);
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST_CASE("defaults are the documented ones") {
    const options o;
    CHECK(o.max_size == 10);
    CHECK(o.min_idle == 0);
    CHECK(o.acquire_timeout == 30s);
    CHECK(o.handoff_after == 1ms);
    CHECK(o.validation_window == 500ms);
    CHECK(o.validation_timeout == 5s);
    CHECK(o.socket_check_after == 0ms);
    CHECK(o.idle_timeout == 10min);
    CHECK(o.max_lifetime == 30min);
    CHECK(o.connect_backoff_base == 10ms);
    CHECK(o.connect_backoff_cap == 1s);
    CHECK(o.connect_attempts == 0);
    CHECK(o.leak_threshold == 0ms);
    CHECK_FALSE(o.background_housekeeping);
    CHECK(o.housekeeping_interval == 30s);
    CHECK_NOTHROW(o.validate());
}

TEST_CASE("the single-slot preset holds one lazily opened connection and starts no thread") {
    const options o = options::single_slot();
    CHECK(o.max_size == 1);
    CHECK(o.min_idle == 0);
    CHECK_FALSE(o.background_housekeeping);
    CHECK(o.validation_window == 500ms);
    CHECK(o.connect_attempts == 0);
    CHECK(o.connect_backoff_base > 0ms);
    CHECK_NOTHROW(o.validate());
}

TEST_CASE("an invalid option is rejected at construction, naming the field") {
    options o;
    o.max_size = 0;
    CHECK(rejection(o).find("options::max_size is 0") != std::string::npos);

    o = options{};
    o.max_size = 2;
    o.min_idle = 3;
    CHECK(rejection(o).find("options::min_idle is 3, more than max_size (2)") != std::string::npos);

    o = options{};
    o.acquire_timeout = -1ms;
    CHECK(rejection(o).find("options::acquire_timeout is -1 ms") != std::string::npos);

    o = options{};
    o.handoff_after = -1ms;
    CHECK(rejection(o).find("options::handoff_after is -1 ms") != std::string::npos);

    o = options{};
    o.idle_timeout = -5ms;
    CHECK(rejection(o).find("options::idle_timeout") != std::string::npos);

    o = options{};
    o.max_lifetime = -5ms;
    CHECK(rejection(o).find("options::max_lifetime") != std::string::npos);

    o = options{};
    o.validation_window = -5ms;
    CHECK(rejection(o).find("options::validation_window") != std::string::npos);

    o = options{};
    o.validation_timeout = 0ms;
    CHECK(rejection(o).find("options::validation_timeout is 0 ms; it must be > 0") !=
          std::string::npos);

    o = options{};
    o.leak_threshold = -1ms;
    CHECK(rejection(o).find("options::leak_threshold") != std::string::npos);

    o = options{};
    o.connect_backoff_base = 50ms;
    o.connect_backoff_cap = 10ms;
    CHECK(rejection(o).find("options::connect_backoff_cap (10 ms) is less than "
                            "connect_backoff_base (50 ms)") != std::string::npos);

    o = options{};
    o.background_housekeeping = true;
    o.housekeeping_interval = 0ms;
    CHECK(rejection(o).find("options::housekeeping_interval") != std::string::npos);
}

TEST_CASE("a negative acquire timeout is rejected") {
    fixture f;
    pool p(f.server);
    CHECK_THROWS_AS((void)p.acquire(-1ms), std::invalid_argument);
    CHECK(f.server->connects == 0);
}

TEST_CASE("a max_size beyond any server's limit is rejected, naming the field") {
    warmpool::options o;
    o.max_size = static_cast<std::size_t>(-1);
    CHECK(rejection(o).find("options::max_size") != std::string::npos);
    o.max_size = warmpool::options::max_max_size;
    CHECK(rejection(o).empty());
}
