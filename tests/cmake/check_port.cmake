# Checks the vcpkg overlay port against the project: vcpkg.json parses as JSON and carries the
# version from version.hpp, and the portfile configures with exactly the options the find_package
# consumer test installs with (tests/cmake/install_options.cmake).
#   cmake -DWARMPOOL_SOURCE_DIR=... -P check_port.cmake
cmake_minimum_required(VERSION 3.19) # string(JSON)

set(_port "${WARMPOOL_SOURCE_DIR}/ports/warmpool")
set(_errors "")

file(READ "${_port}/vcpkg.json" _manifest)
string(JSON _name ERROR_VARIABLE _json_error GET "${_manifest}" name)
if(_json_error)
    message(FATAL_ERROR "ports/warmpool/vcpkg.json is not valid JSON: ${_json_error}")
endif()
string(JSON _version ERROR_VARIABLE _json_error GET "${_manifest}" version)
if(NOT _name STREQUAL "warmpool")
    list(APPEND _errors "vcpkg.json: name is '${_name}', expected 'warmpool'")
endif()

file(STRINGS "${WARMPOOL_SOURCE_DIR}/include/warmpool/version.hpp" _lines
     REGEX "^#define WARMPOOL_VERSION_(MAJOR|MINOR|PATCH) [0-9]+$")
set(_parts "")
foreach(_part MAJOR MINOR PATCH)
    string(REGEX MATCH "WARMPOOL_VERSION_${_part} ([0-9]+)" _m "${_lines}")
    list(APPEND _parts "${CMAKE_MATCH_1}")
endforeach()
list(JOIN _parts "." _header_version)
if(NOT _version STREQUAL _header_version)
    list(APPEND _errors
         "vcpkg.json: version is '${_version}', version.hpp says '${_header_version}'")
endif()

foreach(_feature soci sqlite3 postgresql mysql)
    string(JSON _deps ERROR_VARIABLE _json_error GET "${_manifest}" features ${_feature}
           dependencies)
    if(_json_error)
        list(APPEND _errors "vcpkg.json: feature '${_feature}' has no dependencies")
    endif()
endforeach()

# The OPTIONS block of vcpkg_cmake_configure: one -D per line up to the closing parenthesis.
file(READ "${_port}/portfile.cmake" _portfile)
if(NOT _portfile MATCHES "vcpkg_cmake_configure\\(([^)]*)\\)")
    message(FATAL_ERROR "portfile.cmake: no vcpkg_cmake_configure(...) call found")
endif()
set(_call "${CMAKE_MATCH_1}")
if(NOT _call MATCHES "OPTIONS([^)]*)")
    message(FATAL_ERROR "portfile.cmake: vcpkg_cmake_configure has no OPTIONS")
endif()
string(REGEX MATCHALL "-D[A-Za-z0-9_]+=[^ \t\r\n)]*" _port_options "${CMAKE_MATCH_1}")

include("${CMAKE_CURRENT_LIST_DIR}/install_options.cmake")
if(NOT _port_options STREQUAL WARMPOOL_PACKAGE_OPTIONS)
    list(APPEND _errors "portfile.cmake OPTIONS (${_port_options}) differ from "
                        "tests/cmake/install_options.cmake (${WARMPOOL_PACKAGE_OPTIONS})")
endif()

foreach(_file portfile.cmake usage)
    if(NOT EXISTS "${_port}/${_file}")
        list(APPEND _errors "ports/warmpool/${_file} is missing")
    endif()
endforeach()

if(_errors)
    list(JOIN _errors "\n  " _text)
    message(FATAL_ERROR "vcpkg port check failed:\n  ${_text}")
endif()
message(STATUS "vcpkg port: vcpkg.json ${_version} valid; OPTIONS match the tested install")
