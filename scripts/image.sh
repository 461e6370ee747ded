#!/usr/bin/env bash
# image.sh builds the builder's container image on the Docker daemon that
# DOCKER_HOST names (default: the local one): obb and every executor plugin,
# static (CGO_ENABLED=0), CA certificates, a data dir volume owned by the
# non-root user, FROM scratch, with no network during the build.
#
# usage: IMAGE=name:tag scripts/image.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:?set IMAGE=name:tag}"
VERSION="${VERSION:-$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo dev)}"
CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
ROOTFS="$CTX/rootfs"
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc/ssl/certs" "$ROOTFS/tmp" "$CTX/data"
cd "$REPO"
export CGO_ENABLED=0
go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$ROOTFS/usr/local/bin/obb" ./cmd/obb
for p in docker-tcp ssh-docker buildkit; do
	go build -trimpath -ldflags "-s -w" -o "$ROOTFS/usr/local/bin/obb-plugin-$p" "./plugins/$p"
done
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
# The user the image runs as (passwd, so that tools show a name) and the
# directories it writes.
printf 'root:x:0:0:root:/:/sbin/nologin\nobb:x:65532:65532:open-balena-builder:/var/lib/obb:/sbin/nologin\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nobb:x:65532:\n' >"$ROOTFS/etc/group"
chmod 0700 "$CTX/data"
chmod 1777 "$ROOTFS/tmp"
cp "$REPO/deploy/image/Dockerfile" "$CTX/Dockerfile"
docker build --network none --label "org.opencontainers.image.version=$VERSION" \
	--label "org.opencontainers.image.source=https://github.com/open-balena-builder/builder" -t "$IMAGE" "$CTX"
echo "$IMAGE"
