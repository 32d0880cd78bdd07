#!/usr/bin/env bash
# What a change costs warmpool's checkout cycle (acquire + give back, one thread, no-op traits,
# pool of 4 kept warm): up to four versions compiled into one program and timed in alternating
# rounds, then, where valgrind is installed, counted in instructions by callgrind.
#
#     bash tests/metrics/cost/checkout_cost.sh [--rounds N] [--cycles N] VERSION...
#
# Each VERSION is a commit (checked out with `git worktree add` into a temporary directory,
# removed afterwards) or a directory holding an include/warmpool/ tree (e.g. a patched copy).
# The first is the reference of the ratios. Example: the latency histograms' cost,
#     bash tests/metrics/cost/checkout_cost.sh 8f75a35~1 8f75a35
# Built with g++ -O3 -DNDEBUG, as CMake's Release build of the benchmarks.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(git -C "$HERE" rev-parse --show-toplevel)"
ROUNDS=31
CYCLES=200000
VERSIONS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --cycles) CYCLES="$2"; shift ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) VERSIONS+=("$1") ;;
    esac
    shift
done
if [[ ${#VERSIONS[@]} -lt 1 || ${#VERSIONS[@]} -gt 4 ]]; then
    echo "checkout_cost.sh: give one to four versions (commits or directories); try --help" >&2
    exit 2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/checkout-cost.XXXXXX")"
WORKTREES=()
cleanup() {
    local wt
    for wt in "${WORKTREES[@]}"; do
        git -C "$ROOT" worktree remove --force "$wt" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

CXX="${CXX:-g++}"
FLAGS=(-std=c++17 -O3 -DNDEBUG -g -pthread)
OBJECTS=()
for i in "${!VERSIONS[@]}"; do
    version="${VERSIONS[$i]}"
    if [[ -d "$version/include/warmpool" ]]; then
        include="$(cd "$version" && pwd)/include"
        label="$version"
    else
        wt="$WORK/v$i"
        git -C "$ROOT" worktree add --detach "$wt" "$version" >/dev/null 2>&1 ||
            { echo "checkout_cost.sh: '$version' is neither a directory nor a commit" >&2; exit 2; }
        WORKTREES+=("$wt")
        include="$wt/include"
        label="$version ($(git -C "$wt" log -1 --format='%h %s' | cut -c1-60))"
    fi
    echo "version $i: $label"
    "$CXX" "${FLAGS[@]}" -I"$include" -DWARMPOOL_AB_NAMESPACE="warmpool_v$i" \
        -DWARMPOOL_AB_RUN="run_$i" -DWARMPOOL_AB_PROFILE="profile_$i" \
        -c "$HERE/variant.cpp" -o "$WORK/v$i.o"
    OBJECTS+=("$WORK/v$i.o")
done
# Unused slots: stubs, so main.cpp links with fewer than four versions.
for ((i = ${#VERSIONS[@]}; i < 4; i++)); do
    printf 'double run_%d(long) { return 0; }\nvoid profile_%d(long) {}\n' "$i" "$i" >"$WORK/stub$i.cpp"
    "$CXX" "${FLAGS[@]}" -c "$WORK/stub$i.cpp" -o "$WORK/stub$i.o"
    OBJECTS+=("$WORK/stub$i.o")
done
"$CXX" "${FLAGS[@]}" "$HERE/main.cpp" "${OBJECTS[@]}" -o "$WORK/checkout_cost"
export CHECKOUT_COST_VERSIONS=${#VERSIONS[@]}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "timing: $ROUNDS alternating rounds of $CYCLES cycles each"
"$WORK/checkout_cost" time "$ROUNDS" "$CYCLES"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

if command -v valgrind >/dev/null; then
    n=100000
    for i in "${!VERSIONS[@]}"; do
        out="$WORK/callgrind.$i"
        valgrind --tool=callgrind --callgrind-out-file="$out" \
            --toggle-collect="profile_$i*" "$WORK/checkout_cost" profile "$i" "$n" \
            >/dev/null 2>"$WORK/valgrind.$i.log"
        total="$(awk '/^(summary|totals):/ {print $2; exit}' "$out")"
        awk -v t="$total" -v n="$n" -v i="$i" \
            'BEGIN {printf "version %d: %.1f instructions per cycle (callgrind)\n", i, t / n}'
    done
else
    echo "valgrind not installed: no instruction counts"
fi
