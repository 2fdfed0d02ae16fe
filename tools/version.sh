#!/bin/sh
# version.sh [--deb] — the release version of the checkout in the current
# directory, for -ldflags and the package.
#
#   on a tag             v0.2.0
#   after a tag          v0.2.0-3-gabc1234          (git describe)
#   with local changes   v0.2.0-3-gabc1234-dirty
#   no tag reachable     v0.2.0-dev+gabc1234         (newest release of CHANGELOG.md)
#   not a git checkout   v0.2.0-dev
#
# --deb prints the same as a Debian version (no "v"; "-" of git describe
# becomes "+"/"." so that a build after a tag sorts after the tag, and "~dev"
# so that a build before any tag sorts before the release it leads to):
# 0.2.0, 0.2.0+3.gabc1234, 0.2.0+3.gabc1234.dirty, 0.2.0~dev+gabc1234.
set -eu

base=$(sed -n 's/^## \[\([0-9][0-9.]*\)\].*/\1/p' CHANGELOG.md 2>/dev/null | head -n1)
[ -n "$base" ] || base=0.0.0

if v=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
	:
elif h=$(git rev-parse --short=7 HEAD 2>/dev/null); then
	dirty=
	git diff-index --quiet HEAD -- 2>/dev/null || dirty=.dirty
	v="v$base-dev+g$h$dirty"
else
	v="v$base-dev"
fi

if [ "${1:-}" = "--deb" ]; then
	v=${v#v}
	case "$v" in
	*-dev*) v=$(printf '%s' "$v" | sed 's/-dev/~dev/') ;;
	*-*) v=$(printf '%s' "$v" | sed 's/-/+/; s/-/./g') ;;
	esac
fi
printf '%s\n' "$v"
