// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Reading and redacting SOCI connect strings ("backend://parameters"), for warmpool/soci.hpp.
// Plain string work, no SOCI types, so it is testable on its own.
//
// Secrets are found in these spellings, in any letter case:
//   keyword form   password=secret  pass='a b'  pwd = "x y"  user='u'password=x
//   ODBC           DSN=d;UID=u;PWD={a;b}}c};Encrypt=yes         ("}}" stands for "}")
//   URI userinfo   postgresql://user:secret@host/db            (also bare: user:secret@host/db)
//   URI query      postgresql://host/db?user=u&password=secret  (also ?%70assword=secret)
// A keyword holds a secret when its name says so (is_secret_keyword): password, PWD, pass,
// sslpassword, PWD2, oauth_client_secret, AccessToken, …
//
// Redaction errs on the side of hiding too much. What stands before a keyword tells which
// parsers may read its value (libpq and SOCI after a blank, the start or a quoted value; ODBC
// after ';' or at the start; a URI query after '?' or '&'). Each reads it its own way, and the
// value is hidden as far as the longest reading reaches:
//   libpq, SOCI   '…' or "…" (backslash escapes) to the closing quote; unquoted to a blank (a
//                 backslash keeps one), so "PWD=secret;UID=u" hides ";UID=u" too
//   ODBC          {…} to the closing brace; unbraced to ';', blanks included
//   URI query     to the next '&'
//   URI userinfo  from the first ':' after "//" (or the start of bare parameters) to the last '@'
// A reading must end unambiguously: at the end of the string, or where the parser's separator
// is followed by a keyword some backend knows and '='. Otherwise it runs to the end of the
// string: "password=top secret host=h" (libpq rejects it, quoting "secret"), "PWD=a;b=c;UID=u",
// "password='a b'c", an unterminated quote.

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

constexpr std::size_t npos = std::string_view::npos;

inline bool is_space(char c) noexcept {
    return std::isspace(static_cast<unsigned char>(c)) != 0;
}

inline char lower(char c) noexcept {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

/// Lower-case copy, for matching error texts.
inline std::string to_lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), lower);
    return out;
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
        return npos;
    }
    std::size_t i = at + key.size();
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    if (i >= s.size() || s[i] != '=') {
        return npos;
    }
    ++i;
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    return i;
}

/// A character of a keyword's name, as any of the parsers spells one; '%' for the
/// percent-encoded names libpq accepts in a URI query.
inline bool is_name_char(char c) noexcept {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-' || c == '.' ||
           c == '%';
}

inline int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    const char l = lower(c);
    return l >= 'a' && l <= 'f' ? l - 'a' + 10 : -1;
}

/// `s` with every %XX decoded (a '%' not followed by two hex digits is kept).
inline std::string percent_decode(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() && hex_digit(s[i + 1]) >= 0 &&
            hex_digit(s[i + 2]) >= 0) {
            out += static_cast<char>(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
            i += 2;
        } else {
            out += s[i];
        }
    }
    return out;
}

inline bool ends_with(std::string_view s, std::string_view suffix) noexcept {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

/// True when a keyword named `name` holds a secret: its name, trailing digits aside and
/// percent-encoding decoded, contains "password", "passwd", "passphrase", "secret", "token",
/// "credential" or names an API, access or private key, or it ends in "pwd", "pass" or "pw".
/// Over-broad on purpose ("bypass" counts): a false match only hides a value.
inline bool is_secret_keyword(std::string_view name) {
    std::string n = to_lower(percent_decode(name));
    while (!n.empty() && std::isdigit(static_cast<unsigned char>(n.back())) != 0) {
        n.pop_back();
    }
    static constexpr std::string_view inside[] = {
        "password", "passwd",    "passphrase", "secret",  "token",    "credential", "apikey",
        "api_key",  "accesskey", "access_key", "privkey", "priv_key", "privatekey", "private_key"};
    static constexpr std::string_view endings[] = {"pwd", "pass", "pw"};
    return std::any_of(std::begin(inside), std::end(inside),
                       [&](std::string_view w) { return n.find(w) != std::string::npos; }) ||
           std::any_of(std::begin(endings), std::end(endings),
                       [&](std::string_view w) { return ends_with(n, w); });
}

/// True for the name of a keyword some backend knows (libpq; SOCI's MySQL, SQLite, Oracle,
/// Firebird and DB2 backends; common ODBC attributes), in any letter case. A word after a
/// password that is no such keyword may be the rest of the password.
inline bool is_known_keyword(std::string_view name) {
    static constexpr std::string_view known[] = {
        // libpq
        "host", "hostaddr", "port", "dbname", "user", "passfile", "channel_binding",
        "connect_timeout", "client_encoding", "options", "application_name",
        "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "replication", "gssencmode", "sslmode",
        "sslnegotiation", "requiressl", "sslcompression", "sslcert", "sslkey", "sslcertmode",
        "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer", "require_auth",
        "ssl_min_protocol_version", "ssl_max_protocol_version", "min_protocol_version",
        "max_protocol_version", "krbsrvname", "gsslib", "gssdelegation", "service",
        "target_session_attrs", "load_balance_hosts", "oauth_issuer", "oauth_client_id",
        "oauth_scope", "ssl", "password", "sslpassword", "oauth_client_secret",
        // SOCI MySQL, SQLite, Oracle, Firebird, DB2
        "db", "database", "pass", "pwd", "unix_socket", "sslca", "local_infile", "charset",
        "reconnect", "read_timeout", "write_timeout", "timeout", "synchronous", "shared_cache",
        "vfs", "readonly", "nocreate", "foreign_keys", "mode", "decimals_as_strings", "ncharset",
        "role", "autocommit",
        // ODBC: the Driver Manager's and common drivers' attributes
        "dsn", "uid", "driver", "server", "filedsn", "savefile", "trusted_connection", "encrypt",
        "trustservercertificate", "app", "wsid", "language", "address", "network", "option",
        "servername", "protocol", "logintimeout", "authentication", "applicationintent",
        "multisubnetfailover", "sslverify", "ssl_ca", "ssl_cert", "ssl_key", "ssl_mode", "initstmt",
        "socket", "no_ssps"};
    const std::string n = to_lower(percent_decode(name));
    return std::find(std::begin(known), std::end(known), n) != std::end(known);
}

/// True when a known keyword and `=` start at `at` (blanks allowed before the `=`).
inline bool known_keyword_at(std::string_view s, std::size_t at) {
    std::size_t i = at;
    while (i < s.size() && is_name_char(s[i])) {
        ++i;
    }
    if (i == at || !is_known_keyword(s.substr(at, i - at))) {
        return false;
    }
    while (i < s.size() && is_space(s[i])) {
        ++i;
    }
    return i < s.size() && s[i] == '=';
}

/// The parsers that may read a secret's value, judged by what stands before its keyword.
struct value_context {
    bool libpq = false; // libpq and SOCI's keyword=value form: the keyword follows a blank, the
                        // start, or a quoted value ("user='u'password=x" is two keywords)
    bool odbc = false;  // ODBC: the keyword follows ';' (blanks allowed) or starts the string
    bool query = false; // a URI query: the keyword follows '?' or '&'
};

inline value_context context_of(std::string_view s, std::size_t name) noexcept {
    value_context c;
    if (name > 0 && (s[name - 1] == '?' || s[name - 1] == '&')) {
        c.query = true;
        return c;
    }
    std::size_t i = name;
    while (i > 0 && is_space(s[i - 1])) {
        --i;
    }
    // At the start, only where the string has a ';': a single ODBC attribute is no connect
    // string, and reading "password=x host=h" as one would hide "host=h".
    c.odbc = i == 0 ? s.find(';') != npos : s[i - 1] == ';';
    // Right after ';' libpq would not see a keyword here at all, but a piece of another value.
    c.libpq = name == 0 || s[name - 1] != ';';
    return c;
}

/// True when a libpq value that ends at `k` ends unambiguously: at the end of `s`, or (after
/// blanks, or directly after a quoted value) at the end or before a known keyword and '='.
inline bool libpq_ends_cleanly(std::string_view s, std::size_t k) {
    while (k < s.size() && is_space(s[k])) {
        ++k;
    }
    return k >= s.size() || known_keyword_at(s, k);
}

/// True when an ODBC value that ends at `k` ends unambiguously: at the end of `s` (blanks
/// aside), or at a ';' followed by the end or another attribute, "name=". After an unbraced
/// value the name must be a known keyword: "PWD=a;b=c" may be a password "a;b=c" written
/// without the braces it needs. After a braced one, whose braces show that the writer knew
/// ';' ends the value, any name will do.
inline bool odbc_ends_cleanly(std::string_view s, std::size_t k, bool braced) {
    while (k < s.size() && is_space(s[k])) {
        ++k;
    }
    if (k >= s.size()) {
        return true;
    }
    if (s[k] != ';') {
        return false;
    }
    ++k;
    while (k < s.size() && is_space(s[k])) {
        ++k;
    }
    if (k >= s.size()) {
        return true;
    }
    if (!braced) {
        return known_keyword_at(s, k);
    }
    const std::size_t name = k;
    while (k < s.size() && is_name_char(s[k])) {
        ++k;
    }
    while (k < s.size() && is_space(s[k])) {
        ++k;
    }
    return k > name && k < s.size() && s[k] == '=';
}

/// True when a URI query value that ends at `k` ends unambiguously: at the end of `s`, or at an
/// '&' followed by a known keyword and '='.
inline bool query_ends_cleanly(std::string_view s, std::size_t k) {
    return k >= s.size() || (s[k] == '&' && known_keyword_at(s, k + 1));
}

/// Where a value quoted with `open` ('\'' or '"', backslash escapes) starting at `v` closes:
/// the position after the closing quote, or npos when it does not close.
inline std::size_t after_closing_quote(std::string_view s, std::size_t v, char open) noexcept {
    std::size_t k = v + 1;
    while (k < s.size() && s[k] != open) {
        k += s[k] == '\\' ? 2 : 1;
    }
    return k < s.size() ? k + 1 : npos;
}

/// Where the secret value starting at `v` ends, at the latest: each parser `c` allows reads it,
/// a reading that does not end cleanly runs to the end of `s`, and the longest reading wins.
inline std::size_t secret_end(std::string_view s, std::size_t v, value_context c) {
    const std::size_t n = s.size();
    std::size_t end = v;
    const auto reading = [&](std::size_t k, bool clean) {
        end = std::max(end, k != npos && k <= n && clean ? k : n);
    };
    const char open = v < n ? s[v] : '\0';
    const bool quote = open == '\'' || open == '"';
    if (c.query) {
        if (quote) {
            const std::size_t k = after_closing_quote(s, v, open);
            reading(k, k != npos && query_ends_cleanly(s, k));
        }
        const std::size_t amp = std::min(s.find('&', v), n);
        reading(amp, query_ends_cleanly(s, amp));
    }
    if (c.libpq) {
        if (quote) {
            const std::size_t k = after_closing_quote(s, v, open);
            reading(k, k != npos && libpq_ends_cleanly(s, k));
        } else {
            std::size_t k = v;
            while (k < n && !is_space(s[k])) {
                k += s[k] == '\\' ? 2 : 1;
            }
            k = std::min(k, n);
            reading(k, libpq_ends_cleanly(s, k));
        }
    }
    if (c.odbc) {
        if (open == '{') {
            std::size_t k = v + 1;
            while (k < n && !(s[k] == '}' && (k + 1 >= n || s[k + 1] != '}'))) {
                k += s[k] == '}' ? 2 : 1;
            }
            reading(k < n ? k + 1 : npos, k < n && odbc_ends_cleanly(s, k + 1, true));
        } else {
            const std::size_t semi = std::min(s.find(';', v), n);
            reading(semi, odbc_ends_cleanly(s, semi, false));
        }
    }
    return end;
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

/// True when `s` starts with a URI scheme and "://".
inline bool starts_with_scheme(std::string_view s) noexcept {
    std::size_t i = 0;
    while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) != 0 || s[i] == '+' ||
                            s[i] == '-' || s[i] == '.')) {
        ++i;
    }
    return i > 0 && s.substr(i, 3) == "://";
}

/// True when connect parameters may be a URI without its scheme ("user:secret@host/db"): they
/// are neither keyword=value pairs nor a URI with a scheme. Whatever the backend: any of them
/// may be handed such a string.
inline bool looks_like_bare_uri(std::string_view s) noexcept {
    return !s.empty() && !starts_with_keyword(s) && !starts_with_scheme(s);
}

/// The password in a URI's userinfo, "user:secret@", for the authority starting at
/// `authority`: from the first ':' to the last '@' of `s`, so that a password holding an
/// unescaped '@', '/' or blank is still hidden whole.
inline void find_userinfo_secret(std::string_view s, std::size_t authority,
                                 std::vector<span>& out) {
    const std::size_t at = s.rfind('@');
    if (at == npos || at < authority) {
        return;
    }
    const std::size_t colon = s.find(':', authority);
    if (colon == npos || colon > at) {
        return;
    }
    out.emplace_back(colon + 1, at);
}

/// Every secret value in `s`, in order, not overlapping. `bare_uri`: `s` may itself be a URI
/// without its scheme (the parameters of "postgresql://user:secret@host/db").
inline std::vector<span> find_secrets(std::string_view s, bool bare_uri) {
    std::vector<span> out;
    if (bare_uri && !starts_with_scheme(s)) {
        find_userinfo_secret(s, 0, out);
    }
    for (std::size_t scheme = s.find("://"); scheme != npos; scheme = s.find("://", scheme + 3)) {
        find_userinfo_secret(s, scheme + 3, out);
    }
    // Every '=' whose keyword names a secret, wherever it stands (also inside other values, or
    // right after a quote): finding too many only hides more.
    for (std::size_t eq = s.find('='); eq != npos; eq = s.find('=', eq + 1)) {
        std::size_t name_end = eq;
        while (name_end > 0 && is_space(s[name_end - 1])) {
            --name_end;
        }
        std::size_t name = name_end;
        while (name > 0 && is_name_char(s[name - 1])) {
            --name;
        }
        if (name == name_end || !is_secret_keyword(s.substr(name, name_end - name))) {
            continue;
        }
        std::size_t v = eq + 1;
        while (v < s.size() && is_space(s[v])) {
            ++v;
        }
        const std::size_t end = secret_end(s, v, context_of(s, name));
        out.emplace_back(v, end);
        if (end >= s.size()) {
            break; // hidden to the end
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

/// `s` with every span replaced by "***".
inline std::string replace_spans(std::string_view s, const std::vector<span>& spans) {
    std::string out;
    out.reserve(s.size());
    std::size_t pos = 0;
    for (const span& sp : spans) {
        out.append(s.substr(pos, sp.first - pos));
        out.append("***");
        pos = sp.second;
    }
    out.append(s.substr(pos));
    return out;
}

/// Connect parameters with every secret value replaced by "***". They are read as a URI without
/// its scheme too when they look like one (looks_like_bare_uri), whatever the backend.
inline std::string redact(std::string_view params) {
    return replace_spans(params, find_secrets(params, looks_like_bare_uri(params)));
}

/// As redact(params); `bare_uri` forces the reading as a URI without its scheme.
inline std::string redact(std::string_view params, bool bare_uri) {
    return replace_spans(params, find_secrets(params, bare_uri || looks_like_bare_uri(params)));
}

/// The spellings in which a backend may echo a secret value written as `raw`: as written,
/// without backslash escapes, with ODBC's "}}" (or a doubled quote) undoubled, percent-decoded.
inline void add_secret_forms(std::string_view raw, std::vector<std::string>& forms) {
    const auto add = [&](std::string form) {
        if (!form.empty() && std::find(forms.begin(), forms.end(), form) == forms.end()) {
            forms.push_back(std::move(form));
        }
    };
    add(std::string(raw));
    std::string unescaped;
    for (std::size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] == '\\' && i + 1 < raw.size()) {
            ++i;
        }
        unescaped += raw[i];
    }
    add(unescaped);
    for (const char q : {'}', '\'', '"'}) {
        std::string undoubled;
        for (std::size_t i = 0; i < raw.size(); ++i) {
            undoubled += raw[i];
            if (raw[i] == q && i + 1 < raw.size() && raw[i + 1] == q) {
                ++i;
            }
        }
        add(undoubled);
    }
    add(percent_decode(raw));
}

/// `message` with every run of 3 or more characters that is a piece of one of `forms` replaced
/// by "***", and every occurrence of a form shorter than that too. Adjacent replacements share
/// one "***".
inline std::string mask_pieces(std::string_view message, const std::vector<std::string>& forms) {
    if (forms.empty()) {
        return std::string(message);
    }
    std::string out;
    out.reserve(message.size());
    bool masking = false;
    std::size_t i = 0;
    while (i < message.size()) {
        std::size_t best = 0;
        for (const std::string& form : forms) {
            if (form.size() < 3) {
                if (form.size() > best && message.substr(i, form.size()) == form) {
                    best = form.size();
                }
                continue;
            }
            for (std::size_t p = 0; p + 3 <= form.size(); ++p) {
                std::size_t l = 0;
                while (i + l < message.size() && p + l < form.size() &&
                       message[i + l] == form[p + l]) {
                    ++l;
                }
                if (l >= 3 && l > best) {
                    best = l;
                }
            }
        }
        if (best == 0) {
            out += message[i];
            masking = false;
            ++i;
        } else {
            if (!masking) {
                out += "***";
            }
            masking = true;
            i += best;
        }
    }
    return out;
}

/// A backend's error text made safe to show: secret spellings in it redacted, and every piece of
/// 3 or more characters of a secret value taken from `params` (as written, unescaped or decoded:
/// backends echo words of a connect string they cannot parse) replaced by "***", as is every
/// occurrence of a shorter secret.
inline std::string scrub(std::string_view message, std::string_view params, bool bare_uri) {
    std::vector<std::string> forms;
    for (span sp : find_secrets(params, bare_uri || looks_like_bare_uri(params))) {
        // With the blanks around it: a parser that keeps them may echo them with the value.
        while (sp.first > 0 && is_space(params[sp.first - 1])) {
            --sp.first;
        }
        while (sp.second < params.size() && is_space(params[sp.second])) {
            ++sp.second;
        }
        add_secret_forms(params.substr(sp.first, sp.second - sp.first), forms);
    }
    const std::string masked = mask_pieces(message, forms);
    return replace_spans(masked, find_secrets(masked, false));
}

/// As scrub(message, params, false): `params` are read as a URI without its scheme when they
/// look like one.
inline std::string scrub(std::string_view message, std::string_view params) {
    return scrub(message, params, false);
}

/// True when `key` appears as a keyword (`key=`) in `s`, in keyword or URI query form.
inline bool has_keyword(std::string_view s, std::string_view key) noexcept {
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (keyword_value_at(s, i, key) != npos) {
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

} // namespace soci_cs
} // namespace detail
} // namespace warmpool
