#!/usr/bin/env bash
# install-deps.sh PKG... — install the Debian packages that are missing, quietly.
# Idempotent: packages already installed are not touched, and apt-get update
# runs only when something has to be installed. Needs root for installs; as a
# normal user it says what is missing and exits non-zero.
set -euo pipefail

missing=()
for p in "$@"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "missing Debian packages: ${missing[*]}; run as root (sudo make …) or apt-get install them" >&2
	exit 1
fi
echo "installing ${missing[*]} …" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
