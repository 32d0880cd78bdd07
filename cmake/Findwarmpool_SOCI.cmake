# Findwarmpool_SOCI.cmake — locates SOCI for warmpool's SOCI adapter.
#
# Used by warmpool's own build and installed next to warmpoolConfig.cmake, which reaches it through
# find_dependency. It has its own package name so it never shadows SOCI's own config or another
# FindSOCI.cmake in a consumer's CMAKE_MODULE_PATH.
#
# Order of preference:
#   1. SOCI's package config: 4.1+ (SOCI::Core, SOCI::<Backend>) or 4.0 built from source
#      (SOCI::soci_core, SOCI::soci_<backend>, or their _static variants).
#   2. A search of the usual paths, for distributions that ship no config (Debian's libsoci-dev
#      4.0.3: /usr/include/soci, libsoci_core.so, libsoci_<backend>.so).
#
# Components: sqlite3 postgresql mysql. With none requested, every one of them found is used.
#
# Result variables:
#   warmpool_SOCI_FOUND, warmpool_SOCI_<backend>_FOUND
#   warmpool_SOCI_BACKENDS   the backends found, e.g. "sqlite3;postgresql;mysql"
#   warmpool_SOCI_KIND       "config" or "module"
#   warmpool_SOCI_VERSION    when known
# Imported targets (INTERFACE, names private to warmpool):
#   warmpool_detail::soci_core         SOCI's core library (+ Boost headers where SOCI needs them)
#   warmpool_detail::soci_<backend>    one backend with its client library's headers and library
#   warmpool_detail::soci              core + every backend found + WARMPOOL_SOCI_<BACKEND>=1

include(FindPackageHandleStandardArgs)

set(_wps_all_backends sqlite3 postgresql mysql)
if(warmpool_SOCI_FIND_COMPONENTS)
    set(_wps_wanted ${warmpool_SOCI_FIND_COMPONENTS})
else()
    set(_wps_wanted ${_wps_all_backends})
endif()

# Already done in this directory scope (a consumer calling find_package(warmpool) twice, or the
# config after the build): reuse the targets.
if(TARGET warmpool_detail::soci)
    set(warmpool_SOCI_FOUND TRUE)
    foreach(_b IN LISTS warmpool_SOCI_BACKENDS)
        set(warmpool_SOCI_${_b}_FOUND TRUE)
    endforeach()
    return()
endif()

# SOCI's CMake name for each backend in 4.1+.
set(_wps_name_sqlite3 SQLite3)
set(_wps_name_postgresql PostgreSQL)
set(_wps_name_mysql MySQL)

set(_wps_core "")
set(_wps_core_includes "")
set(_wps_reason "")
set(warmpool_SOCI_BACKENDS "")
set(warmpool_SOCI_KIND "")

# --- 1. SOCI's own package config -----------------------------------------------------------
if(NOT WARMPOOL_SOCI_NO_CONFIG)
    set(_wps_cmake_components "")
    foreach(_b IN LISTS _wps_wanted)
        list(APPEND _wps_cmake_components ${_wps_name_${_b}})
    endforeach()
    find_package(SOCI CONFIG QUIET OPTIONAL_COMPONENTS ${_wps_cmake_components})
    if(SOCI_FOUND)
        foreach(_t SOCI::Core SOCI::soci_core SOCI::soci_core_static)
            if(TARGET ${_t})
                set(_wps_core ${_t})
                break()
            endif()
        endforeach()
    endif()
    if(_wps_core)
        set(warmpool_SOCI_KIND config)
        set(warmpool_SOCI_VERSION "${SOCI_VERSION}")
        add_library(warmpool_detail::soci_core INTERFACE IMPORTED)
        set_target_properties(warmpool_detail::soci_core PROPERTIES INTERFACE_LINK_LIBRARIES
                                                                    ${_wps_core})
        foreach(_b IN LISTS _wps_wanted)
            foreach(_t SOCI::${_wps_name_${_b}} SOCI::soci_${_b} SOCI::soci_${_b}_static)
                if(TARGET ${_t})
                    add_library(warmpool_detail::soci_${_b} INTERFACE IMPORTED)
                    set_target_properties(warmpool_detail::soci_${_b} PROPERTIES
                                          INTERFACE_LINK_LIBRARIES "${_t}")
                    list(APPEND warmpool_SOCI_BACKENDS ${_b})
                    break()
                endif()
            endforeach()
        endforeach()
    endif()
endif()

# --- 2. Search, for SOCI installs without a config ------------------------------------------
if(NOT _wps_core)
    find_path(warmpool_SOCI_INCLUDE_DIR NAMES soci/soci.h)
    find_library(warmpool_SOCI_CORE_LIBRARY NAMES soci_core soci_core_4_0 soci_core_4_1)
    mark_as_advanced(warmpool_SOCI_INCLUDE_DIR warmpool_SOCI_CORE_LIBRARY)
endif()
if(NOT _wps_core AND warmpool_SOCI_INCLUDE_DIR AND warmpool_SOCI_CORE_LIBRARY)
    set(_wps_core_ok TRUE)
    set(_wps_core_deps ${CMAKE_DL_LIBS})
    # soci-config.h may promise Boost integration; soci.h then includes Boost headers.
    if(EXISTS "${warmpool_SOCI_INCLUDE_DIR}/soci/soci-config.h")
        file(STRINGS "${warmpool_SOCI_INCLUDE_DIR}/soci/soci-config.h" _wps_boost
             REGEX "^#define SOCI_HAVE_BOOST")
        if(_wps_boost)
            find_path(warmpool_SOCI_BOOST_INCLUDE_DIR NAMES boost/version.hpp)
            mark_as_advanced(warmpool_SOCI_BOOST_INCLUDE_DIR)
            if(warmpool_SOCI_BOOST_INCLUDE_DIR)
                list(APPEND _wps_core_includes "${warmpool_SOCI_BOOST_INCLUDE_DIR}")
            else()
                set(_wps_core_ok FALSE)
                set(_wps_reason "SOCI was built with Boost (SOCI_HAVE_BOOST) but Boost's headers "
                                "were not found; install them (Debian: libboost-dev)")
            endif()
        endif()
    endif()
    if(EXISTS "${warmpool_SOCI_INCLUDE_DIR}/soci/version.h")
        file(STRINGS "${warmpool_SOCI_INCLUDE_DIR}/soci/version.h" _wps_v
             REGEX "^#define SOCI_VERSION [0-9]+")
        if(_wps_v MATCHES "SOCI_VERSION ([0-9]+)")
            math(EXPR _wps_major "${CMAKE_MATCH_1} / 100000")
            math(EXPR _wps_minor "${CMAKE_MATCH_1} / 100 % 1000")
            math(EXPR _wps_patch "${CMAKE_MATCH_1} % 100")
            set(warmpool_SOCI_VERSION "${_wps_major}.${_wps_minor}.${_wps_patch}")
        endif()
    endif()
    if(_wps_core_ok)
        set(warmpool_SOCI_KIND module)
        set(_wps_core "${warmpool_SOCI_CORE_LIBRARY}")
        add_library(warmpool_detail::soci_core INTERFACE IMPORTED)
        set_target_properties(warmpool_detail::soci_core PROPERTIES
            INTERFACE_INCLUDE_DIRECTORIES "${warmpool_SOCI_INCLUDE_DIR};${_wps_core_includes}"
            INTERFACE_LINK_LIBRARIES "${warmpool_SOCI_CORE_LIBRARY};${_wps_core_deps}")

        foreach(_b IN LISTS _wps_wanted)
            find_library(warmpool_SOCI_${_b}_LIBRARY NAMES soci_${_b} soci_${_b}_4_0 soci_${_b}_4_1)
            mark_as_advanced(warmpool_SOCI_${_b}_LIBRARY)
            if(NOT warmpool_SOCI_${_b}_LIBRARY
               OR NOT EXISTS "${warmpool_SOCI_INCLUDE_DIR}/soci/${_b}/soci-${_b}.h")
                continue()
            endif()
            # The backend's header includes its client library's header, so the client's
            # include directory is needed as well as its library.
            set(_wps_client_inc "")
            set(_wps_client_lib "")
            if(_b STREQUAL "sqlite3")
                find_path(warmpool_SOCI_sqlite3_CLIENT_INCLUDE_DIR NAMES sqlite3.h)
                find_library(warmpool_SOCI_sqlite3_CLIENT_LIBRARY NAMES sqlite3)
            elseif(_b STREQUAL "postgresql")
                find_path(warmpool_SOCI_postgresql_CLIENT_INCLUDE_DIR NAMES libpq-fe.h
                          PATH_SUFFIXES postgresql pgsql)
                find_library(warmpool_SOCI_postgresql_CLIENT_LIBRARY NAMES pq libpq)
            elseif(_b STREQUAL "mysql")
                find_path(warmpool_SOCI_mysql_CLIENT_INCLUDE_DIR NAMES mysql.h
                          PATH_SUFFIXES mariadb mysql)
                find_library(warmpool_SOCI_mysql_CLIENT_LIBRARY NAMES mariadb mysqlclient
                             PATH_SUFFIXES mariadb mysql)
            endif()
            mark_as_advanced(warmpool_SOCI_${_b}_CLIENT_INCLUDE_DIR
                             warmpool_SOCI_${_b}_CLIENT_LIBRARY)
            if(NOT warmpool_SOCI_${_b}_CLIENT_INCLUDE_DIR OR NOT warmpool_SOCI_${_b}_CLIENT_LIBRARY)
                if(NOT warmpool_SOCI_FIND_QUIETLY)
                    message(STATUS "warmpool: SOCI's ${_b} backend found but not its client "
                                   "library's headers or library; leaving it out")
                endif()
                continue()
            endif()
            add_library(warmpool_detail::soci_${_b} INTERFACE IMPORTED)
            set_target_properties(warmpool_detail::soci_${_b} PROPERTIES
                INTERFACE_INCLUDE_DIRECTORIES "${warmpool_SOCI_${_b}_CLIENT_INCLUDE_DIR}"
                INTERFACE_LINK_LIBRARIES
                "${warmpool_SOCI_${_b}_LIBRARY};warmpool_detail::soci_core;${warmpool_SOCI_${_b}_CLIENT_LIBRARY}")
            list(APPEND warmpool_SOCI_BACKENDS ${_b})
        endforeach()
    else()
        set(_wps_core "")
    endif()
endif()

# --- Results --------------------------------------------------------------------------------
foreach(_b IN LISTS _wps_all_backends)
    list(FIND warmpool_SOCI_BACKENDS ${_b} _wps_i)
    if(_wps_i GREATER -1)
        set(warmpool_SOCI_${_b}_FOUND TRUE)
    else()
        set(warmpool_SOCI_${_b}_FOUND FALSE)
    endif()
endforeach()

if(_wps_core)
    set(_wps_core_found TRUE)
else()
    set(_wps_core_found "")
endif()
if(NOT _wps_reason)
    set(_wps_reason "neither SOCI's package config nor soci/soci.h and libsoci_core were found")
endif()
find_package_handle_standard_args(warmpool_SOCI
    REQUIRED_VARS _wps_core_found
    VERSION_VAR warmpool_SOCI_VERSION
    HANDLE_COMPONENTS
    REASON_FAILURE_MESSAGE "${_wps_reason}")

if(warmpool_SOCI_FOUND AND NOT TARGET warmpool_detail::soci)
    add_library(warmpool_detail::soci INTERFACE IMPORTED)
    set(_wps_links warmpool_detail::soci_core)
    set(_wps_defs "")
    foreach(_b IN LISTS warmpool_SOCI_BACKENDS)
        string(TOUPPER "${_b}" _wps_upper)
        list(APPEND _wps_links warmpool_detail::soci_${_b})
        list(APPEND _wps_defs WARMPOOL_SOCI_${_wps_upper}=1)
    endforeach()
    set_target_properties(warmpool_detail::soci PROPERTIES
        INTERFACE_LINK_LIBRARIES "${_wps_links}"
        INTERFACE_COMPILE_DEFINITIONS "${_wps_defs}")
endif()
