# The configure options of a packaging build: what ports/warmpool/portfile.cmake passes and what
# the find_package consumer test installs with. tests/cmake/check_port.cmake keeps the two equal.
set(WARMPOOL_PACKAGE_OPTIONS
    -DWARMPOOL_BUILD_TESTS=OFF
    -DWARMPOOL_BUILD_EXAMPLES=OFF
    -DWARMPOOL_BUILD_BENCHMARKS=OFF
    -DWARMPOOL_INSTALL=ON)
