// Must NOT compile: the pool calls ping() from noexcept code, where an exception would end the
// program, so traits whose ping() may throw are rejected with a readable message.
#include <warmpool/warmpool.hpp>

#include <chrono>
#include <memory>
#include <string>

struct throwing_ping_traits {
    using connection = int;
    using config = int;
    static std::unique_ptr<int> connect(const int&, std::chrono::milliseconds) {
        return std::make_unique<int>(0);
    }
    static bool is_broken(int&) noexcept { return false; }
    static bool peer_closed(int&) noexcept { return false; }
    static bool ping(int&, std::chrono::milliseconds) { return true; } // not noexcept
    static bool in_transaction(int&) noexcept { return false; }
    static bool rollback(int&, std::chrono::milliseconds) noexcept { return true; }
    static std::string describe(const int&) { return "throwing"; }
};

int main() {
    warmpool::basic_pool<throwing_ping_traits> pool(0);
    return pool.stats().open == 0 ? 0 : 1;
}
