// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Reading and redacting SOCI connect strings ("backend://parameters"), for warmpool/soci.hpp.
// Plain string work, no SOCI types, so it is testable on its own.
//
// Passwords are found in three spellings:
//   keyword form   password=secret  pass='a b'  pwd = "x y"  PWD={a;b}   (any letter case)
//   URI userinfo   postgresql://user:secret@host/db            (also bare: user:secret@host/db)
//   URI query      postgresql://host/db?user=u&password=secret
// Redaction errs on the side of hiding too much: an unquoted keyword value runs to the next
// whitespace, so "PWD=secret;UID=u" loses ";UID=u" too rather than risk showing part of a secret.

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace warmpool {
namespace detail {
namespace soci_cs {

using span = std::pair<std::size_t, std::size_t>; // [first, last) of a secret value

inline bool is_space(char c) noexcept {
    return std::isspace(static_cast<unsigned char>(c)) != 0;
}

inline char lower(char c) noexcept {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

inline bool istarts_with(std::string_view s, std::size_t at, std::string_view prefix) noexcept {
    if (at > s.size() || s.size() - at < prefix.size()) {
        return false;
    }
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        if (lower(s[at + i]) != lower(prefix[i])) {
            return false;
        }
    }
    return true;
}

/// A keyword may start at the beginning, after whitespace, or after a separator of the URI query
/// or ODBC forms.
inline bool keyword_boundary(std::string_view s, std::size_t at) noexcept {
    if (at == 0) {
        return true;
    }
    const char c = s[at - 1];
    return is_space(c) || c == ';' || c == '?' || c == '&';
}

/// If `key` starts at `at` as a keyword followed by `=` (spaces allowed around it), the position
/// of its value; npos otherwise.
inline std::size_t keyword_value_at(std::string_view s, std::size_t at,
                                    std::string_view key) noexcept {
    if (!keyword_boundary(s, at) || !istarts_with(s, at, key)) {
        return std::string_view::npos;
    }
    std::size_t i = at + key.size();
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    if (i >= s.size() || s[i] != '=') {
        return std::string_view::npos;
    }
    ++i;
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    return i;
}

/// End of the value starting at `v`: a quoted value ('..', "..", {..}) up to and including its
/// closing quote (backslash escapes honoured), an unquoted one up to whitespace (or `&`/`#` in a
/// URI query, where `in_query`).
inline std::size_t value_end(std::string_view s, std::size_t v, bool in_query) noexcept {
    if (v >= s.size()) {
        return v;
    }
    const char open = s[v];
    if (open == '\'' || open == '"' || open == '{') {
        const char close = open == '{' ? '}' : open;
        std::size_t k = v + 1;
        while (k < s.size() && s[k] != close) {
            k += (s[k] == '\\') ? 2 : 1;
        }
        return std::min(k + 1, s.size());
    }
    std::size_t k = v;
    while (k < s.size() && !is_space(s[k]) && !(in_query && (s[k] == '&' || s[k] == '#'))) {
        k += (s[k] == '\\') ? 2 : 1;
    }
    return std::min(k, s.size());
}

/// True when `s` starts (after blanks) with `identifier =`: libpq's and SOCI's keyword/value
/// form, as opposed to a URI such as "user:secret@host/db".
inline bool starts_with_keyword(std::string_view s) noexcept {
    std::size_t i = 0;
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    const std::size_t name = i;
    while (i < s.size() &&
           (std::isalnum(static_cast<unsigned char>(s[i])) != 0 || s[i] == '_' || s[i] == '-')) {
        ++i;
    }
    if (i == name) {
        return false;
    }
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    return i < s.size() && s[i] == '=';
}

/// The password in a URI's userinfo: "user:secret@" starting at `authority`. The last `@` before
/// the next whitespace ends it, so a password holding an unescaped `@` is still hidden whole.
inline void find_userinfo_secret(std::string_view s, std::size_t authority,
                                 std::vector<span>& out) {
    std::size_t end = authority;
    while (end < s.size() && !is_space(s[end])) {
        ++end;
    }
    const std::string_view auth = s.substr(authority, end - authority);
    const std::size_t at = auth.rfind('@');
    if (at == std::string_view::npos) {
        return;
    }
    const std::size_t colon = auth.substr(0, at).find(':');
    if (colon == std::string_view::npos) {
        return;
    }
    out.emplace_back(authority + colon + 1, authority + at);
}

/// Every password value in `s`, in order, not overlapping. `bare_uri`: treat `s` itself as a
/// URI without its scheme (the parameters of "postgresql://user:secret@host/db").
inline std::vector<span> find_secrets(std::string_view s, bool bare_uri) {
    std::vector<span> out;
    if (bare_uri && s.find("://") == std::string_view::npos) {
        find_userinfo_secret(s, 0, out);
    }
    for (std::size_t scheme = s.find("://"); scheme != std::string_view::npos;
         scheme = s.find("://", scheme + 3)) {
        find_userinfo_secret(s, scheme + 3, out);
    }
    static constexpr std::string_view keys[] = {"password", "pwd", "pass"};
    for (std::size_t i = 0; i < s.size(); ++i) {
        for (const std::string_view key : keys) {
            const std::size_t v = keyword_value_at(s, i, key);
            if (v != std::string_view::npos) {
                const bool in_query = i > 0 && (s[i - 1] == '?' || s[i - 1] == '&');
                const std::size_t end = value_end(s, v, in_query);
                out.emplace_back(v, end);
                i = std::max(end, v + 1) - 1; // resume after the value
                break;
            }
        }
    }
    std::sort(out.begin(), out.end());
    std::vector<span> merged;
    for (const span& sp : out) {
        if (!merged.empty() && sp.first <= merged.back().second) {
            merged.back().second = std::max(merged.back().second, sp.second);
        } else {
            merged.push_back(sp);
        }
    }
    return merged;
}

/// `s` with every password value replaced by "***".
inline std::string redact(std::string_view s, bool bare_uri) {
    std::string out;
    out.reserve(s.size());
    std::size_t pos = 0;
    for (const span& sp : find_secrets(s, bare_uri)) {
        out.append(s.substr(pos, sp.first - pos));
        out.append("***");
        pos = sp.second;
    }
    out.append(s.substr(pos));
    return out;
}

/// A backend's error text made safe to show: password spellings in it redacted, and every
/// occurrence of a password taken from `params` (whole, and each blank-separated piece of it, in
/// case a parser split a quoted value) replaced by "***".
inline std::string scrub(std::string message, std::string_view params, bool bare_uri) {
    std::vector<std::string> secrets;
    for (const span& sp : find_secrets(params, bare_uri)) {
        std::string_view value = params.substr(sp.first, sp.second - sp.first);
        if (value.size() >= 2 &&
            (value.front() == '\'' || value.front() == '"' || value.front() == '{')) {
            value = value.substr(1, value.size() - 2);
        }
        if (!value.empty()) {
            secrets.emplace_back(value);
        }
        std::size_t i = 0;
        while (i < value.size()) {
            while (i < value.size() && is_space(value[i])) {
                ++i;
            }
            std::size_t j = i;
            while (j < value.size() && !is_space(value[j])) {
                ++j;
            }
            if (j - i >= 2 && j - i < value.size()) {
                secrets.emplace_back(value.substr(i, j - i));
            }
            i = j;
        }
    }
    // Longest first, so a piece never leaves the rest of a longer secret behind.
    std::sort(secrets.begin(), secrets.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    for (const std::string& secret : secrets) {
        for (std::size_t at = message.find(secret); at != std::string::npos;
             at = message.find(secret, at + 3)) {
            message.replace(at, secret.size(), "***");
        }
    }
    return redact(message, false);
}

/// True when `key` appears as a keyword (`key=`) in `s`, in keyword or URI query form.
inline bool has_keyword(std::string_view s, std::string_view key) noexcept {
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (keyword_value_at(s, i, key) != std::string_view::npos) {
            return true;
        }
    }
    return false;
}

/// True for a backend name SOCI can name: non-empty, [a-z0-9_].
inline bool valid_backend_name(std::string_view name) noexcept {
    return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
}

/// Lower-case copy, for matching error texts.
inline std::string to_lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), lower);
    return out;
}

} // namespace soci_cs
} // namespace detail
} // namespace warmpool
