#!/usr/bin/env bash
# The Lambda example (examples/lambda) end to end, on PostgreSQL and MariaDB:
#
#     bash tests/lambda/run.sh BUILD_DIR [scenarios.py options, e.g. --only=deadline]
#
# Builds the targets bootstrap and bootstrap_zip in BUILD_DIR (configuring it first if it has no
# CMakeCache.txt), unzips bootstrap.zip into an empty temporary folder, and runs the scenarios of
# tests/lambda/scenarios.py against the Runtime API emulator (tests/lambda/emulator.py). The
# servers are the ones scripts/servers.sh exported (WARMPOOL_TEST_PG, WARMPOOL_TEST_MYSQL and
# their *_CTL commands); when neither is set, private ones are started here and stopped at the
# end, except under CI=true, where they must come from the caller.
#
# Writes BUILD_DIR/lambda-latency.json (latency figures, failures) and the runtimes' logs to
# BUILD_DIR/lambda-logs/. Exits 0 when every check passed, 1 otherwise.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
strict=0
[[ "${CI:-}" == "true" || "${CI:-}" == "1" ]] && strict=1

die() {
    echo "tests/lambda: $*" >&2
    exit 1
}

[[ $# -ge 1 ]] || die "usage: bash tests/lambda/run.sh BUILD_DIR [scenario options]"
build="$1"
shift
mkdir -p "$build" || die "cannot create the build directory $build"
build="$(cd "$build" && pwd)"

for tool in python3 psql mariadb unzip cmake; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool not found: it is needed to run the Lambda tests (Debian: python3 postgresql-client mariadb-client unzip cmake)"
done

work="$(mktemp -d "${TMPDIR:-/tmp}/warmpool-lambda.XXXXXX")"
own_servers=0
cleanup() {
    if [[ $own_servers == 1 ]]; then
        warmpool_servers_stop
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [[ -z "${WARMPOOL_TEST_PG:-}" && -z "${WARMPOOL_TEST_MYSQL:-}" ]]; then
    if [[ $strict == 1 ]]; then
        die "WARMPOOL_TEST_PG and WARMPOOL_TEST_MYSQL are not set: under CI the servers come from scripts/test (scripts/servers.sh)"
    fi
    echo "tests/lambda: no servers exported; starting private ones (scripts/servers.sh)"
    # shellcheck source=../../scripts/servers.sh
    source "$root/scripts/servers.sh"
    WARMPOOL_SERVERS="postgresql mariadb" warmpool_servers_start || die "the test servers did not start"
    own_servers=1
fi
for var in WARMPOOL_TEST_PG WARMPOOL_TEST_PG_CTL WARMPOOL_TEST_MYSQL WARMPOOL_TEST_MYSQL_CTL; do
    [[ -n "${!var:-}" ]] || die "$var is not set: both servers are needed (scripts/servers.sh exports it)"
done

if [[ ! -f "$build/CMakeCache.txt" ]]; then
    echo "tests/lambda: configuring $build"
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$work/configure.log" 2>&1 ||
        { tail -n 30 "$work/configure.log" >&2; die "configuring $build failed"; }
fi
echo "tests/lambda: building bootstrap and bootstrap_zip in $build"
cmake --build "$build" --target bootstrap bootstrap_zip -j "${WARMPOOL_JOBS:-2}" >"$work/build.log" 2>&1 ||
    { tail -n 40 "$work/build.log" >&2; die "building the targets bootstrap and bootstrap_zip failed (log above)"; }

tree_bootstrap="$build/examples/lambda/bootstrap"
zip="$build/examples/lambda/bootstrap.zip"
[[ -x "$tree_bootstrap" ]] || die "expected the executable $tree_bootstrap after building the target bootstrap; it is not there"
[[ -f "$zip" ]] || die "expected $zip after building the target bootstrap_zip; it is not there"

# The zip as Lambda sees it: unpacked into an empty folder, nothing else from the build tree.
mkdir "$work/task"
unzip -q "$zip" -d "$work/task" || die "unzip $zip failed"
[[ -f "$work/task/bootstrap" ]] || die "expected a top-level 'bootstrap' in $zip; its top level holds: $(ls "$work/task" | tr '\n' ' ')"
[[ -x "$work/task/bootstrap" ]] || die "expected the top-level bootstrap in $zip to be executable (Lambda runs it directly); its mode is $(stat -c %A "$work/task/bootstrap")"

export PYTHONDONTWRITEBYTECODE=1
rm -rf "$build/lambda-logs" # this run's logs only
python3 "$here/scenarios.py" \
    --tree-bootstrap "$tree_bootstrap" \
    --zip-bootstrap "$work/task/bootstrap" \
    --logs "$build/lambda-logs" \
    --report "$build/lambda-latency.json" \
    "$@"
