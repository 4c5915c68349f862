#!/usr/bin/env bash
# The fresh-machine check: builds a brand-new Debian 12 root with debootstrap (minbase: not even
# python3 or sudo), copies this checkout into it (tracked and untracked-but-not-ignored files,
# so uncommitted work is checked too) and runs the README's two commands there, as a newcomer
# would. One line per step with its time; the full log of each step is kept beside the root.
# Run it (as root) before landing any change to setup, build or dependencies, and record the
# result in docs/testing.md. Not part of CI: it downloads ~600 MB and builds everything twice.
#
#   bash scripts/check_fresh_machine.sh [--root DIR] [--only demo|test] [--keep]
#
# The Debian mirror is the one this machine's apt already uses (override: MIRROR=URL).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)

ROOT=/var/tmp/moetier-fresh-root
ONLY=""
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "check_fresh_machine: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$ONLY" in ""|demo|test) ;; *) echo "check_fresh_machine: --only takes demo or test" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "check_fresh_machine: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }

LOGDIR="$ROOT.logs"
rm -rf "$LOGDIR"
mkdir -p "$LOGDIR"
FAILED=0

# step NAME CMD...: runs CMD with its output in $LOGDIR/NAME.log; prints "NAME  ok|FAILED  N s".
step() {
  local name=$1; shift
  local t0=$SECONDS rc=0
  "$@" >"$LOGDIR/$name.log" 2>&1 || rc=$?
  local dt=$((SECONDS - t0))
  if [ $rc -eq 0 ]; then
    printf '%-22s ok      %5d s\n' "$name" "$dt"
  else
    printf '%-22s FAILED  %5d s  (exit %d; last lines of %s:)\n' "$name" "$dt" "$rc" "$LOGDIR/$name.log"
    tail -n 25 "$LOGDIR/$name.log" | sed 's/^/    /'
    FAILED=1
  fi
  return $rc
}

mirror() {
  if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; return; fi
  local m
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$m" ] || m=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$m" ] || { echo "check_fresh_machine: no Debian mirror in /etc/apt; set MIRROR=URL" >&2; return 1; }
  echo "$m"
}

MOUNTS=()
unmount_all() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
  MOUNTS=()
}
cleanup() {
  unmount_all
  if [ $KEEP -eq 0 ] && [ -d "$ROOT" ]; then rm -rf --one-file-system "$ROOT"; fi
}
trap cleanup EXIT

# Functions run by step() are in an `||` context, where `set -e` does not apply: chain with &&.
install_debootstrap() {
  command -v debootstrap >/dev/null && return 0
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
}

# Network plumbing of this host, like the mirror: when pip here trusts a certificate authority of
# its own (a proxy's, through /etc/pip.conf or PIP_CERT), the new root's pip trusts it too, so
# that scripts/setup.sh --tests can reach PyPI as it would on a machine with direct access.
host_pip_plumbing() {
  local cert=${PIP_CERT:-}
  [ -n "$cert" ] || cert=$(sed -n 's/^[[:space:]]*cert[[:space:]]*=[[:space:]]*//p' /etc/pip.conf 2>/dev/null | head -1)
  [ -n "$cert" ] && [ -f "$cert" ] || return 0
  cp "$cert" "$ROOT/etc/moetier-host-ca.pem" && printf '[global]\ncert = /etc/moetier-host-ca.pem\n' >"$ROOT/etc/pip.conf"
}

make_root() {
  local m
  m=$(mirror) && rm -rf --one-file-system "$ROOT" &&
    debootstrap --variant=minbase bookworm "$ROOT" "$m" &&
    { cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true; } &&
    host_pip_plumbing
}

copy_checkout() {
  mkdir -p "$ROOT/src" &&
    (cd "$SRC" && git ls-files -z --cached --others --exclude-standard |
       xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' _ |
       xargs -0 cp --parents -t "$ROOT/src") &&
    test -f "$ROOT/src/scripts/demo.sh"
}

mount_all() {
  local d
  for d in proc sys dev dev/pts; do
    mkdir -p "$ROOT/$d"
    case $d in
      proc) mount -t proc proc "$ROOT/proc" ;;
      *) mount --bind "/$d" "$ROOT/$d" ;;
    esac
    MOUNTS+=("$ROOT/$d")
  done
}

in_root() {
  chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/bash -c "cd /src && $*"
}

echo "fresh-machine check: Debian 12 (bookworm, minbase) in $ROOT; logs in $LOGDIR"
T0=$SECONDS
step install-debootstrap install_debootstrap || exit 1
step debootstrap make_root || exit 1
step copy-checkout copy_checkout || exit 1
mount_all
if [ "$ONLY" != test ]; then step demo.sh in_root "bash scripts/demo.sh" || true; fi
if [ "$ONLY" != demo ]; then step test.sh in_root "bash scripts/test.sh" || true; fi
unmount_all
TOTAL=$((SECONDS - T0))
if [ $FAILED -eq 0 ]; then
  printf '%-22s ok      %5d s  (%s)\n' "fresh machine" "$TOTAL" "$(date -u +%Y-%m-%d)"
else
  printf '%-22s FAILED  %5d s\n' "fresh machine" "$TOTAL"
fi
exit $FAILED
