#!/usr/bin/env bash
# The peer's side of `kiln bench keys` (see keys.mjs): graphile-worker 0.18.0 with one named queue
# per key. Usage: DATABASE_URL=postgres://root@127.0.0.1:5432/peer_keys KEYS=10000 JOBS=50000 \
#   CONCURRENCY=100 bench/peer/run-keys.sh
# Installs graphile-worker@0.18.0 from the npm registry into a cache folder (shared with the peer's
# own run.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PEER_CACHE:-${TMPDIR:-/tmp}/kiln-peer-graphile-worker}
mkdir -p "$cache"
if [ ! -d "$cache/node_modules/graphile-worker" ]; then
  (cd "$cache" && npm init -y >/dev/null 2>&1 && npm install --silent --no-audit --no-fund graphile-worker@0.18.0 pg >/dev/null 2>&1)
fi
cp "$here/keys.mjs" "$cache/"
: "${DATABASE_URL:?set DATABASE_URL to a database the peer may use (it creates schema graphile_worker)}"
exec node "$cache/keys.mjs"
