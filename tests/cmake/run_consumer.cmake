# Builds and runs one consumer project from scratch. Run by CTest:
#   cmake -DMODE=fetch_content|add_subdirectory|find_package|single_header
#         -DWARMPOOL_SOURCE_DIR=... -DWORK_DIR=... [-DGENERATOR=...] [-DCXX_COMPILER=...]
#         -P run_consumer.cmake

foreach(_var MODE WARMPOOL_SOURCE_DIR WORK_DIR)
    if(NOT DEFINED ${_var})
        message(FATAL_ERROR "run_consumer.cmake: -D${_var}=... is required")
    endif()
endforeach()

set(_here "${CMAKE_CURRENT_LIST_DIR}")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

set(_common_args -DCMAKE_BUILD_TYPE=Release)
if(GENERATOR)
    list(APPEND _common_args -G "${GENERATOR}")
endif()
if(CXX_COMPILER)
    list(APPEND _common_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()

function(run_step what)
    message(STATUS "consumer ${MODE}: ${what}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
    if(NOT _rc EQUAL 0)
        message("${_out}")
        message(FATAL_ERROR "consumer ${MODE}: ${what} failed (${_rc})")
    endif()
    set(STEP_OUTPUT "${_out}" PARENT_SCOPE)
endfunction()

set(_consumer_args "")
if(MODE STREQUAL "fetch_content")
    # A release-like archive of the files a consumer's build needs; tests/ and tools/ are left out
    # on purpose, which also proves a fetched warmpool needs neither.
    set(_archive "${WORK_DIR}/warmpool-src.tar.gz")
    set(_entries CMakeLists.txt cmake include single_include)
    if(EXISTS "${WARMPOOL_SOURCE_DIR}/LICENSE")
        list(APPEND _entries LICENSE)
    endif()
    run_step("archive the source tree"
             "${CMAKE_COMMAND}" -E chdir "${WARMPOOL_SOURCE_DIR}"
             "${CMAKE_COMMAND}" -E tar czf "${_archive}" -- ${_entries})
    list(APPEND _consumer_args "-DWARMPOOL_URL=file://${_archive}")
elseif(MODE STREQUAL "add_subdirectory")
    list(APPEND _consumer_args "-DWARMPOOL_SOURCE_DIR=${WARMPOOL_SOURCE_DIR}")
elseif(MODE STREQUAL "find_package")
    # Install warmpool the way the vcpkg port does, into a fresh prefix.
    include("${_here}/install_options.cmake")
    set(_prefix "${WORK_DIR}/prefix")
    run_step("configure warmpool"
             "${CMAKE_COMMAND}" -S "${WARMPOOL_SOURCE_DIR}" -B "${WORK_DIR}/warmpool-build"
             ${_common_args} ${WARMPOOL_PACKAGE_OPTIONS} "-DCMAKE_INSTALL_PREFIX=${_prefix}")
    run_step("build warmpool" "${CMAKE_COMMAND}" --build "${WORK_DIR}/warmpool-build")
    run_step("install warmpool" "${CMAKE_COMMAND}" --install "${WORK_DIR}/warmpool-build")
    list(APPEND _consumer_args "-DCMAKE_PREFIX_PATH=${_prefix}")
elseif(MODE STREQUAL "single_header")
    set(_vendor "${WORK_DIR}/vendor")
    file(COPY "${WARMPOOL_SOURCE_DIR}/single_include/warmpool/warmpool.hpp"
         DESTINATION "${_vendor}/warmpool")
    list(APPEND _consumer_args "-DWARMPOOL_SINGLE_HEADER_DIR=${_vendor}")
else()
    message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()

set(_build "${WORK_DIR}/build")
run_step("configure the consumer"
         "${CMAKE_COMMAND}" -S "${_here}/${MODE}" -B "${_build}" ${_common_args} ${_consumer_args})
run_step("build the consumer" "${CMAKE_COMMAND}" --build "${_build}")
run_step("run the consumer" "${_build}/consumer" "${WORK_DIR}/consumer.db")
message(STATUS "consumer ${MODE}: ${STEP_OUTPUT}")
if(NOT STEP_OUTPUT MATCHES "consumer ok")
    message(FATAL_ERROR "consumer ${MODE}: unexpected output")
endif()

if(MODE STREQUAL "find_package")
    run_step("run the core-only program" "${_build}/core_only")

    # pkg-config: the core with nothing but its .pc file, and the SOCI adapter with its own.
    find_program(_pkg_config NAMES pkg-config pkgconf)
    if(_pkg_config)
        set(ENV{PKG_CONFIG_PATH} "${_prefix}/share/pkgconfig")
        if(NOT CXX_COMPILER)
            set(CXX_COMPILER c++)
        endif()
        run_step("pkg-config warmpool" "${_pkg_config}" --cflags --libs warmpool)
        separate_arguments(_flags UNIX_COMMAND "${STEP_OUTPUT}")
        run_step("compile with pkg-config warmpool"
                 "${CXX_COMPILER}" -std=c++17 "${_here}/common/core_only.cpp" ${_flags}
                 -o "${WORK_DIR}/pc_core_only")
        run_step("run the pkg-config core program" "${WORK_DIR}/pc_core_only")
        if(EXISTS "${_prefix}/share/pkgconfig/warmpool-soci.pc")
            run_step("pkg-config warmpool-soci" "${_pkg_config}" --cflags --libs warmpool-soci)
            separate_arguments(_flags UNIX_COMMAND "${STEP_OUTPUT}")
            run_step("compile with pkg-config warmpool-soci"
                     "${CXX_COMPILER}" -std=c++17 "${_here}/common/main.cpp" ${_flags}
                     -o "${WORK_DIR}/pc_consumer")
            run_step("run the pkg-config consumer" "${WORK_DIR}/pc_consumer"
                     "${WORK_DIR}/pc_consumer.db")
        endif()
    elseif("$ENV{CI}" STREQUAL "true")
        message(FATAL_ERROR "consumer find_package: pkg-config not found (Debian: pkg-config)")
    else()
        message(STATUS "consumer find_package: pkg-config not found; .pc files not checked")
    endif()
endif()
