# warmpoolLambda.cmake — packs a Linux executable into a zip that AWS Lambda runs as a custom
# runtime (provided.al2023, or any other Linux), whatever glibc and libstdc++ that system has.
#
#   include(warmpoolLambda)              # or find_package(warmpool): the config includes it
#   warmpool_lambda_package(<target> [SOCI_BACKENDS <name>...] [NO_STRIP])
#
# adds the target <target>_zip (not part of ALL), which builds <target> and writes
# <target>.zip next to its executable:
#
#   bootstrap          /bin/sh script Lambda starts: runs bin/<exe> through lib/'s own loader
#   bin/<exe>          the executable (debug sections stripped unless NO_STRIP)
#   lib/               every shared library the executable needs, glibc and its loader included,
#                      SOCI's backends and what they need, MariaDB Connector/C's plugins
#   lib/mariadb/plugin MariaDB Connector/C's authentication plugins, when libmariadb is bundled
#
# Why glibc is bundled: an executable built on a newer distribution than the one it runs on
# needs symbol versions the older glibc and libstdc++ lack (Debian 12 builds against glibc 2.36
# and GCC 12's libstdc++; Amazon Linux 2023 has glibc 2.34 and GCC 11's). So the zip carries the
# build machine's own, and bootstrap starts the program with the bundled dynamic loader
# (lib/ld-linux-*.so.*) and --library-path lib/, the way aws-lambda-cpp's packager does. Every
# library, and everything dlopen() finds later, then comes from lib/ and not from the system. All
# of glibc's libraries go in, not only those ldd lists, because glibc opens some itself at run
# time (the NSS modules for name lookups) and they must match the libc that is running.
#
# SOCI_BACKENDS (default: postgresql mysql sqlite3) are SOCI's backend libraries to bundle.
# SOCI opens a backend with dlopen() when a session first names it, so ldd does not show the
# ones the executable does not link; they are taken from the directory of the libsoci_core the
# executable uses, with their own dependencies, and bootstrap sets SOCI_BACKENDS_PATH to lib/.
# A backend that is not installed is skipped with a warning.
#
# The packing runs at build time as this same file in script mode (cmake -P), so it sees the
# executable as built. Dependencies are read with ldd: it asks the build machine's real loader,
# so the list is exactly what that loader would map (file(GET_RUNTIME_DEPENDENCIES) emulates the
# search instead and must be told the system's directories). The zip keeps the executables
# executable, and with Info-ZIP's zip installed the same inputs give the same bytes (see the
# end of this file).
#
# What the zip does not carry: glibc's iconv modules (gconv; conversions other than among
# UTF-8, ASCII and Unicode's other forms need them), locales, OpenSSL's configuration and CA certificates (point
# SSL_CERT_FILE or the connect string's sslrootcert at a bundle you ship, for TLS).

if(CMAKE_SCRIPT_MODE_FILE AND CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
    set(_wl_script_mode ON)
else()
    set(_wl_script_mode OFF)
endif()

# ============================================================================================
# Configure time: the function.
# ============================================================================================
if(NOT _wl_script_mode)
    # Where this file is, for the function to run it in script mode. A global property, since
    # the function runs in its caller's scope, which may not see this file's variables.
    set_property(GLOBAL PROPERTY _warmpool_lambda_module "${CMAKE_CURRENT_LIST_FILE}")

    function(warmpool_lambda_package target)
        cmake_parse_arguments(PARSE_ARGV 1 _wl "NO_STRIP" "" "SOCI_BACKENDS")
        if(_wl_UNPARSED_ARGUMENTS)
            message(FATAL_ERROR "warmpool_lambda_package(${target}): unknown arguments "
                                "\"${_wl_UNPARSED_ARGUMENTS}\"; expected SOCI_BACKENDS <name>... "
                                "and NO_STRIP")
        endif()
        if(NOT TARGET ${target})
            message(FATAL_ERROR "warmpool_lambda_package(${target}): no such target; call it "
                                "after add_executable(${target} ...)")
        endif()
        get_target_property(_type ${target} TYPE)
        if(NOT _type STREQUAL "EXECUTABLE")
            message(FATAL_ERROR "warmpool_lambda_package(${target}): ${target} is a ${_type}; "
                                "Lambda runs an executable")
        endif()
        if(NOT CMAKE_SYSTEM_NAME STREQUAL "Linux")
            message(WARNING "warmpool_lambda_package(${target}): Lambda runs Linux executables; "
                            "building for ${CMAKE_SYSTEM_NAME}, so no ${target}_zip target")
            return()
        endif()
        if(NOT DEFINED _wl_SOCI_BACKENDS)
            set(_wl_SOCI_BACKENDS postgresql mysql sqlite3)
        endif()
        set(_strip "")
        if(NOT _wl_NO_STRIP AND CMAKE_STRIP)
            set(_strip "${CMAKE_STRIP}")
        endif()
        # Commas, not semicolons: a list would be split into several arguments on the way.
        string(REPLACE ";" "," _backends "${_wl_SOCI_BACKENDS}")
        get_property(_module GLOBAL PROPERTY _warmpool_lambda_module)
        add_custom_target(${target}_zip
            COMMAND "${CMAKE_COMMAND}"
                    "-DWARMPOOL_LAMBDA_EXECUTABLE=$<TARGET_FILE:${target}>"
                    "-DWARMPOOL_LAMBDA_ZIP=$<TARGET_FILE_DIR:${target}>/${target}.zip"
                    "-DWARMPOOL_LAMBDA_STAGING=${CMAKE_CURRENT_BINARY_DIR}/${target}_zip"
                    "-DWARMPOOL_LAMBDA_SOCI_BACKENDS=${_backends}"
                    "-DWARMPOOL_LAMBDA_STRIP=${_strip}"
                    -P "${_module}"
            COMMENT "Packing ${target} for AWS Lambda: ${target}.zip"
            VERBATIM)
        # Built after the executable; rerun whenever asked, since the system's libraries it
        # copies may have changed even when the executable has not.
        add_dependencies(${target}_zip ${target})
    endfunction()
    return()
endif()

# ============================================================================================
# Build time: cmake -DWARMPOOL_LAMBDA_...=... -P warmpoolLambda.cmake
# ============================================================================================
# Only here: included (above), the file must not change its includer's policies.
cmake_minimum_required(VERSION 3.14...3.31)

foreach(_var EXECUTABLE ZIP STAGING)
    if(NOT WARMPOOL_LAMBDA_${_var})
        message(FATAL_ERROR "warmpoolLambda.cmake: WARMPOOL_LAMBDA_${_var} is not set; run it "
                            "through the <target>_zip target of warmpool_lambda_package()")
    endif()
endforeach()
string(REPLACE "," ";" _wl_backends "${WARMPOOL_LAMBDA_SOCI_BACKENDS}")
set(_exe "${WARMPOOL_LAMBDA_EXECUTABLE}")
set(_stage "${WARMPOOL_LAMBDA_STAGING}")
get_filename_component(_exe_name "${_exe}" NAME)

find_program(_wl_ldd ldd)
if(NOT _wl_ldd)
    message(FATAL_ERROR "warmpoolLambda.cmake: ldd not found; it comes with glibc (Debian: "
                        "libc-bin) and tells which shared libraries to bundle")
endif()

set(_exec_perms OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ
                WORLD_EXECUTE)
set(_file_perms OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# The libraries `file` needs, as "<name the loader looks for>|<path it found>" items. The
# loader itself is listed by path alone; linux-vdso.so.1 is the kernel's and has no file.
function(_wl_ldd file out_var)
    execute_process(COMMAND "${_wl_ldd}" "${file}"
                    OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc)
    if(NOT _rc EQUAL 0)
        message(FATAL_ERROR "warmpoolLambda.cmake: `ldd ${file}` failed (${_rc}): ${_out}${_err}"
                            "A statically linked executable needs no packing: zip it as "
                            "bootstrap.")
    endif()
    string(REPLACE "\n" ";" _lines "${_out}")
    set(_found "")
    foreach(_line IN LISTS _lines)
        if(_line MATCHES "^[ \t]*([^ \t]+) => not found")
            message(FATAL_ERROR "warmpoolLambda.cmake: ${file} needs ${CMAKE_MATCH_1}, which the "
                                "loader cannot find on this machine; install it first")
        elseif(_line MATCHES "^[ \t]*([^ \t]+) => (/[^ \t]+) \\(0x")
            list(APPEND _found "${CMAKE_MATCH_1}|${CMAKE_MATCH_2}")
        elseif(_line MATCHES "^[ \t]*(/[^ \t]+) \\(0x")
            get_filename_component(_name "${CMAKE_MATCH_1}" NAME)
            list(APPEND _found "${_name}|${CMAKE_MATCH_1}")
        endif()
    endforeach()
    set(${out_var} "${_found}" PARENT_SCOPE)
endfunction()

# Copies the file `src` points at (symbolic links followed) to `dest_dir`/`name`.
function(_wl_copy src dest_dir name perms_var)
    get_filename_component(_real "${src}" REALPATH)
    get_filename_component(_real_name "${_real}" NAME)
    file(REMOVE_RECURSE "${_stage}/.copy")
    file(COPY "${_real}" DESTINATION "${_stage}/.copy" FILE_PERMISSIONS ${${perms_var}})
    file(MAKE_DIRECTORY "${dest_dir}")
    file(RENAME "${_stage}/.copy/${_real_name}" "${dest_dir}/${name}")
    file(REMOVE_RECURSE "${_stage}/.copy")
endfunction()

# What lib/ holds: _bundled the names (as the loader asks for them), _paths where each came
# from, in the same order; _loader the dynamic loader's name.
set(_bundled "")
set(_paths "")
set(_loader "")

# Bundles into lib/ every library `file` needs, and `file` itself as `name` unless `name` is
# empty; each library once. The loader stays executable: bootstrap runs it.
function(_wl_bundle file name)
    _wl_ldd("${file}" _needs)
    if(name)
        list(APPEND _needs "${name}|${file}")
    endif()
    foreach(_item IN LISTS _needs)
        string(REPLACE "|" ";" _pair "${_item}")
        list(GET _pair 0 _lib)
        list(GET _pair 1 _from)
        if(NOT _lib IN_LIST _bundled)
            if(_lib MATCHES "^ld-linux.*\\.so")
                set(_loader "${_lib}")
                _wl_copy("${_from}" "${_stage}/lib" "${_lib}" _exec_perms)
            else()
                _wl_copy("${_from}" "${_stage}/lib" "${_lib}" _file_perms)
            endif()
            list(APPEND _bundled "${_lib}")
            list(APPEND _paths "${_from}")
        endif()
    endforeach()
    set(_bundled "${_bundled}" PARENT_SCOPE)
    set(_paths "${_paths}" PARENT_SCOPE)
    set(_loader "${_loader}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${_stage}")
file(MAKE_DIRECTORY "${_stage}/bin" "${_stage}/lib")

# --- the executable and what it links ----------------------------------------------------------
if(WARMPOOL_LAMBDA_STRIP)
    # Debug sections only: symbols stay, so a crash report still names functions.
    execute_process(COMMAND "${WARMPOOL_LAMBDA_STRIP}" --strip-debug
                            -o "${_stage}/bin/${_exe_name}" "${_exe}"
                    RESULT_VARIABLE _rc ERROR_VARIABLE _err)
    if(NOT _rc EQUAL 0)
        message(FATAL_ERROR "warmpoolLambda.cmake: ${WARMPOOL_LAMBDA_STRIP} --strip-debug "
                            "${_exe} failed: ${_err}")
    endif()
    file(REMOVE_RECURSE "${_stage}/.copy")
    file(COPY "${_stage}/bin/${_exe_name}" DESTINATION "${_stage}/.copy"
         FILE_PERMISSIONS ${_exec_perms})
    file(RENAME "${_stage}/.copy/${_exe_name}" "${_stage}/bin/${_exe_name}")
    file(REMOVE_RECURSE "${_stage}/.copy")
else()
    _wl_copy("${_exe}" "${_stage}/bin" "${_exe_name}" _exec_perms)
endif()
_wl_bundle("${_exe}" "")
if(NOT _loader)
    message(FATAL_ERROR "warmpoolLambda.cmake: ldd ${_exe} named no dynamic loader "
                        "(ld-linux*.so*); cannot start the program with a bundled one")
endif()

# --- the rest of glibc --------------------------------------------------------------------------
# Next to the libc ldd found. Profilers and the debugger's helper are left out.
list(FIND _bundled "libc.so.6" _libc_index)
if(_libc_index LESS 0)
    message(FATAL_ERROR "warmpoolLambda.cmake: ${_exe} does not use glibc's libc.so.6; this "
                        "packing is for glibc systems")
endif()
list(GET _paths ${_libc_index} _libc_path)
get_filename_component(_libc_dir "${_libc_path}" DIRECTORY)
foreach(_name libm.so.6 libmvec.so.1 libpthread.so.0 libdl.so.2 librt.so.1 libresolv.so.2
              libanl.so.1 libutil.so.1 libnsl.so.1 libBrokenLocale.so.1 libc_malloc_debug.so.0
              libnss_files.so.2 libnss_dns.so.2 libnss_compat.so.2 libnss_hesiod.so.2)
    if(EXISTS "${_libc_dir}/${_name}")
        _wl_bundle("${_libc_dir}/${_name}" "${_name}")
    endif()
endforeach()

# --- SOCI's backends ----------------------------------------------------------------------------
set(_soci_backends "")
set(_soci_core_index -1)
set(_i 0)
foreach(_name IN LISTS _bundled)
    if(_name MATCHES "^libsoci_core(\\.so.*)$")
        set(_soci_suffix "${CMAKE_MATCH_1}") # e.g. .so.4.0: SOCI's loader asks for the same
        set(_soci_core_index ${_i})
    endif()
    math(EXPR _i "${_i} + 1")
endforeach()
if(_soci_core_index GREATER -1 AND _wl_backends)
    list(GET _paths ${_soci_core_index} _soci_core_path)
    get_filename_component(_soci_dir "${_soci_core_path}" DIRECTORY)
    foreach(_backend IN LISTS _wl_backends)
        set(_name "libsoci_${_backend}${_soci_suffix}")
        if(EXISTS "${_soci_dir}/${_name}")
            _wl_bundle("${_soci_dir}/${_name}" "${_name}")
            list(APPEND _soci_backends "${_backend}")
        else()
            message(WARNING "warmpoolLambda.cmake: SOCI's ${_backend} backend (${_name}) is not "
                            "in ${_soci_dir}; the zip cannot open ${_backend}:// sessions. "
                            "Install it (Debian: libsoci-${_backend}4.0), or leave it out of "
                            "SOCI_BACKENDS")
        endif()
    endforeach()
endif()

# --- MariaDB Connector/C's plugins --------------------------------------------------------------
# It loads authentication plugins (caching_sha2_password, which MySQL 8 users need by default;
# client_ed25519, …) with dlopen() from its plugin directory, read from MARIADB_PLUGIN_DIR.
set(_mariadb_plugins OFF)
list(FIND _bundled "libmariadb.so.3" _mariadb_index)
if(_mariadb_index GREATER -1)
    set(_plugin_dir "")
    find_program(_wl_mariadb_config NAMES mariadb_config mariadb-config)
    if(_wl_mariadb_config)
        execute_process(COMMAND "${_wl_mariadb_config}" --plugindir
                        OUTPUT_VARIABLE _plugin_dir OUTPUT_STRIP_TRAILING_WHITESPACE
                        ERROR_QUIET)
    endif()
    if(NOT IS_DIRECTORY "${_plugin_dir}")
        list(GET _paths ${_mariadb_index} _mariadb_path)
        get_filename_component(_mariadb_dir "${_mariadb_path}" DIRECTORY)
        foreach(_candidate "${_mariadb_dir}/libmariadb3/plugin" "${_mariadb_dir}/mariadb/plugin")
            if(IS_DIRECTORY "${_candidate}")
                set(_plugin_dir "${_candidate}")
                break()
            endif()
        endforeach()
    endif()
    if(IS_DIRECTORY "${_plugin_dir}")
        file(GLOB _plugins "${_plugin_dir}/*.so")
        list(SORT _plugins)
        foreach(_plugin IN LISTS _plugins)
            get_filename_component(_name "${_plugin}" NAME)
            _wl_bundle("${_plugin}" "") # its needs go to lib/, the plugin to its own folder
            _wl_copy("${_plugin}" "${_stage}/lib/mariadb/plugin" "${_name}" _file_perms)
            set(_mariadb_plugins ON)
        endforeach()
    else()
        message(WARNING "warmpoolLambda.cmake: MariaDB Connector/C's plugin directory was not "
                        "found (mariadb_config --plugindir); sessions that need an "
                        "authentication plugin (MySQL 8's caching_sha2_password) will fail")
    endif()
endif()

# --- bootstrap ----------------------------------------------------------------------------------
# POSIX sh with builtins only: no dirname, so it also runs where lib/ is all there is.
set(_script "#!/bin/sh
# Starts bin/${_exe_name} with the libraries in lib/, glibc and its loader included, instead of
# the system's. Written by warmpool_lambda_package() (cmake/warmpoolLambda.cmake).
set -e
if [ -n \"\${LAMBDA_TASK_ROOT:-}\" ]; then
    root=\$LAMBDA_TASK_ROOT
else
    case \$0 in
    */*) root=\${0%/*} ;;
    *) root=. ;;
    esac
    root=\$(cd \"\$root\" && pwd)
fi
")
if(_soci_backends)
    string(APPEND _script "# SOCI opens its database backends with dlopen(): from lib/ first.
export SOCI_BACKENDS_PATH=\"\$root/lib\${SOCI_BACKENDS_PATH:+:\$SOCI_BACKENDS_PATH}\"
")
endif()
if(_mariadb_plugins)
    string(APPEND _script "# MariaDB Connector/C's authentication plugins.
export MARIADB_PLUGIN_DIR=\"\${MARIADB_PLUGIN_DIR:-\$root/lib/mariadb/plugin}\"
")
endif()
string(APPEND _script "exec \"\$root/lib/${_loader}\" --library-path \"\$root/lib\" \"\$root/bin/${_exe_name}\" \"\$@\"
")
file(WRITE "${_stage}/.copy/bootstrap" "${_script}")
file(COPY "${_stage}/.copy/bootstrap" DESTINATION "${_stage}" FILE_PERMISSIONS ${_exec_perms})
file(REMOVE_RECURSE "${_stage}/.copy")

# --- the zip ------------------------------------------------------------------------------------
# Entries sorted, every timestamp 1980-01-02 00:00 UTC and no owner or access-time fields, so the
# same inputs give the same bytes (and Lambda's CodeSha256 changes only when the code does).
# That needs Info-ZIP's zip (-X leaves those fields out) and touch; without them the zip is
# written by CMake's own archiver, which keeps access times.
file(GLOB_RECURSE _entries RELATIVE "${_stage}" "${_stage}/*")
list(SORT _entries)
string(REPLACE ";" "\n" _list "${_entries}")
file(WRITE "${_stage}.files" "${_list}\n")
file(REMOVE "${WARMPOOL_LAMBDA_ZIP}")
find_program(_wl_zip zip)
find_program(_wl_touch touch)
if(_wl_zip AND _wl_touch)
    execute_process(COMMAND "${CMAKE_COMMAND}" -E env TZ=UTC
                            "${_wl_touch}" -d "1980-01-02 00:00:00" ${_entries}
                    WORKING_DIRECTORY "${_stage}" RESULT_VARIABLE _rc ERROR_VARIABLE _err)
    if(_rc EQUAL 0)
        execute_process(COMMAND "${CMAKE_COMMAND}" -E env TZ=UTC
                                "${_wl_zip}" -X -q "${WARMPOOL_LAMBDA_ZIP}" -@
                        INPUT_FILE "${_stage}.files"
                        WORKING_DIRECTORY "${_stage}" RESULT_VARIABLE _rc ERROR_VARIABLE _err)
    endif()
else()
    execute_process(COMMAND "${CMAKE_COMMAND}" -E tar cf "${WARMPOOL_LAMBDA_ZIP}" --format=zip
                            "--mtime=1980-01-02 00:00:00 UTC" "--files-from=${_stage}.files"
                    WORKING_DIRECTORY "${_stage}" RESULT_VARIABLE _rc ERROR_VARIABLE _err)
endif()
if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "warmpoolLambda.cmake: writing ${WARMPOOL_LAMBDA_ZIP} failed: ${_err}")
endif()

execute_process(COMMAND "${_wl_ldd}" --version OUTPUT_VARIABLE _glibc ERROR_QUIET)
string(REGEX MATCH "[0-9]+\\.[0-9]+" _glibc "${_glibc}")
list(LENGTH _entries _count)
file(SIZE "${WARMPOOL_LAMBDA_ZIP}" _size)
math(EXPR _kib "${_size} / 1024")
string(REPLACE ";" ", " _soci_list "${_soci_backends}")
message(STATUS "${WARMPOOL_LAMBDA_ZIP}: ${_count} files, ${_kib} KiB; glibc ${_glibc} and "
               "${_loader} bundled; SOCI backends: ${_soci_list}")
