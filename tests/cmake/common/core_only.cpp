// The core through pkg-config: compiles and links with nothing but `pkg-config warmpool`.
#include <warmpool/warmpool.hpp>

#include <cstdio>

int main() {
    warmpool::options options;
    options.validate();
    std::printf("warmpool %d.%d.%d core ok\n", WARMPOOL_VERSION_MAJOR, WARMPOOL_VERSION_MINOR,
                WARMPOOL_VERSION_PATCH);
    return 0;
}
