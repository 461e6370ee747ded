#!/usr/bin/env bash
# sshd-deps.sh installs Debian's openssh-server (for /usr/sbin/sshd) when it
# is missing; the ssh-docker tests start a private sshd of their own with it.
# Idempotent: when sshd is there it only checks. Run as root (or with sudo).
# It does not start or enable the system's ssh service (the tests never use it).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [ -x /usr/sbin/sshd ]; then
	exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO="sudo"
	else
		echo "sshd-deps.sh: must run as root (or with sudo available)" >&2
		exit 1
	fi
fi
echo "sshd-deps.sh: installing openssh-server" >&2
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends openssh-server >&2
test -x /usr/sbin/sshd
