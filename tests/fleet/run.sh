#!/usr/bin/env bash
# The fleet benchmark (tests/fleet/fleet.py, docs/fleet.md), with everything it needs:
#
#     bash tests/fleet/run.sh BUILD_DIR [--smoke] [--max-connections N] [fleet.py options]
#
# Builds the targets bootstrap (examples/lambda) and fleet_naive (tests/fleet/naive) in BUILD_DIR
# (configuring it first if it has no CMakeCache.txt), installs the Node subjects into
# BUILD_DIR/fleet-node (tests/fleet/node/install.sh: npm, pinned by package-lock.json), starts a
# PostgreSQL and a MariaDB of its own (scripts/servers.sh) with max_connections N (default 20;
# MariaDB's extra_port for the monitor), runs fleet.py, and stops the servers on exit.
#
# The servers are always its own, also under CI=true: the benchmark needs a small
# max_connections and its own accounts, which the shared test servers must not get.
#
# --smoke: the small run scripts/test's stage `fleet` runs: one seed, both servers, all four
# subjects, 8 environments against max_connections 10, 8 s of arrivals each, with the correctness
# checks (--check correctness), written to BUILD_DIR/fleet-smoke. Otherwise fleet.py's defaults
# (the full shape, one seed unless --seeds says more) and --out as given (default
# BUILD_DIR/fleet-results). Later options override the preset's. The processes' logs go to
# BUILD_DIR/fleet-logs, one folder per run.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

die() {
    echo "tests/fleet: $*" >&2
    exit 1
}

[[ $# -ge 1 && "$1" != -* ]] ||
    die "usage: bash tests/fleet/run.sh BUILD_DIR [--smoke] [--max-connections N] [fleet.py options]"
build="$1"
shift
mkdir -p "$build" || die "cannot create the build directory $build"
build="$(cd "$build" && pwd)"

smoke=0
max_connections=""
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
    --smoke) smoke=1 ;;
    --max-connections)
        [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--max-connections needs a whole number"
        max_connections="$2"
        shift
        ;;
    *) args+=("$1") ;;
    esac
    shift
done
preset=(--out "$build/fleet-results")
if [[ $smoke == 1 ]]; then
    # MariaDB's least max_connections is 10.
    [[ -n "$max_connections" ]] || max_connections=10
    # Eight environments and few slots (PostgreSQL: 10 less 3 reserved), a burst at 1.5 s whose
    # environments are reclaimed 3 s later, leaving zombies, and a second burst at 5.5 s that
    # needs their slots: pressure within 8 s.
    preset=(--seeds 1 --rate 3 --duration 8 --bursts 2 --burst-size 8 --burst-times 1.5,5.5
        --work-ms 200 --concurrency 8 --reclaim-s 3 --reap-idle-ms 2000 --check correctness
        --out "$build/fleet-smoke" --title "Fleet benchmark, smoke run (tests/fleet/run.sh --smoke)")
fi

[[ -n "$max_connections" ]] || max_connections=20

for tool in python3 psql mariadb cmake node npm; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool not found: the fleet benchmark needs it (Debian: python3 postgresql-client mariadb-client cmake nodejs npm)"
done

if [[ ! -f "$build/CMakeCache.txt" ]]; then
    echo "tests/fleet: configuring $build"
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/fleet-configure.log" 2>&1 ||
        { tail -n 30 "$build/fleet-configure.log" >&2; die "configuring $build failed"; }
fi
echo "tests/fleet: (${SECONDS} s) building bootstrap and fleet_naive in $build"
cmake --build "$build" --target bootstrap fleet_naive -j "${WARMPOOL_JOBS:-2}" >"$build/fleet-build.log" 2>&1 ||
    { tail -n 40 "$build/fleet-build.log" >&2; die "building the targets bootstrap and fleet_naive failed (log above)"; }
bootstrap="$build/examples/lambda/bootstrap"
naive="$build/tests/fleet/naive/fleet_naive"
[[ -x "$bootstrap" ]] || die "expected $bootstrap after building the target bootstrap"
[[ -x "$naive" ]] || die "expected $naive after building the target fleet_naive"

echo "tests/fleet: (${SECONDS} s) installing the Node subjects into $build/fleet-node"
bash "$here/node/install.sh" "$build/fleet-node" || die "installing the Node subjects failed (above)"

# shellcheck source=../../scripts/servers.sh
source "$root/scripts/servers.sh"
trap 'warmpool_servers_stop' EXIT
trap 'exit 130' INT TERM
monitor_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# The monitor must never take a subject's slot. MariaDB: it logs in on the extra_port, whose
# connections are counted apart from max_connections. PostgreSQL: a superuser's session takes a
# slot of the common pool too (superuser_reserved_connections only keeps the last 3 free of
# non-superusers), so the server gets one more: the subjects keep max_connections - 3.
export WARMPOOL_PG_OPTIONS="-c max_connections=$((max_connections + 1))"
export WARMPOOL_MYSQL_OPTIONS="--max-connections=$max_connections --extra-port=$monitor_port --extra-max-connections=2"
export FLEET_MYSQL_MONITOR_PORT="$monitor_port"
WARMPOOL_SERVERS="postgresql mariadb" warmpool_servers_start ||
    die "the servers did not start (max_connections $max_connections; above)"

export PYTHONDONTWRITEBYTECODE=1
python3 "$here/fleet.py" --bootstrap "$bootstrap" --naive "$naive" --node-dir "$build/fleet-node" \
    --logs "$build/fleet-logs" "${preset[@]}" "${args[@]}"
