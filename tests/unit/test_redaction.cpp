// Redaction of SOCI connect strings, and of backend messages that echo them
// (warmpool/detail/soci_connect_string.hpp): every spelling of a secret that a backend accepts is
// hidden, an ambiguous one is hidden to the end of the string, and nothing else changes.

#include <warmpool/detail/soci_connect_string.hpp>

#include <doctest/doctest.h>

#include <cstddef>
#include <random>
#include <string>
#include <vector>

namespace {

namespace cs = warmpool::detail::soci_cs;

/// What describe() shows today for parameters in keyword form, and for any backend but
/// PostgreSQL: the parameters redacted, not read as a bare URI.
std::string shown(const std::string& params) {
    return cs::redact(params, false);
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

/// Characters secrets in the generated strings are made of, besides punctuation: none of them
/// occurs in the keywords, hosts or messages around the secret, nor in "***".
constexpr char secret_letters[] = "BFGHJMQVXYZ0123456789";

bool is_secret_letter(char c) {
    for (const char* p = secret_letters; *p != '\0'; ++p) {
        if (*p == c) {
            return true;
        }
    }
    return false;
}

/// The pieces of 3 characters of `secret` that show in `text`, other than pieces made only of
/// punctuation (which the surroundings may hold too).
std::vector<std::string> pieces_shown(const std::string& text, const std::string& secret) {
    std::vector<std::string> shown_pieces;
    for (std::size_t i = 0; i + 3 <= secret.size(); ++i) {
        const std::string piece = secret.substr(i, 3);
        const bool has_letter =
            is_secret_letter(piece[0]) || is_secret_letter(piece[1]) || is_secret_letter(piece[2]);
        if (has_letter && contains(text, piece)) {
            shown_pieces.push_back(piece);
        }
    }
    return shown_pieces;
}

std::string join(const std::vector<std::string>& parts) {
    std::string out;
    for (const std::string& p : parts) {
        out += (out.empty() ? "" : ", ") + ("\"" + p + "\"");
    }
    return out;
}

// --- Encodings a backend accepts for a secret value -------------------------------------------

std::string backslash_escaped(const std::string& secret, const std::string& special) {
    std::string out;
    for (const char c : secret) {
        if (c == '\\' || special.find(c) != std::string::npos) {
            out += '\\';
        }
        out += c;
    }
    return out;
}

std::string single_quoted(const std::string& secret) {
    return "'" + backslash_escaped(secret, "'") + "'";
}

std::string double_quoted(const std::string& secret) {
    return "\"" + backslash_escaped(secret, "\"") + "\"";
}

/// libpq's unquoted form: a backslash keeps a blank, quote or brace in the value.
std::string unquoted_escaped(const std::string& secret) {
    return backslash_escaped(secret, " \t'\"{}");
}

/// ODBC: {…}, with "}}" for "}".
std::string braced(const std::string& secret) {
    std::string out = "{";
    for (const char c : secret) {
        out += c;
        if (c == '}') {
            out += '}';
        }
    }
    return out + "}";
}

std::string percent_encoded(const std::string& secret) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (const char c : secret) {
        const auto u = static_cast<unsigned char>(c);
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            out += c;
        } else {
            out += '%';
            out += hex[u >> 4];
            out += hex[u & 15];
        }
    }
    return out;
}

} // namespace

// --- Secret keywords ------------------------------------------------------------------------

TEST_CASE("sslpassword, libpq's passphrase of the client key, is redacted") {
    CHECK(shown("host=h sslpassword=KeyPass99 sslkey=/etc/k.pem") ==
          "host=h sslpassword=*** sslkey=/etc/k.pem");
    CHECK(shown("host=h sslkey=/k sslpassword='a b c' user=u") ==
          "host=h sslkey=/k sslpassword=*** user=u");
    CHECK(cs::redact("postgresql://h/db?sslmode=require&sslpassword=KeyPass99&user=u", false) ==
          "postgresql://h/db?sslmode=require&sslpassword=***&user=u");
}

TEST_CASE("every keyword whose name says it holds a secret is redacted, in any letter case") {
    const char* const keys[] = {"password",
                                "PASSWORD",
                                "PassWord",
                                "sslpassword",
                                "SSLPassword",
                                "pass",
                                "Pass",
                                "pwd",
                                "PWD",
                                "Pwd",
                                "PWD1",
                                "PWD2",
                                "PASSWORD3",
                                "passwd",
                                "passphrase",
                                "ssl-password",
                                "ssl.password",
                                "SSLKeyPassword",
                                "TLSPassphrase",
                                "oauth_client_secret",
                                "ClientSecret",
                                "KeyStoreSecret",
                                "AccessToken",
                                "token",
                                "auth_token",
                                "PRIV_KEY_FILE_PWD",
                                "api_key",
                                "ApiKey",
                                "SecretAccessKey",
                                "credentials",
                                "db_pass",
                                "mypw"};
    for (const char* key : keys) {
        INFO("keyword: " << key);
        const std::string k = key;
        CHECK(shown("host=h " + k + "=S3CRETVAL user=u") == "host=h " + k + "=*** user=u");
        CHECK(shown(k + " = 'S3CRET VAL' host=h") == k + " = *** host=h");
        CHECK(shown("DSN=x;UID=u;" + k + "={S3CRET;VAL};Encrypt=yes") ==
              "DSN=x;UID=u;" + k + "=***;Encrypt=yes");
        CHECK_FALSE(contains(shown("DSN=x;" + k + "=S3CRETVAL;UID=u"), "S3CRET"));
    }
}

TEST_CASE("a secret keyword is found inside a longer keyword spelled with spaces (OLE DB style)") {
    CHECK_FALSE(
        contains(shown("Provider=x;Jet OLEDB:Database Password=S3CRETVAL;Mode=Read"), "S3CRET"));
}

TEST_CASE("a percent-encoded secret keyword in a URI query, which libpq decodes, is redacted") {
    CHECK(cs::redact("postgresql://h/db?%70assword=S3CRETVAL&sslmode=require", false) ==
          "postgresql://h/db?%70assword=***&sslmode=require");
    CHECK(cs::redact("postgresql://h/db?ssl%50ASSWORD=S3CRETVAL", false) ==
          "postgresql://h/db?ssl%50ASSWORD=***");
}

// --- Values written without a separator ----------------------------------------------------

TEST_CASE("a password right after a quoted value is redacted: libpq reads it as a keyword") {
    // PQconninfoParse("user='app'password=x") gives user=app and password=x.
    CHECK(shown("user='app'password=x") == "user='app'password=***");
    CHECK(shown("user='app'password=S3CRETVAL host=h") == "user='app'password=*** host=h");
    CHECK(shown("dbname='a b'sslpassword='S3CRET VAL' host=h") ==
          "dbname='a b'sslpassword=*** host=h");
    CHECK(shown("user=\"app\"pass=S3CRETVAL") == "user=\"app\"pass=***");
    CHECK(shown("DSN=x;UID={u}PWD={S3CRETVAL}") == "DSN=x;UID={u}PWD=***");
}

// --- Unquoted values holding blanks -----------------------------------------------------------

TEST_CASE("an unquoted password holding a blank is redacted to the end of the string") {
    CHECK(shown("password=top secret") == "password=***");
    CHECK(shown("host=h password=top secret") == "host=h password=***");
    CHECK(shown("host=h password=top secret dbname=app") == "host=h password=***");
    CHECK(shown("password=top secret=x host=h") == "password=***");
    CHECK(shown("db=x pass=top secret user=u") == "db=x pass=***");
    // After "; " libpq would see a keyword too, and its reading runs to the end.
    CHECK(shown("DSN=x; PWD=top secret;UID=u") == "DSN=x; PWD=***");
}

TEST_CASE("an unbraced ODBC password runs to the ';' before a known keyword, blanks included") {
    CHECK(shown("DSN=x;PWD=top secret;UID=u") == "DSN=x;PWD=***;UID=u");
    CHECK(shown("DSN=x;PWD=top UID=u;Encrypt=yes") == "DSN=x;PWD=***;Encrypt=yes");
    // What follows ';' is no keyword a driver is known to take: perhaps the rest of a password
    // written without the braces it needs.
    CHECK(shown("DSN=x;PWD=a;b=c;UID=u") == "DSN=x;PWD=***");
    CHECK(shown("DSN=x;PWD=a;b c;UID=u") == "DSN=x;PWD=***");
}

TEST_CASE("an unquoted password followed by a known keyword ends at the blank") {
    CHECK(shown("password=S3CRETVAL host=h") == "password=*** host=h");
    CHECK(shown("password=S3CRETVAL   Host = h") == "password=***   Host = h");
    CHECK(shown("password=S3CRETVAL connect_timeout=5") == "password=*** connect_timeout=5");
    CHECK(shown("password=a\\ b host=h") == "password=*** host=h"); // libpq: "a b"
}

TEST_CASE("a value whose quoting is broken or unfinished is redacted to the end of the string") {
    CHECK(shown("password='top secret host=h") == "password=***");
    CHECK(shown("password='top' secret host=h") == "password=***");
    CHECK(shown("password='it''s' host=h") == "password=***");
    CHECK(shown("password=\"top secret host=h") == "password=***");
    CHECK(shown("DSN=x;PWD={top secret;UID=u") == "DSN=x;PWD=***");
    CHECK(shown("password=") == "password=***");
    CHECK(shown("password= host=h") == "password= ***"); // libpq: the password is "host=h"
}

// --- ODBC brace quoting ---------------------------------------------------------------------

TEST_CASE("an ODBC braced password is redacted whole, with \"}}\" standing for \"}\"") {
    CHECK(shown("PWD={a}}b c}") == "PWD=***");
    CHECK(shown("DSN=x;PWD={a}}b c};UID=u") == "DSN=x;PWD=***;UID=u");
    CHECK(shown("DSN=x;PWD={a}}};UID=u") == "DSN=x;PWD=***;UID=u"); // "a}"
    CHECK(shown("DSN=x;PWD={}}};UID=u") == "DSN=x;PWD=***;UID=u");  // "}"
    CHECK(shown("DSN=x;PWD={a}}}};UID=u") == "DSN=x;PWD=***");      // "a}}" and no closing brace
    CHECK(shown("DSN=x;UID=u;PWD={a;b};X=1") == "DSN=x;UID=u;PWD=***;X=1");
    // "}}" and then no closing brace: hidden to the end.
    CHECK(shown("DSN=x;PWD={a}}b;UID=u") == "DSN=x;PWD=***");
    // A single '}' followed by more text is not the end of an ODBC value.
    CHECK(shown("DSN=x;PWD={a}b c};UID=u") == "DSN=x;PWD=***");
}

// --- URIs -----------------------------------------------------------------------------------

TEST_CASE("userinfo in parameters without a scheme is redacted for any backend") {
    // soci_config{factory, "user:password@host"} for a backend other than PostgreSQL: describe()
    // passes bare_uri = false.
    CHECK(cs::redact("user:password@host/db", false) == "user:***@host/db");
    CHECK(cs::redact("user:password@host/db", true) == "user:***@host/db");
    CHECK(cs::redact("user:S3CRETVAL@host:3306/db?charset=utf8", false) ==
          "user:***@host:3306/db?charset=utf8");
    CHECK(cs::redact("u:p@ss w/rd@h/db", false) == "u:***@h/db");
}

TEST_CASE("userinfo after a scheme is redacted up to the last '@', blanks included") {
    CHECK(cs::redact("postgresql://user:s3cr3t@host:5432/db?sslmode=require", false) ==
          "postgresql://user:***@host:5432/db?sslmode=require");
    // PQconninfoParse reads the password "top secret" here.
    CHECK(cs::redact("postgresql://u:top secret@h/db", false) == "postgresql://u:***@h/db");
    // libpq reads "pa" as a port here, and says so.
    CHECK(cs::redact("postgresql://u:pa/ss@h/db", false) == "postgresql://u:***@h/db");
    CHECK(cs::redact("mysql://u:p@ss@h/db", false) == "mysql://u:***@h/db");
    CHECK(shown("dbname=postgresql://u:S3CRETVAL@h/db user=x") ==
          "dbname=postgresql://u:***@h/db user=x");
}

TEST_CASE("a URI query password runs to the next '&', '#' and blanks included") {
    // PQconninfoParse reads "a#b" and "a b" here.
    CHECK(cs::redact("postgresql://h/db?password=a#b&port=5", false) ==
          "postgresql://h/db?password=***&port=5");
    CHECK(cs::redact("postgresql://h/db?password=a b&port=5", false) ==
          "postgresql://h/db?password=***&port=5");
    // What follows '&' is no parameter libpq knows: perhaps the rest of the password.
    CHECK(cs::redact("postgresql://h/db?password=a&b&port=5", false) ==
          "postgresql://h/db?password=***");
}

TEST_CASE("redact() without a hint reads parameters as a bare URI when they look like one") {
    CHECK(cs::redact("user:S3CRETVAL@host/db") == "user:***@host/db");
    CHECK(cs::redact("dbname=app password=S3CRETVAL") == "dbname=app password=***");
    CHECK(cs::redact("postgresql://u:S3CRETVAL@h/db") == "postgresql://u:***@h/db");
}

// --- What must not change -------------------------------------------------------------------

TEST_CASE("strings holding no secret are shown unchanged") {
    const char* const plain[] = {
        "",
        "dbname=app",
        "dbname=app user=u host=h port=5432 sslmode=require",
        "host=/var/run/postgresql dbname=app connect_timeout=5",
        "host=h options='-c search_path=a,b -c statement_timeout=5s' application_name='my app'",
        "passfile=/home/u/.pgpass sslkey=/etc/k.pem sslcert=/etc/c.pem sslrootcert=/etc/ca.pem",
        "db=app.db timeout=5 synchronous=normal shared_cache=true",
        "db=:memory:",
        "app.db",
        "/data/app.db",
        "DSN=x;UID=u;DATABASE=d;Trusted_Connection=yes",
        "DRIVER={ODBC Driver 18 for SQL Server};SERVER=tcp:h,1433;UID=u",
        "Authentication=ActiveDirectoryPassword;UID=u@example.com",
        "postgresql://user@host:5432/db?sslmode=require&application_name=x",
        "user@host:5432/db",
        "postgresql://[::1]:5432/db",
        "host=[::1] port=5432",
        "postgresql://h1:5432,h2:5433/db?target_session_attrs=read-write",
        "user=me@example.com host=h",
        "postgresql://me%40example.com@host/db",
        "service=orcl user=scott",
        "FATAL:  password authentication failed for user \"app\"",
        "could not translate host name \"db.example\" to address: Name or service not known",
        "missing \"=\" after \"x\" in connection info string",
        "invalid connection option \"PassWord\"",
        "Access denied for user 'u'@'h' (using password: YES)",
    };
    for (const char* s : plain) {
        INFO("string: " << s);
        CHECK(cs::redact(s, false) == s);
        CHECK(cs::redact(s) == s);
        CHECK(cs::scrub(s, "host=h password=Qz9Vj7", false) == s);
    }
}

// --- scrub(): backend messages --------------------------------------------------------------

TEST_CASE("scrub removes the words of a blank-holding password that libpq quotes back") {
    // PQconninfoParse("password=top secret host=h"): missing "=" after "secret" ...
    const std::string params = "password=top secret host=h";
    const std::string scrubbed =
        cs::scrub("missing \"=\" after \"secret\" in connection info string", params, false);
    CHECK(scrubbed == "missing \"=\" after \"***\" in connection info string");
    CHECK_FALSE(contains(cs::scrub("bad word \"top\"", params, false), "top"));
}

TEST_CASE("scrub removes a password as a parser unescaped or decoded it") {
    // libpq's backslash escapes
    CHECK_FALSE(
        contains(cs::scrub("echo: it's MINE.", "password='it\\'s MINE' host=h", false), "MINE"));
    // ODBC's "}}"
    const std::string odbc = "DSN=x;PWD={Xy}}Zw Qv};UID=u";
    CHECK_FALSE(contains(cs::scrub("login failed: Xy}Zw Qv", odbc, false), "Zw"));
    CHECK_FALSE(contains(cs::scrub("unknown attribute 'Zw Qv'", odbc, false), "Zw Qv"));
    CHECK_FALSE(contains(cs::scrub("unknown attribute 'Xy}'", odbc, false), "Xy}"));
    // URI percent-encoding
    CHECK_FALSE(contains(
        cs::scrub("bad password p@ss w0rd", "postgresql://u:p%40ss%20w0rd@h/db", false), "w0rd"));
}

TEST_CASE("scrub removes every piece of 3 or more characters of a password, also cut short") {
    const std::string params = "host=h password=CorrectHorse9 user=u";
    CHECK(cs::scrub("near 'CorrectHor…' at line 1", params, false) == "near '***…' at line 1");
    CHECK(cs::scrub("value: rectH", params, false) == "value: ***");
    CHECK(cs::scrub("value: Hor", params, false) == "value: ***");
    // Shorter pieces stay, or no message would survive a long password.
    CHECK(cs::scrub("value: Ho", params, false) == "value: Ho");
}

TEST_CASE("scrub removes secrets of every keyword spelling and of userinfo for any backend") {
    CHECK(cs::scrub("bad key: KeyPass99", "sslpassword=KeyPass99 host=h", false) == "bad key: ***");
    CHECK(cs::scrub("login: x", "user='app'password=Zq7Wv9", false) == "login: x");
    CHECK(cs::scrub("got Zq7Wv9", "user='app'password=Zq7Wv9", false) == "got ***");
    // Factory form, a backend other than PostgreSQL: the parameters are a bare URI.
    CHECK(cs::scrub("cannot log in as u:S3CRETVAL", "u:S3CRETVAL@h/db", false) ==
          "cannot log in as u:***");
    CHECK(cs::scrub("cannot log in as u:S3CRETVAL", "u:S3CRETVAL@h/db") ==
          "cannot log in as u:***");
}

TEST_CASE("scrub also redacts secret spellings in the message itself") {
    CHECK(cs::scrub("rejected: password=other host=h", "host=h", false) ==
          "rejected: password=*** host=h");
    CHECK(cs::scrub("rejected sslpassword=other", "host=h", false) == "rejected sslpassword=***");
}

TEST_CASE("a message holding no piece of the secret is scrubbed unchanged") {
    const std::string message =
        "connection to server at \"db.example\" (10.0.0.1), port 5432 failed: FATAL:  password "
        "authentication failed for user \"app\"";
    CHECK(cs::scrub(message, "host=db.example user=app password=Qz9Vj7", false) == message);
    CHECK(cs::scrub(message, "postgresql://app:Qz9Vj7@db.example/db", false) == message);
}

// --- Generated strings ----------------------------------------------------------------------

TEST_CASE("no generated spelling of a known secret shows it after redact() or scrub()") {
    // A fixed seed: the same strings on every run and platform (mt19937's output is specified).
    std::mt19937 rng(20240611U);
    const auto pick = [&rng](std::size_t n) {
        return static_cast<std::size_t>(rng() % n);
    };
    static constexpr char punctuation[] = " '\"{};&@:=\\/#%?,}";

    const char* const keys[] = {"password", "PASSWORD", "PassWord", "sslpassword", "pass",
                                "pwd",      "PWD",      "passwd",   "PWD2"};
    const char* const around[] = {"host=h", "dbname=app", "user=u", "sslmode=require",
                                  "application_name=svc"};

    int strings = 0;
    for (int round = 0; round < 5000; ++round) {
        // The secret: 3 to 16 characters, letters that appear nowhere else, and punctuation.
        std::string secret;
        const std::size_t length = 3 + pick(14);
        while (secret.size() < length) {
            secret += pick(3) == 0 ? punctuation[pick(sizeof punctuation - 1)]
                                   : secret_letters[pick(sizeof secret_letters - 1)];
        }
        const std::string key = keys[pick(sizeof keys / sizeof keys[0])];
        const std::string before = around[pick(sizeof around / sizeof around[0])];
        const std::string after = around[pick(sizeof around / sizeof around[0])];

        std::string params;
        std::string written; // the value as it stands in `params`
        bool bare = false;
        switch (pick(14)) {
        case 0:
            written = single_quoted(secret);
            params = before + " " + key + "=" + written + " " + after;
            break;
        case 1:
            written = double_quoted(secret);
            params = before + " " + key + " = " + written + " " + after;
            break;
        case 2:
            written = unquoted_escaped(secret);
            params = before + " " + key + "=" + written + " " + after;
            break;
        case 3:
            written = braced(secret);
            params = "DSN=x;" + key + "=" + written + ";UID=u";
            break;
        case 4:
            written = percent_encoded(secret);
            params = "postgresql://u:" + written + "@h/db?" + after;
            break;
        case 5:
            written = percent_encoded(secret);
            params = "postgresql://h/db?" + before + "&" + key + "=" + written + "&" + after;
            break;
        case 6:
            written = percent_encoded(secret);
            params = "u:" + written + "@h/db";
            bare = pick(2) == 0;
            break;
        case 7: // as typed, no escaping at all: ambiguous where it holds blanks or quotes
            written = secret;
            params = before + " " + key + "=" + written + " " + after;
            break;
        case 8:
            if (secret[0] == '{') {
                continue; // ODBC reads a value starting with '{' as braced
            }
            written = secret;
            params = "DSN=x;" + key + "=" + written + ";UID=u";
            break;
        case 9: // userinfo as typed: '@', '/' and blanks unescaped
            written = secret;
            params = "postgresql://u:" + written + "@h/db?" + after;
            break;
        case 10: // first, and last
            written = pick(2) == 0 ? single_quoted(secret) : unquoted_escaped(secret);
            params = pick(2) == 0 ? key + "=" + written + " " + after
                                  : before + " " + key + "=" + written;
            break;
        case 11: // right after a quoted value
            written = pick(2) == 0 ? double_quoted(secret) : unquoted_escaped(secret);
            params = "user='u'" + key + "=" + written + " " + after;
            break;
        case 12: // ODBC with blanks around ';'
            written = braced(secret);
            params = "DSN=x; " + key + "=" + written + " ; UID=u";
            break;
        default: // bare userinfo as typed
            if (secret.rfind("//", 0) == 0) {
                continue; // "u://…" would be a scheme
            }
            written = secret;
            params = "u:" + written + "@h/db";
            break;
        }
        ++strings;
        INFO("params: " << params);
        INFO("secret: " << secret);

        const std::string redacted = cs::redact(params, bare);
        INFO("redacted: " << redacted);
        CHECK_MESSAGE(pieces_shown(redacted, secret).empty(),
                      "shown: " << join(pieces_shown(redacted, secret)));
        CHECK_MESSAGE(pieces_shown(redacted, written).empty(),
                      "shown: " << join(pieces_shown(redacted, written)));

        // Messages echoing the secret: whole, cut short, in pieces, inside other words, and the
        // parameters as given.
        const std::string messages[] = {
            "rejected: " + secret,
            "near '" + secret.substr(0, secret.size() - 1) + "' at line 1",
            "missing \"=\" after \"" + secret.substr(secret.size() / 2) + "\"",
            "x" + secret + "y and " + secret.substr(1),
            "cannot parse " + params,
        };
        for (const std::string& message : messages) {
            const std::string scrubbed = cs::scrub(message, params, bare);
            INFO("message: " << message);
            INFO("scrubbed: " << scrubbed);
            CHECK_MESSAGE(pieces_shown(scrubbed, secret).empty(),
                          "shown: " << join(pieces_shown(scrubbed, secret)));
        }
    }
    CHECK(strings > 4500);
}
