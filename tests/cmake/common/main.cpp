// A consumer's program: one SQLite session through warmpool::soci_pool, one query.
#if defined(WARMPOOL_CONSUMER_SINGLE_HEADER)
#include <warmpool/warmpool.hpp>
#else
#include <warmpool/soci.hpp>
#include <warmpool/version.hpp>
#endif

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s DATABASE_FILE\n", argv[0]);
        return 2;
    }
    warmpool::soci_pool pool("sqlite3://db=" + std::string(argv[1]));
    auto lease = pool.acquire();
    int one = 0;
    *lease << "select 1", soci::into(one);
    if (one != 1) {
        std::fprintf(stderr, "select 1 returned %d\n", one);
        return 1;
    }
    std::printf("warmpool %d.%d.%d consumer ok\n", WARMPOOL_VERSION_MAJOR, WARMPOOL_VERSION_MINOR,
                WARMPOOL_VERSION_PATCH);
    return 0;
}
