# warmpool is header-only: one release configuration is all there is to install.
set(VCPKG_BUILD_TYPE release)

vcpkg_from_github(
    OUT_SOURCE_PATH SOURCE_PATH
    REPO warmpool/warmpool
    REF "v${VERSION}"
    # Replace with the archive's hash on each release (vcpkg prints it on a mismatch).
    SHA512 0
    HEAD_REF main
)

# These OPTIONS must stay equal to tests/cmake/install_options.cmake, which the find_package
# consumer test installs with; the vcpkg_port CTest test compares them.
vcpkg_cmake_configure(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        -DWARMPOOL_BUILD_TESTS=OFF
        -DWARMPOOL_BUILD_EXAMPLES=OFF
        -DWARMPOOL_BUILD_BENCHMARKS=OFF
        -DWARMPOOL_INSTALL=ON
)

vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/cmake/warmpool)
vcpkg_fixup_pkgconfig()

# Header-only: nothing architecture-specific may remain.
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/lib" "${CURRENT_PACKAGES_DIR}/debug")

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
