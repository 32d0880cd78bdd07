# Install rules: headers, the CMake package (config, version, targets, the SOCI find module) and
# pkg-config files. warmpool is header-only, so everything is architecture independent.

include(CMakePackageConfigHelpers)

set(WARMPOOL_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/warmpool" CACHE STRING
    "Where warmpool's CMake package files are installed, relative to the prefix")
set(WARMPOOL_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_DATADIR}/pkgconfig" CACHE STRING
    "Where warmpool's pkg-config files are installed, relative to the prefix")
mark_as_advanced(WARMPOOL_INSTALL_CMAKEDIR WARMPOOL_INSTALL_PKGCONFIGDIR)

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/warmpool"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        FILES_MATCHING PATTERN "*.hpp")

install(TARGETS warmpool EXPORT warmpoolTargets)
install(EXPORT warmpoolTargets
        NAMESPACE warmpool::
        DESTINATION "${WARMPOOL_INSTALL_CMAKEDIR}")

# The SOCI adapter target goes in a file of its own: the config loads it only when SOCI is found
# on the consumer's machine, so the core stays usable without SOCI.
if(TARGET warmpool_soci)
    install(TARGETS warmpool_soci EXPORT warmpoolSociTargets)
    install(EXPORT warmpoolSociTargets
            NAMESPACE warmpool::
            DESTINATION "${WARMPOOL_INSTALL_CMAKEDIR}")
endif()

# The installed config also includes warmpoolLambda.cmake, so find_package(warmpool) gives
# warmpool_lambda_package() (docs/lambda.md). The line is added to a copy of the template.
file(READ "${CMAKE_CURRENT_LIST_DIR}/warmpoolConfig.cmake.in" _warmpool_config_template)
string(APPEND _warmpool_config_template "
# warmpool_lambda_package(<target>): packs an executable into a zip for AWS Lambda.
include(\"\${CMAKE_CURRENT_LIST_DIR}/warmpoolLambda.cmake\")
")
file(WRITE "${PROJECT_BINARY_DIR}/CMakeFiles/warmpoolConfig.cmake.in"
     "${_warmpool_config_template}")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
             "${CMAKE_CURRENT_LIST_DIR}/warmpoolConfig.cmake.in")

configure_package_config_file(
    "${PROJECT_BINARY_DIR}/CMakeFiles/warmpoolConfig.cmake.in"
    "${PROJECT_BINARY_DIR}/warmpoolConfig.cmake"
    INSTALL_DESTINATION "${WARMPOOL_INSTALL_CMAKEDIR}")
write_basic_package_version_file(
    "${PROJECT_BINARY_DIR}/warmpoolConfigVersion.cmake"
    VERSION ${PROJECT_VERSION}
    COMPATIBILITY SameMajorVersion
    ARCH_INDEPENDENT)
install(FILES
        "${PROJECT_BINARY_DIR}/warmpoolConfig.cmake"
        "${PROJECT_BINARY_DIR}/warmpoolConfigVersion.cmake"
        "${CMAKE_CURRENT_LIST_DIR}/Findwarmpool_SOCI.cmake"
        "${CMAKE_CURRENT_LIST_DIR}/warmpoolLambda.cmake"
        DESTINATION "${WARMPOOL_INSTALL_CMAKEDIR}")

# pkg-config. The core needs only a C++17 compiler and threads. The prefix is written relative to
# the .pc file's own directory, so an installed tree still works after it is moved.
file(RELATIVE_PATH WARMPOOL_PC_RELATIVE_PREFIX "/prefix/${WARMPOOL_INSTALL_PKGCONFIGDIR}" "/prefix")
configure_file("${CMAKE_CURRENT_LIST_DIR}/warmpool.pc.in" "${PROJECT_BINARY_DIR}/warmpool.pc"
               @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/warmpool.pc" DESTINATION "${WARMPOOL_INSTALL_PKGCONFIGDIR}")

# warmpool-soci.pc names the libraries found here by path. SOCI 4.0 ships no .pc of its own to
# require, so this is written only when SOCI was found by the search (not through a config,
# whose targets have no flat flags to copy).
if(TARGET warmpool_soci AND warmpool_SOCI_KIND STREQUAL "module")
    # The compiler's own directories stay out: an explicit -I/usr/include reorders the system
    # headers and breaks libstdc++'s #include_next.
    set(_pc_include_dirs "${warmpool_SOCI_INCLUDE_DIR}" "${warmpool_SOCI_BOOST_INCLUDE_DIR}")
    set(_pc_defs "")
    set(_pc_backend_libs "")
    set(_pc_client_libs "")
    foreach(_b IN LISTS warmpool_SOCI_BACKENDS)
        string(TOUPPER "${_b}" _upper)
        list(APPEND _pc_include_dirs "${warmpool_SOCI_${_b}_CLIENT_INCLUDE_DIR}")
        string(APPEND _pc_defs " -DWARMPOOL_SOCI_${_upper}=1")
        string(APPEND _pc_backend_libs " ${warmpool_SOCI_${_b}_LIBRARY}")
        string(APPEND _pc_client_libs " ${warmpool_SOCI_${_b}_CLIENT_LIBRARY}")
    endforeach()
    list(REMOVE_DUPLICATES _pc_include_dirs)
    set(_pc_cflags "")
    foreach(_dir IN LISTS _pc_include_dirs)
        if(_dir AND NOT _dir IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
            string(APPEND _pc_cflags " -I${_dir}")
        endif()
    endforeach()
    string(APPEND _pc_cflags "${_pc_defs}")
    string(STRIP "${_pc_cflags}" _pc_cflags)
    set(_pc_libs "${_pc_backend_libs} ${warmpool_SOCI_CORE_LIBRARY}${_pc_client_libs}")
    foreach(_l IN LISTS CMAKE_DL_LIBS)
        string(APPEND _pc_libs " -l${_l}")
    endforeach()
    string(STRIP "${_pc_libs}" _pc_libs)
    set(WARMPOOL_PC_SOCI_CFLAGS "${_pc_cflags}")
    set(WARMPOOL_PC_SOCI_LIBS "${_pc_libs}")
    configure_file("${CMAKE_CURRENT_LIST_DIR}/warmpool-soci.pc.in"
                   "${PROJECT_BINARY_DIR}/warmpool-soci.pc" @ONLY)
    install(FILES "${PROJECT_BINARY_DIR}/warmpool-soci.pc"
            DESTINATION "${WARMPOOL_INSTALL_PKGCONFIGDIR}")
endif()
