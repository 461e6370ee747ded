#!/usr/bin/env bash
# deps.sh installs what the end-to-end tests and the demo need on a Debian
# host (run as root): a Docker daemon (docker.io), Debian's docker-registry,
# qemu-user-static with binfmt_misc for arm64 builds, static busybox
# binaries for amd64 and arm64 (base images are made from them, offline),
# runc, and a buildkitd built from github.com/moby/buildkit (the module comes
# from the Go module proxy; Debian has no buildkitd package).
#
# Idempotent: when everything is in place it only runs a few checks.
#
# Outputs:  $CACHE/busybox-amd64  $CACHE/busybox-arm64  $CACHE/buildkitd
# where CACHE=${OBB_CACHE:-<repo>/.cache}
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${OBB_CACHE:-$REPO/.cache}"
export DEBIAN_FRONTEND=noninteractive

log() { echo "deps.sh: $*" >&2; }

# Test packages run in parallel and each runs this script: one at a time.
mkdir -p "$CACHE"
exec 9>"$CACHE/deps.lock"
flock 9

SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO="sudo"
	else
		log "must run as root (or with sudo available)"
		exit 1
	fi
fi

apt_updated=0
apt_update() {
	if [ "$apt_updated" = 0 ]; then
		log "apt-get update"
		$SUDO apt-get update -qq
		apt_updated=1
	fi
}

# 1. Debian packages.
# chromium: the build page's browser test (tests/browser, headless);
# ca-certificates: the bundle scripts/image.sh puts in the image.
PKGS=(docker.io docker-registry qemu-user-static busybox-static binfmt-support postgresql runc chromium ca-certificates)
missing=()
for p in "${PKGS[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if [ "${#missing[@]}" -gt 0 ]; then
	apt_update
	log "installing ${missing[*]}"
	$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. Static busybox binaries.
mkdir -p "$CACHE/debs"
if [ ! -x "$CACHE/busybox-amd64" ] || ! cmp -s /bin/busybox "$CACHE/busybox-amd64"; then
	cp /bin/busybox "$CACHE/busybox-amd64.tmp"
	chmod 0755 "$CACHE/busybox-amd64.tmp"
	mv "$CACHE/busybox-amd64.tmp" "$CACHE/busybox-amd64"
	log "wrote $CACHE/busybox-amd64"
fi

if [ ! -x "$CACHE/busybox-arm64" ]; then
	if ! dpkg --print-foreign-architectures | grep -qx arm64; then
		log "dpkg --add-architecture arm64"
		$SUDO dpkg --add-architecture arm64
		apt_updated=0
	fi
	deb="$(ls "$CACHE"/debs/busybox-static_*_arm64.deb 2>/dev/null | head -n1 || true)"
	if [ -z "$deb" ]; then
		apt_update
		log "apt-get download busybox-static:arm64"
		(cd "$CACHE/debs" && apt-get download -qq -o APT::Sandbox::User=root busybox-static:arm64)
		deb="$(ls "$CACHE"/debs/busybox-static_*_arm64.deb | head -n1)"
	fi
	tmp="$(mktemp -d "$CACHE/debs/x.XXXXXX")"
	dpkg-deb -x "$deb" "$tmp"
	cp "$tmp/bin/busybox" "$CACHE/busybox-arm64.tmp"
	rm -rf "$tmp"
	chmod 0755 "$CACHE/busybox-arm64.tmp"
	mv "$CACHE/busybox-arm64.tmp" "$CACHE/busybox-arm64"
	log "wrote $CACHE/busybox-arm64"
fi

# 3. binfmt_misc + qemu-aarch64 (the F flag makes it work inside containers).
BINFMT=/proc/sys/fs/binfmt_misc
if [ ! -e "$BINFMT/register" ]; then
	log "mounting binfmt_misc"
	$SUDO mount -t binfmt_misc binfmt_misc "$BINFMT"
fi
if [ ! -e "$BINFMT/qemu-aarch64" ]; then
	conf=/usr/lib/binfmt.d/qemu-aarch64.conf
	if [ ! -f "$conf" ]; then
		log "missing $conf (qemu-user-static not installed?)"
		exit 1
	fi
	log "registering qemu-aarch64 from $conf"
	grep -v -e '^#' -e '^[[:space:]]*$' "$conf" | head -n1 | $SUDO tee "$BINFMT/register" >/dev/null
fi
if [ "$(head -n1 "$BINFMT/qemu-aarch64")" != enabled ]; then
	echo 1 | $SUDO tee "$BINFMT/qemu-aarch64" >/dev/null
fi

# 4. buildkitd (the buildkit plugin's tests), built once from the module
# version the plugin's client speaks (plugins/buildkit/go.mod).
BUILDKIT_VERSION=v0.25.2
if [ ! -x "$CACHE/buildkitd" ] || [ "$(cat "$CACHE/buildkitd.version" 2>/dev/null)" != "$BUILDKIT_VERSION" ]; then
	log "building buildkitd $BUILDKIT_VERSION"
	dir="$(cd "$REPO" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "github.com/moby/buildkit@$BUILDKIT_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
	if [ -z "$dir" ] || [ ! -d "$dir/cmd/buildkitd" ]; then
		log "go mod download github.com/moby/buildkit@$BUILDKIT_VERSION failed"
		exit 1
	fi
	(cd "$dir" && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -o "$CACHE/buildkitd.tmp" ./cmd/buildkitd)
	mv "$CACHE/buildkitd.tmp" "$CACHE/buildkitd"
	echo "$BUILDKIT_VERSION" >"$CACHE/buildkitd.version"
	log "wrote $CACHE/buildkitd"
fi

log "ok (cache $CACHE)"
