// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Finding functions of a shared library the process has already loaded, for the SOCI adapter's
// native checks (warmpool/soci/*.hpp) when the program was not linked against the database
// client library itself.
//
// Why it is needed: SOCI's dynamic backend loader dlopen()s libsoci_postgresql.so (and so libpq)
// with RTLD_LOCAL, so libpq's symbols are not in the global scope: dlsym(RTLD_DEFAULT, "PQstatus")
// finds nothing although libpq is loaded and serving the session. The objects themselves can
// still be reached: dl_iterate_phdr() lists every loaded object by path, and
// dlopen(path, RTLD_NOLOAD) returns a handle to one already loaded without loading anything.
//
// Where a function is looked for, in this order, all of a table's functions in one place:
//   1. the global scope (dlsym(RTLD_DEFAULT)): a program linked against the client library, or
//      statically linked and exporting its symbols. The dynamic linker binds the backend's own
//      references there first, so this is the very copy the session uses.
//   2. each loaded object whose file name starts with one of the given prefixes, in load order
//      ("libsoci_postgresql" first: a handle searches that object and its dependencies, the
//      scope it was linked in; then the client library by name, "libpq.so").
// Nothing is ever loaded here, and the handles taken are never closed, so the functions stay
// valid for the life of the process even if SOCI unloads its backend.
//
// POSIX with <dlfcn.h>; dl_iterate_phdr() where <link.h> has it (Linux, the BSDs). Elsewhere
// only the global scope is searched. Without <dlfcn.h> this header is empty, and the backend
// headers do not detect their client libraries (only =1 enables their checks there).

#if __has_include(<dlfcn.h>)

#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <dlfcn.h>

// Token pasting for the per-mode inline namespaces of the SOCI adapter (see warmpool/soci.hpp).
#define WARMPOOL_DETAIL_CAT_(a, b) a##b
#define WARMPOOL_DETAIL_CAT(a, b) WARMPOOL_DETAIL_CAT_(a, b)
#if __has_include(<link.h>) && !defined(__APPLE__)
#include <link.h>
#define WARMPOOL_DETAIL_HAS_DL_ITERATE_PHDR 1
#endif

namespace warmpool {
namespace detail {
namespace loaded_library {

/// Stores a symbol's address in a function pointer. (A data pointer converted to a function
/// pointer is only conditionally supported by C++; POSIX guarantees dlsym's result works.)
template <class F>
void assign(F*& fn, void* address) noexcept {
    static_assert(std::is_function<F>::value, "assign() fills function pointers");
    static_assert(sizeof(fn) == sizeof(address), "function and data pointers differ in size");
    std::memcpy(&fn, &address, sizeof fn);
}

/// The file name part of a path.
inline std::string_view base_name(std::string_view path) noexcept {
    const std::size_t slash = path.rfind('/');
    return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

/// Paths of the loaded objects whose file name starts with `prefix`, in load order.
inline std::vector<std::string> paths_starting_with(std::string_view prefix) {
    std::vector<std::string> found;
#if defined(WARMPOOL_DETAIL_HAS_DL_ITERATE_PHDR)
    struct search {
        std::string_view prefix;
        std::vector<std::string>* found;
    } s{prefix, &found};
    ::dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* data) -> int {
            auto* s = static_cast<search*>(data);
            if (info->dlpi_name != nullptr && info->dlpi_name[0] != '\0') {
                const std::string_view path = info->dlpi_name;
                if (base_name(path).substr(0, s->prefix.size()) == s->prefix) {
                    s->found->emplace_back(path);
                }
            }
            return 0;
        },
        &s);
#else
    (void)prefix;
#endif
    return found;
}

/// Where the functions of one table may be: the global scope, then the handles of the loaded
/// objects named by the prefixes (each taken with RTLD_NOLOAD: nothing is loaded).
inline std::vector<void*> scopes(std::initializer_list<std::string_view> prefixes) {
    std::vector<void*> out;
#if defined(RTLD_DEFAULT)
    out.push_back(RTLD_DEFAULT);
#endif
    for (const std::string_view prefix : prefixes) {
        for (const std::string& path : paths_starting_with(prefix)) {
            if (void* handle = ::dlopen(path.c_str(), RTLD_NOLOAD | RTLD_LAZY)) {
                out.push_back(handle); // kept open on purpose: see the top of this file
            }
        }
    }
    return out;
}

/// The address of `name` in `scope`, or nullptr.
inline void* find(void* scope, const char* name) noexcept {
    return ::dlsym(scope, name);
}

/// A backend's table of functions, looked up once per table type (thread-safe, on first use):
/// from the first scope where `fill` finds every function the table needs. nullptr when no
/// scope has them all; exceptions (out of memory) count as not found.
template <class Table>
const Table* resolve_once(std::initializer_list<std::string_view> prefixes,
                          bool (*fill)(Table&, void*) noexcept) noexcept {
    static const Table* const resolved = [&]() noexcept -> const Table* {
        static Table found;
        try {
            for (void* scope : scopes(prefixes)) {
                Table candidate{};
                if (fill(candidate, scope)) {
                    found = candidate;
                    return &found;
                }
            }
        } catch (...) {
        }
        return nullptr;
    }();
    return resolved;
}

} // namespace loaded_library
} // namespace detail
} // namespace warmpool

#endif // __has_include(<dlfcn.h>)
