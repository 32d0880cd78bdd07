#!/usr/bin/env bash
# Installs the Node.js subjects of the fleet benchmark into DEST, a build directory:
#   DEST/node_modules   serverless-mysql, serverless-postgres and their drivers, exactly as
#                       package-lock.json pins them (npm ci)
#   DEST/*.js           runtime.js and the two handlers, copied, so that DEST is a complete
#                       function package like a Lambda deployment: `node DEST/runtime.js
#                       DEST/mysql_handler.js` resolves the modules from DEST/node_modules
#
# Usage: tests/fleet/node/install.sh DEST
#
# Idempotent: when DEST/node_modules was installed from the same package-lock.json (a copy is
# kept as DEST/package-lock.json, and npm's own DEST/node_modules/.package-lock.json records
# the result), npm is not run again; the .js files are copied every time, so edits reach DEST.
# Never installs into the source tree. Fails with a message when node or npm is missing or the
# registry cannot be reached.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() {
    echo "install.sh: $*" >&2
    exit 1
}

[[ $# -eq 1 && -n "$1" ]] || die "usage: $0 DEST (a build directory, e.g. build/fleet-node)"
dest="$1"
mkdir -p "$dest" || die "cannot create $dest"
dest="$(cd "$dest" && pwd)"
case "$dest/" in
"$here"/*) die "DEST ($dest) is inside the source directory $here; give a build directory" ;;
esac

command -v node >/dev/null 2>&1 ||
    die "node is not on PATH; install Node.js 20 or newer (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 ||
    die "npm is not on PATH; install it (Debian: apt-get install npm)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[[ "$node_major" -ge 20 ]] || die "node $(node --version) is too old; these modules are tested on Node 20 or newer"

installed() {
    # The lock npm ci installed from, and npm's record that the install completed.
    cmp -s "$here/package-lock.json" "$dest/package-lock.json" &&
        cmp -s "$here/package.json" "$dest/package.json" &&
        [[ -f "$dest/node_modules/.package-lock.json" ]] &&
        [[ -f "$dest/node_modules/serverless-mysql/package.json" ]] &&
        [[ -f "$dest/node_modules/serverless-postgres/package.json" ]]
}

if installed; then
    echo "install.sh: $dest/node_modules already matches package-lock.json; npm not run" >&2
else
    cp "$here/package.json" "$here/package-lock.json" "$dest/"
    registry="$(npm config get registry 2>/dev/null || echo 'the npm registry')"
    # --ignore-scripts: none of the pinned packages needs an install script, and none should
    # run one. A failed ci leaves node_modules incomplete, and `installed` then says so.
    if ! (cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund); then
        rm -f "$dest/package-lock.json" # the next run installs again instead of skipping
        die "npm ci in $dest failed (registry: $registry); check that the registry is reachable (npm ping) and that package-lock.json is intact"
    fi
    installed || die "npm ci in $dest finished but node_modules lacks the pinned modules"
fi

cp "$here/runtime.js" "$here/ledger_common.js" "$here/mysql_handler.js" \
    "$here/postgres_handler.js" "$dest/"
echo "install.sh: ready: node $dest/runtime.js $dest/mysql_handler.js (or postgres_handler.js)" >&2
