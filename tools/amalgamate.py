#!/usr/bin/env python3
"""Generate single_include/warmpool/warmpool.hpp from the headers under include/.

Starts from include/warmpool/warmpool.hpp (the core), then include/warmpool/soci.hpp (the SOCI
adapter), and inlines every `#include <warmpool/...>` the first time it is seen. System and
third-party includes are left as they are. The SOCI part is wrapped in a guard, so the one file
serves projects with and without SOCI (see GUARD below).

    python3 tools/amalgamate.py           # rewrite the single header
    python3 tools/amalgamate.py --check   # exit 1 when the committed copy is out of date

Python 3 standard library only.
"""

import argparse
import difflib
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
INCLUDE_DIR = ROOT / "include"
OUTPUT = ROOT / "single_include" / "warmpool" / "warmpool.hpp"
CORE_ENTRY = "warmpool/warmpool.hpp"
SOCI_ENTRY = "warmpool/soci.hpp"

PROJECT_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"](warmpool/[^>"]+)[>"]')
PRAGMA_ONCE = re.compile(r"^\s*#\s*pragma\s+once\b")
# Each header opens with the same two lines; the single header says them once.
FILE_BANNER = (
    "// warmpool — a header-only connection pool for C++17.",
    "// SPDX-License-Identifier: BSL-1.0",
)

BANNER = """\
// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
//
// Single-header edition: generated from include/ by tools/amalgamate.py — do not edit.
// Change the headers under include/warmpool/ and run `python3 tools/amalgamate.py`.
//
// The core (warmpool/warmpool.hpp) is always compiled. The SOCI adapter (warmpool/soci.hpp:
// warmpool::soci_pool, warmpool::soci_traits) follows it under this rule:
//   - WARMPOOL_WITH_SOCI defined to 1: compiled; SOCI's headers must be on the include path.
//   - WARMPOOL_WITH_SOCI defined to 0: left out, even where SOCI is installed.
//   - WARMPOOL_WITH_SOCI not defined: compiled when <soci/soci.h> is found (and Boost's headers
//     too, when that SOCI was built with Boost), and WARMPOOL_WITH_SOCI is then defined to 1.
// Compiling the adapter needs no SOCI library at link time until soci_pool is used; then SOCI's
// core is enough. As with the multi-header layout, each backend's native connection checks are
// compiled in when its headers are on the include path (libpq-fe.h, mysql.h, sqlite3.h) and find
// the client library at run time; WARMPOOL_SOCI_POSTGRESQL / _MYSQL / _SQLITE3 =1 call it
// directly instead (link it and the SOCI backend), =0 leaves the checks out (see soci.hpp).
"""

GUARD_OPEN = """\
#if !defined(WARMPOOL_WITH_SOCI) && defined(__has_include)
#if __has_include(<soci/soci.h>) && __has_include(<soci/soci-config.h>)
#include <soci/soci-config.h>
#if !defined(SOCI_HAVE_BOOST) || __has_include(<boost/version.hpp>)
#define WARMPOOL_WITH_SOCI 1
#endif
#endif
#endif

#if defined(WARMPOOL_WITH_SOCI) && WARMPOOL_WITH_SOCI
"""

GUARD_CLOSE = "#endif // WARMPOOL_WITH_SOCI\n"


class Amalgamator:
    def __init__(self):
        self.seen = set()

    def inline(self, name, chain=()):
        """The text of include/<name> with its project includes inlined, each once."""
        path = INCLUDE_DIR / name
        if not path.is_file():
            via = " (included from " + " -> ".join(chain) + ")" if chain else ""
            raise SystemExit(f"amalgamate: include/{name} not found{via}")
        self.seen.add(name)
        lines = path.read_text(encoding="utf-8").splitlines()
        while lines and lines[0].rstrip() in FILE_BANNER:
            lines.pop(0)
        out = [f"// ---- begin {name} ----"]
        for line in lines:
            if PRAGMA_ONCE.match(line):
                continue
            match = PROJECT_INCLUDE.match(line)
            if match:
                target = match.group(1)
                if target not in self.seen:
                    out.append(self.inline(target, chain + (name,)))
                continue
            out.append(line.rstrip())
        out.append(f"// ---- end {name} ----")
        return "\n".join(out)


def squeeze_blank_lines(text):
    return re.sub(r"\n{3,}", "\n\n", text)


def generate():
    amalgamator = Amalgamator()
    parts = [BANNER, "#pragma once\n", amalgamator.inline(CORE_ENTRY) + "\n"]
    if (INCLUDE_DIR / SOCI_ENTRY).is_file():
        parts += ["\n", GUARD_OPEN, amalgamator.inline(SOCI_ENTRY) + "\n", GUARD_CLOSE]
    else:
        print(f"amalgamate: include/{SOCI_ENTRY} does not exist; core only", file=sys.stderr)
    public = {p.relative_to(INCLUDE_DIR).as_posix() for p in INCLUDE_DIR.rglob("*.hpp")}
    for name in sorted(public - amalgamator.seen):
        print(f"amalgamate: warning: include/{name} is reached from neither {CORE_ENTRY} nor "
              f"{SOCI_ENTRY}, so the single header lacks it", file=sys.stderr)
    return squeeze_blank_lines("\n".join(parts))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed file instead of writing it")
    args = parser.parse_args()

    text = generate()
    relative = OUTPUT.relative_to(ROOT)
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.is_file() else ""
        if current == text:
            print(f"amalgamate: {relative} is up to date")
            return 0
        diff = list(difflib.unified_diff(current.splitlines(), text.splitlines(),
                                         f"{relative} (committed)", f"{relative} (generated)",
                                         lineterm=""))
        print("\n".join(diff[:60]))
        if len(diff) > 60:
            print(f"... {len(diff) - 60} more diff lines")
        print(f"amalgamate: {relative} is out of date; run `python3 tools/amalgamate.py` "
              "and commit the result", file=sys.stderr)
        return 1
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"amalgamate: wrote {relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
