#!/usr/bin/env bash
# tests/setup/fresh-roots.sh
#
# Proves scripts/install-deps.sh on fresh Debian machines: it runs
# `install-deps.sh --tests` twice, as root, in chroots of three fresh roots
# and checks what it did:
#
#   bookworm           Debian 12, debootstrap --variant=minbase
#   bookworm-qemu-bpo  the same with qemu-utils from bookworm-backports
#                      installed and that source removed again (apt-get
#                      update run after): like this project's machine image
#   trixie             Debian 13, debootstrap --variant=minbase
#
# dpkg in the roots runs with force-unsafe-io (as in this machine's image).
# Each root gets this machine's Debian apt sources (its deb822 and one-line
# entries for .../debian and .../debian-security, suites renamed to the
# root's release, no backports, no third-party sources); debootstrap uses the
# same mirror (default http://deb.debian.org/debian).
#
# Checks per root, one line each: exit status 0; no package removed or
# downgraded; qemu-system-x86_64 and qemu-img of one version; every tool the
# tests use present; i386 a foreign architecture; the root's own source files
# byte-identical; only in bookworm-qemu-bpo one new source file,
# amitool-bookworm-backports.sources, and qemu-system-x86 at qemu-utils'
# ~bpo12 version. Then a second run: exit 0, "nothing to install", no
# package, source or apt list changed.
#
# Cache (reused; a root tarball older than 30 days is rebuilt, and so is
# bookworm-qemu-bpo's once bookworm-backports has another qemu-utils):
#   ${AMITOOL_ROOTS_CACHE:-$HOME/.cache/amitool/roots}
#     <root>-minbase-<arch>.tar.zst   the roots as built (.qemu-utils: its version)
#     apt-archives-<suite>/           .debs, bind-mounted on each root's
#                                     /var/cache/apt/archives (and debootstrap's
#                                     --cache-dir), so nothing is fetched twice;
#                                     pruned to what the roots use
#     logs/<root>.{build,run1,run2}.log  the last run's output
# The roots are unpacked under ${TMPDIR:-/tmp} and removed at the end; every
# mount (proc, sysfs, /dev, /dev/pts, the .deb cache) is undone on any exit.
#
# Environment:
#   AMITOOL_ROOTS_CACHE  the cache dir above
#   AMITOOL_ROOTS        which roots (default: "bookworm bookworm-qemu-bpo trixie")
#   AMITOOL_ROOTS_JOBS   2 (default): the bookworm roots and trixie side by side;
#                        1: one after another
#   AMITOOL_ROOTS_MAX_AGE_DAYS  rebuild a root tarball older than this (30)
#
# Needs root, debootstrap and chroot; without them it prints
# "fresh-roots: SKIPPED: <why>" and exits 0. The last line is
# "fresh-roots: OK (N roots, T s)" or "fresh-roots: FAILED: <root>: <check>".
set -euo pipefail

PROG=fresh-roots
export LC_ALL=C
T0=$EPOCHREALTIME

skip() { echo "$PROG: SKIPPED: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "not root (debootstrap and chroot need root)"
for c in debootstrap chroot mount umount; do
  command -v "$c" >/dev/null || skip "$c not found (scripts/install-deps.sh --tests installs debootstrap)"
done

here=$(cd "$(dirname "$0")" && pwd)
SCRIPT=$(cd "$here/../.." && pwd)/scripts/install-deps.sh
[ -r "$SCRIPT" ] || { echo "$PROG: FAILED: -: $SCRIPT not found"; exit 1; }

CACHE=${AMITOOL_ROOTS_CACHE:-$HOME/.cache/amitool/roots}
JOBS=${AMITOOL_ROOTS_JOBS:-2}
MAX_AGE_DAYS=${AMITOOL_ROOTS_MAX_AGE_DAYS:-30}
read -ra ROOTS <<<"${AMITOOL_ROOTS:-bookworm bookworm-qemu-bpo trixie}"
ARCH=$(dpkg --print-architecture)
ROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
BPO_SOURCE=amitool-bookworm-backports.sources
# dpkg in the roots skips fsync, as in this machine's image (and Docker's
# Debian images): it halves the install time of a throwaway root. Added at
# each unpack, never packed into a tarball.
UNSAFE_IO=etc/dpkg/dpkg.cfg.d/amitool-fresh-roots-unsafe-io

declare -A SUITE=([bookworm]=bookworm [bookworm-qemu-bpo]=bookworm [trixie]=trixie)
for n in "${ROOTS[@]}"; do
  [ -n "${SUITE[$n]:-}" ] || { echo "$PROG: FAILED: $n: unknown root (known: ${!SUITE[*]})"; exit 1; }
done

if command -v zstd >/dev/null; then
  EXT=zst; PACK=(zstd -q -T0 -3); UNPACK=(zstd -dcq)
else
  EXT=gz; PACK=(gzip -1); UNPACK=(gzip -dc)
fi
TAR_OPTS=(--numeric-owner --xattrs --xattrs-include='*')

mkdir -p "$CACHE/logs"
# One run at a time per cache: the .deb dirs are shared.
exec 9>"$CACHE/.lock"
flock -w 7200 9 || { echo "$PROG: FAILED: -: another fresh-roots run holds $CACHE/.lock"; exit 1; }

rm -f "$CACHE"/*.tmp.*   # a tarball whose packing was interrupted
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fresh-roots.XXXXXX")

# --------------------------------------------------------------------------
# Clean-up: on every exit, also a failed or interrupted one.
# --------------------------------------------------------------------------
mounts_under() { # DIR -> mount points at or below DIR, deepest first
  awk -v d="$1" '{ m = $5; gsub(/\\040/, " ", m); if (m == d || index(m, d "/") == 1) print m }' \
    /proc/self/mountinfo | sort -r
}
unmount_under() { # DIR: unmount all below it; fails if any is left
  local m
  while read -r m; do
    [ -n "$m" ] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(mounts_under "$1")
  [ -z "$(mounts_under "$1")" ]
}
chroot_pids() { # DIR -> processes whose root is below DIR (started in our chroots)
  local p r
  for p in /proc/[0-9]*; do
    r=$(readlink "$p/root" 2>/dev/null) || continue
    case $r in "$1"/*) echo "${p#/proc/}" ;; esac
  done
}
descendants() { # PID... -> their child processes, recursively
  local p c
  for p in "$@"; do
    for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do descendants "$c"; echo "$c"; done
  done
}
LANE_PIDS=()
cleanup() {
  local rc=$? pids
  set +e
  trap - EXIT INT TERM
  if [ ${#LANE_PIDS[@]} -gt 0 ]; then
    pids=$(descendants "${LANE_PIDS[@]}")
    kill "${LANE_PIDS[@]}" $pids 2>/dev/null
  fi
  pids=$(chroot_pids "$WORK")
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null; sleep 1
    # shellcheck disable=SC2086
    kill -9 $(chroot_pids "$WORK") 2>/dev/null
  fi
  if unmount_under "$WORK"; then
    rm -rf "$WORK"
  else
    echo "$PROG: could not unmount $(mounts_under "$WORK" | paste -sd' ' -); $WORK left in place" >&2
    rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------
# This machine's Debian apt sources, as "URI|SUITE|COMPONENTS|SIGNED-BY" lines
# (deb822 files and one-line lists; amitool-*.sources, written by
# install-deps.sh, are not the machine's own).
# --------------------------------------------------------------------------
host_entries() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    awk '
      /^[ \t]*deb[ \t]/ {
        signed = ""; i = 2
        if ($2 ~ /^\[/) {
          opts = ""
          for (; i <= NF; i++) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break } }
          if (match(opts, /signed-by=[^] ]+/)) signed = substr(opts, RSTART + 10, RLENGTH - 10)
        }
        comps = ""
        for (j = i + 2; j <= NF; j++) comps = comps (comps == "" ? "" : " ") $j
        print $i "|" $(i + 1) "|" comps "|" signed
      }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    case ${f##*/} in amitool-*) continue ;; esac
    awk '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && enabled != "no")
          for (u = 1; u <= nu; u++) for (s = 1; s <= ns; s++) print uris[u] "|" suites[s] "|" comps "|" signed
        types = ""; nu = 0; ns = 0; comps = ""; signed = ""; enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ { next }   # a continuation line (an inline key): not a path
      {
        key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^[ \t]+/, "")
        if (key == "types") types = $0
        else if (key == "uris") nu = split($0, uris, /[ \t]+/)
        else if (key == "suites") ns = split($0, suites, /[ \t]+/)
        else if (key == "components") comps = $0
        else if (key == "signed-by") signed = $0
        else if (key == "enabled") enabled = tolower($0)
      }
      END { flush() }' "$f"
  done
}
# Only Debian's archive and security entries; no backports.
HOST_DEBIAN=$(host_entries | awk -F'|' '$1 ~ /\/debian(-security)?\/?$/ && $2 !~ /-backports/' || true)
MIRROR=$(awk -F'|' '$1 !~ /-security\/?$/ { print $1; exit }' <<<"$HOST_DEBIAN")
MIRROR=${MIRROR:-http://deb.debian.org/debian}

# write_sources ROOT SUITE: the root's /etc/apt/sources.list.d/debian.sources,
# the host's Debian entries with their suites renamed to SUITE
# (bookworm-updates -> trixie-updates ...), and nothing else.
write_sources() {
  local R=$1 suite=$2 entries
  entries=$(awk -F'|' -v r="$suite" '{ s = $2; sub(/^[^-\/]+/, r, s); print $1 "|" s "|" $3 "|" $4 }' <<<"$HOST_DEBIAN")
  if [ -z "$HOST_DEBIAN" ]; then
    entries="$MIRROR|$suite|main|/usr/share/keyrings/debian-archive-keyring.gpg
$MIRROR|$suite-updates|main|/usr/share/keyrings/debian-archive-keyring.gpg
http://deb.debian.org/debian-security|$suite-security|main|/usr/share/keyrings/debian-archive-keyring.gpg"
  fi
  rm -f "$R/etc/apt/sources.list" "$R"/etc/apt/sources.list.d/*
  mkdir -p "$R/etc/apt/sources.list.d"
  # one stanza per URI, components and key, suites in the host's order
  awk -F'|' -v root="$R" '
    {
      k = $1 "|" $3 "|" $4
      if (!(k in suites)) { order[++n] = k; suites[k] = "" }
      if (index(" " suites[k] " ", " " $2 " ") == 0) suites[k] = suites[k] (suites[k] == "" ? "" : " ") $2
    }
    END {
      print "# This machine'"'"'s Debian apt sources, suites renamed to this root'"'"'s release (tests/setup/fresh-roots.sh)"
      for (i = 1; i <= n; i++) {
        split(order[i], f, "|")
        print ""; print "Types: deb"; print "URIs: " f[1]; print "Suites: " suites[order[i]]
        print "Components: " (f[2] == "" ? "main" : f[2])
        if (f[3] ~ /^\// && system("test -e \"" root f[3] "\"") == 0) print "Signed-By: " f[3]
      }
    }' <<<"$entries" >"$R/etc/apt/sources.list.d/debian.sources"
}

# --------------------------------------------------------------------------
# Roots: chroot helpers, the cached tarballs
# --------------------------------------------------------------------------
in_root() { # ROOT CMD...: run in the chroot with a clean environment
  local R=$1; shift
  chroot "$R" /usr/bin/env -i PATH="$ROOT_PATH" HOME=/root \
    ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} "$@"
}
mount_root() { # ROOT SUITE
  local R=$1 debs=$CACHE/apt-archives-$2
  mkdir -p "$debs/partial" "$R/proc" "$R/sys" "$R/dev" "$R/var/cache/apt/archives"
  rm -f "$R/etc/resolv.conf"   # may be a symlink: never write through it
  cp -L /etc/resolv.conf "$R/etc/resolv.conf"
  mount -t proc proc "$R/proc" &&
  mount -t sysfs sysfs "$R/sys" &&
  mount --bind /dev "$R/dev" &&
  mount --make-rslave "$R/dev" &&      # nothing mounted below it reaches the host's /dev
  mount --bind /dev/pts "$R/dev/pts" &&
  mount --bind "$debs" "$R/var/cache/apt/archives" &&
  mkdir -p "$R/etc/dpkg/dpkg.cfg.d" && echo force-unsafe-io >"$R/$UNSAFE_IO"
}
tarball() { echo "$CACHE/$1-minbase-$ARCH.tar.$EXT"; }
fresh_tarball() { [ -s "$1" ] && [ -z "$(find "$1" -mmin +$((MAX_AGE_DAYS * 1440)))" ]; }
pack() { # DIR TARBALL
  unmount_under "$1" || return 1
  rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/*.bin "$1/$UNSAFE_IO"
  tar -C "$1" "${TAR_OPTS[@]}" -cf - . | "${PACK[@]}" >"$2.tmp.$$" && mv "$2.tmp.$$" "$2"
}
unpack() { # TARBALL DIR
  mkdir -p "$2" && "${UNPACK[@]}" "$1" | tar -C "$2" "${TAR_OPTS[@]}" -xpf -
}

# bookworm-backports keeps only its newest qemu: a cached bookworm-qemu-bpo
# whose qemu-utils it no longer has is rebuilt (else install-deps.sh would
# meet a machine unlike this one's image). Unsure (offline): keep it.
bpo_moved_on() { # TARBALL -> 0 if bookworm-backports has another qemu-utils now
  local d=$WORK/bpo-probe now had
  had=$(cat "$1.qemu-utils" 2>/dev/null) || return 0
  mkdir -p "$d"
  /usr/lib/apt/apt-helper -o APT::Sandbox::User=root download-file \
    "$MIRROR/dists/bookworm-backports/main/binary-$ARCH/Packages.xz" "$d/Packages.xz" >/dev/null 2>&1 || return 1
  now=$(xz -dc "$d/Packages.xz" 2>/dev/null | awk '/^Package: / { p = $2 } p == "qemu-utils" && /^Version: / { v = $2 } END { print v }') || return 1
  [ -n "$now" ] && [ "$now" != "$had" ] || return 1
  say bookworm-qemu-bpo "bookworm-backports has qemu-utils $now now, the cached root $had"
}

# ensure_tarball NAME: a fresh cached tarball of root NAME (built if missing or old)
ensure_tarball() {
  local name=$1 suite=${SUITE[$1]} tb b B log t qu=""
  tb=$(tarball "$name")
  if fresh_tarball "$tb"; then
    [ "$name" = bookworm-qemu-bpo ] && bpo_moved_on "$tb" || return 0
  fi
  log=$CACHE/logs/$name.build.log
  b=$WORK/build-$name; B=$b/root
  t=$EPOCHREALTIME
  say "$name" "building $(basename "$tb") (log: $log)"
  case $name in
    bookworm|trixie)
      mkdir -p "$B/etc/dpkg/dpkg.cfg.d" "$CACHE/apt-archives-$suite"
      echo force-unsafe-io >"$B/$UNSAFE_IO"
      debootstrap --variant=minbase --arch="$ARCH" --cache-dir="$CACHE/apt-archives-$suite" \
        "$suite" "$B" "$MIRROR" >"$log" 2>&1 || { tail -n 20 "$log" >&2; return 1; }
      write_sources "$B" "$suite"
      ;;
    bookworm-qemu-bpo)
      ensure_tarball bookworm || return 1
      unpack "$(tarball bookworm)" "$B" || return 1
      write_sources "$B" bookworm
      local signed
      signed=$(sed -n '/^Signed-By: /{s///p;q}' "$B/etc/apt/sources.list.d/debian.sources")
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\n%s' \
        "$MIRROR" "${signed:+Signed-By: $signed
}" >"$B/etc/apt/sources.list.d/build-backports.sources"
      mount_root "$B" bookworm || return 1
      {
        in_root "$B" apt-get -q update &&
        in_root "$B" DEBIAN_FRONTEND=noninteractive \
          apt-get -y -q --no-install-recommends -t bookworm-backports install qemu-utils &&
        rm "$B/etc/apt/sources.list.d/build-backports.sources" &&
        in_root "$B" apt-get -q update
      } >"$log" 2>&1 || { tail -n 20 "$log" >&2; return 1; }
      qu=$(dpkg-query --admindir="$B/var/lib/dpkg" -W -f='${Version}' qemu-utils)
      [[ $qu == *~bpo12* ]] || { echo "qemu-utils from bookworm-backports is '$qu', not ~bpo12" >&2; return 1; }
      ;;
  esac
  pack "$B" "$tb" || return 1
  [ -z "${qu:-}" ] || echo "$qu" >"$tb.qemu-utils"
  rm -rf "$b"
  say "$name" "built $(basename "$tb") ($(du -h "$tb" | cut -f1)) in $(secs "$t" "$EPOCHREALTIME") s"
}

# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------
say() { echo "$PROG: $1: $2"; }
secs() { awk -v a="$1" -v b="$2" -v p="${3:-1}" 'BEGIN { printf "%." p "f", b - a }'; }
FIRST_FAIL=""
ok() { say "$1" "ok   $2"; }
bad() { # ROOT CHECK [DETAIL]
  say "$1" "FAIL $2${3:+: $3}"
  [ -n "$FIRST_FAIL" ] || FIRST_FAIL=$2
}
pkg_list() { # ROOT -> "pkg:arch version" of the installed packages
  dpkg-query --admindir="$1/var/lib/dpkg" -W -f='${db:Status-Abbrev} ${Package}:${Architecture} ${Version}\n' \
    | awk '$1 == "ii" { print $2, $3 }' | sort
}
src_hashes() { # ROOT -> "sha256  path" of sources.list and every file in sources.list.d
  (cd "$1/etc/apt" && { [ ! -e sources.list ] || sha256sum sources.list
    find sources.list.d -maxdepth 1 -type f -print0 | sort -z | xargs -0r sha256sum; })
}
lists_stamp() { # ROOT -> one line: apt's lists, names sizes and times
  find "$1/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -printf '%f %s %T@\n' | sort | sha256sum
}
qemu_version() { # ROOT PROG
  local out
  out=$(in_root "$1" "$2" --version 2>&1) || return 0
  sed -n '1s/.*version \([^ ]*\).*/\1/p' <<<"$out"
}
TOOLS="cc grub-mkimage mke2fs debugfs e2fsck qemu-system-x86_64 qemu-img depmod cpio sfdisk lvm losetup python3 curl debootstrap mkfs.xfs mkfs.btrfs"
FILES="/usr/lib/grub/i386-pc/boot.img /usr/include/ext2fs/ext2fs.h"

# run_root NAME: unpack, run install-deps.sh --tests twice, check; writes
# $WORK/NAME.result: "FIRST SECOND ADDED RESULT"
run_root() {
  local name=$1 first=- second=- added=-
  FIRST_FAIL=""
  run_root_checks "$name" || true
  [ -n "$FIRST_FAIL" ] || [ "$second" != - ] || FIRST_FAIL="did not finish"
  echo "$first $second $added ${FIRST_FAIL:-ok}" >"$WORK/$name.result"
  if unmount_under "$WORK/$name"; then rm -rf "$WORK/$name"; fi
}
run_root_checks() {
  local name=$1 suite=${SUITE[$1]} R=$WORK/$1/root t rc log1 log2 before after
  local src0 src1 src2 pk0 pk1 pk2 lists1 new removed downgraded
  log1=$CACHE/logs/$name.run1.log; log2=$CACHE/logs/$name.run2.log

  t=$EPOCHREALTIME
  ensure_tarball "$name" || { bad "$name" "root tarball built"; return 1; }
  unpack "$(tarball "$name")" "$R" || { bad "$name" "root tarball unpacked"; return 1; }
  write_sources "$R" "$suite"
  mount_root "$R" "$suite" || { bad "$name" "proc, sysfs, /dev and the .deb cache mounted"; return 1; }
  mkdir -p "$R/opt/amitool/scripts"
  install -m 0755 "$SCRIPT" "$R/opt/amitool/scripts/install-deps.sh"
  say "$name" "root ready in $(secs "$t" "$EPOCHREALTIME") s ($(grep -c . <<<"$(pkg_list "$R")") packages; mirror $MIRROR)"

  pk0=$(pkg_list "$R"); src0=$(src_hashes "$R")
  if [ "$name" = bookworm-qemu-bpo ]; then
    local qu
    qu=$(awk '$1 == "qemu-utils:'"$ARCH"'" { print $2 }' <<<"$pk0")
    if [[ $qu == *~bpo12* ]] && ! grep -rqs backports "$R/etc/apt/sources.list" "$R/etc/apt/sources.list.d"; then
      ok "$name" "like the machine image: qemu-utils $qu installed, no backports source"
    else
      bad "$name" "like the machine image" "qemu-utils '${qu}', sources: $(cat "$R"/etc/apt/sources.list.d/* | grep -i suites | paste -sd' ' -)"
    fi
  fi

  # first run
  t=$EPOCHREALTIME; rc=0
  in_root "$R" /opt/amitool/scripts/install-deps.sh --tests >"$log1" 2>&1 || rc=$?
  first=$(secs "$t" "$EPOCHREALTIME")
  if [ "$rc" = 0 ]; then
    ok "$name" "first run: exit 0 in $first s"
  else
    bad "$name" "first run: exit 0" "exit $rc after $first s; last lines of $log1:"
    tail -n 25 "$log1" | sed "s/^/$PROG: $name: | /"
    return 1
  fi

  pk1=$(pkg_list "$R"); src1=$(src_hashes "$R")
  # the .debs this root uses, kept when the suite's .deb dir is pruned
  awk '{ split($1, pa, ":"); v = $2; gsub(/:/, "%3a", v); print pa[1] "_" v "_" pa[2] ".deb" }' \
    <<<"$pk1" >>"$WORK/keep-$suite"
  added=$(awk 'NR == FNR { a[$1]; next } !($1 in a)' <(echo "$pk0") <(echo "$pk1") | grep -c . || true)
  removed=$(awk 'NR == FNR { a[$1]; next } !($1 in a) { print $1 }' <(echo "$pk1") <(echo "$pk0") | paste -sd' ' -)
  downgraded=""
  while read -r p old new; do
    dpkg --compare-versions "$new" lt "$old" && downgraded+="$p $old -> $new; "
  done < <(join <(echo "$pk0") <(echo "$pk1") | awk '$2 != $3')
  if [ -z "$removed" ] && [ -z "$downgraded" ]; then
    ok "$name" "no package removed or downgraded ($added added, $(join <(echo "$pk0") <(echo "$pk1") | awk '$2 != $3' | grep -c . || true) upgraded)"
  else
    bad "$name" "no package removed or downgraded" "removed: ${removed:-none}; downgraded: ${downgraded:-none}"
  fi

  local qs qi
  qs=$(qemu_version "$R" qemu-system-x86_64); qi=$(qemu_version "$R" qemu-img)
  if [ -n "$qs" ] && [ "$qs" = "$qi" ]; then
    ok "$name" "qemu-system-x86_64 and qemu-img are both $qs"
  else
    bad "$name" "qemu-system-x86_64 and qemu-img of one version" "'$qs' and '$qi'"
  fi

  local missing
  missing=$(in_root "$R" /bin/sh -c '
    for c in '"$TOOLS"'; do command -v "$c" >/dev/null || echo "$c"; done
    for f in '"$FILES"'; do [ -e "$f" ] || echo "$f"; done
    [ -x /usr/bin/kill ] || [ -x /bin/kill ] || echo "kill (procps)"' | paste -sd' ' -)
  if [ -z "$missing" ]; then
    ok "$name" "every tool present ($(wc -w <<<"$TOOLS $FILES") + kill)"
  else
    bad "$name" "every tool present" "missing: $missing"
  fi

  local foreign
  foreign=$(in_root "$R" dpkg --print-foreign-architectures | paste -sd' ' -)
  if [[ " $foreign " == *" i386 "* ]]; then
    ok "$name" "i386 is a foreign architecture"
  else
    bad "$name" "i386 is a foreign architecture" "dpkg --print-foreign-architectures: '$foreign'"
  fi

  local changed
  changed=$(awk 'NR == FNR { a[$2] = $1; next } ($2 in a) && a[$2] != $1 { print $2 } ' <(echo "$src1") <(echo "$src0") | paste -sd' ' -)
  changed+=$(awk 'NR == FNR { a[$2]; next } !($2 in a) { print " " $2 " (gone)" }' <(echo "$src1") <(echo "$src0") | paste -sd' ' -)
  if [ -z "$changed" ]; then
    ok "$name" "the root's own source files unchanged ($(grep -c . <<<"$src0"))"
  else
    bad "$name" "the root's own source files unchanged" "changed: $changed"
  fi

  new=$(awk 'NR == FNR { a[$2]; next } !($2 in a) { print $2 }' <(echo "$src0") <(echo "$src1") | paste -sd' ' -)
  if [ "$name" = bookworm-qemu-bpo ]; then
    local f=$R/etc/apt/sources.list.d/$BPO_SOURCE vu vs
    if [ "$new" = "sources.list.d/$BPO_SOURCE" ] && grep -qx "URIs: $MIRROR" "$f" && grep -qx 'Suites: bookworm-backports' "$f"; then
      ok "$name" "one new source: $BPO_SOURCE ($MIRROR bookworm-backports)"
    else
      bad "$name" "one new source, $BPO_SOURCE" "new: '${new}'$( [ ! -f "$f" ] || echo "; $(grep -E '^(URIs|Suites):' "$f" | paste -sd' ' -)")"
    fi
    vu=$(awk '$1 == "qemu-utils:'"$ARCH"'" { print $2 }' <<<"$pk1")
    vs=$(awk '$1 == "qemu-system-x86:'"$ARCH"'" { print $2 }' <<<"$pk1")
    if [ -n "$vs" ] && [ "$vs" = "$vu" ] && [[ $vs == *~bpo12* ]] && [ "$vu" = "$(awk '$1 == "qemu-utils:'"$ARCH"'" { print $2 }' <<<"$pk0")" ]; then
      ok "$name" "qemu-system-x86 $vs = qemu-utils (kept)"
    else
      bad "$name" "qemu-system-x86 at qemu-utils' ~bpo12 version" "qemu-system-x86 '$vs', qemu-utils '$vu'"
    fi
  else
    if [ -z "$new" ]; then
      ok "$name" "no new source file (no amitool-*.sources)"
    else
      bad "$name" "no amitool-*.sources written" "new: $new"
    fi
  fi

  # second run: nothing to do, no apt command
  lists1=$(lists_stamp "$R")
  t=$EPOCHREALTIME; rc=0
  in_root "$R" /opt/amitool/scripts/install-deps.sh --tests >"$log2" 2>&1 || rc=$?
  second=$(secs "$t" "$EPOCHREALTIME" 2)
  pk2=$(pkg_list "$R"); src2=$(src_hashes "$R")
  if [ "$rc" = 0 ] && grep -q "nothing to install" "$log2"; then
    ok "$name" "second run: exit 0, \"nothing to install\" in $second s"
  else
    bad "$name" "second run: exit 0, \"nothing to install\"" "exit $rc: $(tail -n 3 "$log2" | paste -sd'|' -)"
  fi
  local lists2 what=""
  lists2=$(lists_stamp "$R")
  [ "$pk2" = "$pk1" ] || what+="packages: $(diff <(echo "$pk1") <(echo "$pk2") | grep '^[<>]' | head -n 4 | paste -sd' ' -); "
  [ "$src2" = "$src1" ] || what+="sources: $(diff <(echo "$src1") <(echo "$src2") | grep '^[<>]' | awk '{ print $1, $3 }' | paste -sd' ' -); "
  [ "$lists2" = "$lists1" ] || what+="apt lists changed (apt-get update ran); "
  if [ -z "$what" ]; then
    ok "$name" "second run: packages, sources and apt lists unchanged"
  else
    bad "$name" "second run: packages, sources and apt lists unchanged" "${what%; }"
  fi

  local left
  left=$(chroot_pids "$WORK/$name" | paste -sd' ' -)
  if [ -n "$left" ]; then
    bad "$name" "no process left running in the root" "$(for p in $left; do tr '\0' ' ' <"/proc/$p/cmdline"; echo -n '; '; done)"
    # shellcheck disable=SC2086
    kill $left 2>/dev/null || true
  fi
}

lane() { local n; for n in "$@"; do run_root "$n"; done; }

# --------------------------------------------------------------------------
echo "$PROG: ${#ROOTS[@]} roots (${ROOTS[*]}), cache $CACHE, mirror $MIRROR, jobs $JOBS"
if [ "$JOBS" -gt 1 ]; then
  # one lane per suite: the roots of one suite share a .deb dir (and
  # bookworm-qemu-bpo is built from bookworm), so they run in turn
  declare -A lanes=()
  for n in "${ROOTS[@]}"; do lanes[${SUITE[$n]}]+="$n "; done
  for s in "${!lanes[@]}"; do
    # shellcheck disable=SC2086
    lane ${lanes[$s]} &
    LANE_PIDS+=($!)
  done
  for p in "${LANE_PIDS[@]}"; do wait "$p" || true; done
  LANE_PIDS=()
else
  lane "${ROOTS[@]}"
fi

# --------------------------------------------------------------------------
total=$(secs "$T0" "$EPOCHREALTIME" 0)
failed=""
printf '%s: %-18s %10s %11s %10s  %s\n' "$PROG" root "1st run s" "2nd run s" "pkgs added" result
for n in "${ROOTS[@]}"; do
  r="- - - did not run"
  [ ! -s "$WORK/$n.result" ] || r=$(cat "$WORK/$n.result")
  read -r first second added result <<<"$r"
  printf '%s: %-18s %10s %11s %10s  %s\n' "$PROG" "$n" "$first" "$second" "$added" "$result"
  [ "$result" = ok ] || [ -n "$failed" ] || failed="$n: $result"
done
# Prune each suite's .deb dir to what its roots have installed now (older
# versions would pile up), when all of that suite's roots ran and passed.
for s in $(printf '%s\n' "${SUITE[@]}" | sort -u); do
  all=1
  for n in "${!SUITE[@]}"; do
    [ "${SUITE[$n]}" = "$s" ] || continue
    [ -s "$WORK/$n.result" ] && [ "$(cut -d' ' -f4- "$WORK/$n.result")" = ok ] || all=0
  done
  [ "$all" = 1 ] && [ -s "$WORK/keep-$s" ] || continue
  old=$(cd "$CACHE/apt-archives-$s" && find . -maxdepth 1 -name '*.deb' -printf '%f\n' | grep -vxFf "$WORK/keep-$s" || true)
  if [ -n "$old" ]; then
    echo "$PROG: pruning $(grep -c . <<<"$old") .debs no root of $s uses any more from $CACHE/apt-archives-$s"
    (cd "$CACHE/apt-archives-$s" && xargs -r rm -f -- <<<"$old")
  fi
done

if [ -n "$failed" ]; then
  echo "$PROG: FAILED: $failed"
  exit 1
fi
echo "$PROG: OK (${#ROOTS[@]} roots, $total s)"
