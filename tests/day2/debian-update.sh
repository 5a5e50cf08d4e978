#!/usr/bin/env bash
# debian-update.sh HVMDISK NEWKERNEL_DEB_DIR
# debian-update.sh --fetch RELEASE          (bookworm|12, bullseye|11)
#
# Day 2 of a migrated real Debian guest, done by the guest's OWN tools: the
# root filesystem (partition 1 of the MBR disk HVMDISK) is loop-mounted,
# /dev, /dev/pts, /proc and /sys are bind-mounted into it, the host's
# resolv.conf is lent to it, and in a chroot:
#   1. `dpkg -i` installs every .deb of NEWKERNEL_DEB_DIR (a kernel of
#      another ABI): its real maintainer scripts run, initramfs-tools builds
#      the initramfs, /etc/kernel/postinst.d/zz-update-grub runs the guest's
#      update-grub through the guest's own /etc/grub.d scripts, and
#      linux-base moves the /vmlinuz and /initrd.img symlinks;
#   2. `apt-get purge` removes the kernel package(s) that were installed
#      before (and the linux-image-amd64 meta-package that depends on them);
#      their postrm hooks run update-grub again;
#   3. the guest's resulting boot configuration is printed.
# Everything is unmounted, detached and restored again, also on failure.
#
# What is added for the chroot and removed after: partition 1 is attached by
# offset (this host's kernel does not scan loop partition tables) and mounted
# through a second block node, /dev/amitool-day2-PID (grub-mkconfig_lib treats
# a root on /dev/loop[0-9] as an image file to `loopback` at boot: it asks
# losetup for the backing file, which is not in the chroot, and grub-probe
# fails); /dev/disk/by-uuid/<root UUID> -> that node (the chroot has no udev;
# without the link 10_linux names the device itself as root=, which is why
# bootstrap-vz's partitions/base.py link_uuid() made the same link); and the
# .debs under the guest's /var/tmp. The guest's resolv.conf is put back.
# zz-update-grub does nothing where `systemd-detect-virt --container` says yes;
# inside the chroot it looks at the guest's /run and /.dockerenv, so a host
# that is itself a container still gets the guest's update-grub (checked and
# reported below).
#
# --fetch RELEASE only downloads the day-2 kernel for that release into
# ${AMITOOL_FIXTURE_CACHE:-$HOME/.cache/amitool/fixtures}/day2-kernels/RELEASE
# (with `apt-get download`, through a private apt configuration in a temporary
# directory: this machine's apt sources and lists are never touched) and
# prints the .deb's path. The kernels:
#   bookworm: the newest linux-image-amd64 of bookworm-backports (6.12; it
#             Pre-Depends on linux-base >= 4.12~, which bookworm has)
#   bullseye: the newest linux-image-6.1-amd64 of bullseye-security (Linux
#             6.1 built for bullseye LTS; Depends kmod, linux-base >= 4.3~,
#             initramfs-tools >= 0.120+deb8u2, all in bullseye)
# AMITOOL_DAY2_KERNEL_PKG=NAME[=VERSION] overrides the choice (with
# AMITOOL_DAY2_EXTRA_SUITES="bookworm bookworm-security" to reach another
# release's packages, e.g. bookworm's linux-image-6.1.0-NN-amd64 for a
# bullseye guest); AMITOOL_DAY2_REFRESH=1 downloads again.
#
# The last line is "debian-update: OK ..." or "debian-update: FAILED: <step>".
set -Eeuo pipefail

ME=debian-update
STEP="start"
log() { echo "$ME: $*" >&2; }
step() { STEP=$*; log "$*"; }
fail() { STEP=$*; exit 1; }
export LC_ALL=C
umask 022

CACHE=${AMITOOL_FIXTURE_CACHE:-${HOME:-/root}/.cache/amitool/fixtures}/day2-kernels

WORK=""
MNT=""
LOOP=""
MOUNTS=()
MADE=()        # files we created on the host or in the guest, removed at exit
RESOLV_SAVED=""
cleanup() {
  local rc=$? i
  set +e
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    if mountpoint -q "${MOUNTS[i]}"; then
      umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}"
    fi
  done
  # A directory of the host's /dev goes only when empty: another run of this
  # script (the other guest, at the same time) may still have its
  # /dev/disk/by-uuid link there, and without it that guest's 10_linux
  # writes root=<its alias> instead of root=UUID=.
  for ((i = ${#MADE[@]} - 1; i >= 0; i--)); do
    if [ -d "${MADE[i]}" ] && [ ! -L "${MADE[i]}" ]; then
      case "${MADE[i]}" in
        /dev/*) rmdir "${MADE[i]}" 2>/dev/null ;;
        *) rm -rf "${MADE[i]}" ;;
      esac
    else
      rm -f "${MADE[i]}"
    fi
  done
  if [ -n "$RESOLV_SAVED" ] && [ -n "$MNT" ] && mountpoint -q "$MNT"; then
    rm -f "$MNT/etc/resolv.conf"
    [ "$RESOLV_SAVED" = none ] || cp -a "$WORK/resolv.conf.guest" "$MNT/etc/resolv.conf"
  fi
  if [ -n "$MNT" ] && mountpoint -q "$MNT"; then
    sync
    umount "$MNT" || umount -l "$MNT"
  fi
  [ -z "$LOOP" ] || losetup -d "$LOOP"
  [ -z "$MNT" ] || rmdir "$MNT" 2>/dev/null
  [ -z "$WORK" ] || rm -rf "$WORK"
  if [ "$rc" != 0 ]; then
    echo "$ME: FAILED: $STEP${ERRCMD:+ (at: $ERRCMD)}" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap '[ -n "${ERRCMD:-}" ] || ERRCMD="${BASH_COMMAND%%$'"'"'\n'"'"'*}, line $LINENO"' ERR
trap 'exit 130' INT TERM

usage() { echo "usage: $0 HVMDISK NEWKERNEL_DEB_DIR | $0 --fetch RELEASE" >&2; exit 2; }

# --------------------------------------------------------------------------
# --fetch RELEASE
# --------------------------------------------------------------------------
detect_mirrors() {
  local uris
  uris=$( { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n'
            cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
              sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p'; } | sed '/^$/d' || true)
  MIRROR=${AMITOOL_DEBIAN_MIRROR:-$(echo "$uris" | grep -E '/debian/?$' | head -n 1 || true)}
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  MIRROR=${MIRROR%/}
  SECURITY=${AMITOOL_DEBIAN_SECURITY_MIRROR:-$(echo "$uris" | grep -E '/debian-security/?$' | head -n 1 || true)}
  SECURITY=${SECURITY:-${MIRROR%/debian}/debian-security}
  SECURITY=${SECURITY%/}
}

fetch() {
  local release=$1 suites meta_suite meta dir apt A pkg ver deb s
  case $release in
    12|bookworm) release=bookworm; suites="bookworm bookworm-updates bookworm-security bookworm-backports"
                 meta=linux-image-amd64; meta_suite=bookworm-backports ;;
    11|bullseye) release=bullseye; suites="bullseye bullseye-updates bullseye-security"
                 meta=linux-image-6.1-amd64; meta_suite=bullseye-security ;;
    *) echo "$ME: unknown release $release (bookworm|12, bullseye|11)" >&2; exit 2 ;;
  esac
  suites="$suites ${AMITOOL_DAY2_EXTRA_SUITES:-}"
  dir=$CACHE/$release
  mkdir -p "$dir"
  if [ "${AMITOOL_DAY2_REFRESH:-0}" != 1 ] && [ -z "${AMITOOL_DAY2_KERNEL_PKG:-}" ] &&
     [ -f "$dir/selected" ] && [ -f "$dir/$(cat "$dir/selected")" ]; then
    log "cached: $dir/$(cat "$dir/selected")"
    echo "$dir/$(cat "$dir/selected")"
    return
  fi

  step "private apt configuration for $release ($suites)"
  detect_mirrors
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/amitool-day2-fetch.XXXXXX")
  apt=$WORK/apt
  mkdir -p "$apt/etc/apt.conf.d" "$apt/etc/preferences.d" "$apt/etc/sources.list.d" \
    "$apt/lists/partial" "$apt/cache/archives/partial"
  : > "$apt/status"
  for s in $suites; do
    case $s in
      *-security) echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $SECURITY $s main" ;;
      *) echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $s main" ;;
    esac
  done > "$apt/etc/sources.list"
  cat > "$apt/apt.conf" <<EOF
Dir::Etc "$apt/etc";
Dir::Etc::sourcelist "$apt/etc/sources.list";
Dir::Etc::sourceparts "$apt/etc/sources.list.d";
Dir::Etc::preferences "$apt/etc/preferences";
Dir::Etc::preferencesparts "$apt/etc/preferences.d";
Dir::Etc::parts "$apt/etc/apt.conf.d";
Dir::State "$apt";
Dir::State::lists "$apt/lists";
Dir::State::status "$apt/status";
Dir::Cache "$apt/cache";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
Acquire::Retries "3";
Acquire::Languages "none";
EOF
  A=(env "APT_CONFIG=$apt/apt.conf")
  step "apt-get update (private lists)"
  "${A[@]}" apt-get -q update >"$WORK/update.log" 2>&1 || { tail -n 20 "$WORK/update.log" >&2; fail "apt-get update (private lists)"; }

  step "choose the kernel package"
  if [ -n "${AMITOOL_DAY2_KERNEL_PKG:-}" ]; then
    pkg=${AMITOOL_DAY2_KERNEL_PKG%%=*}
    ver=${AMITOOL_DAY2_KERNEL_PKG#*=}; [ "$ver" != "$AMITOOL_DAY2_KERNEL_PKG" ] || ver=""
  else
    # the meta-package's version in that suite, then the image it depends on
    ver=$("${A[@]}" apt-cache madison "$meta" | awk -F'|' -v s=" $meta_suite/main " 'index($3, s) {gsub(/ /, "", $2); print $2; exit}')
    [ -n "$ver" ] || fail "no $meta in $meta_suite"
    pkg=$("${A[@]}" apt-cache depends "$meta=$ver" | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    [ -n "$pkg" ] || fail "$meta $ver depends on no linux-image"
    ver=""
  fi
  if [ -z "$ver" ]; then
    ver=$("${A[@]}" apt-cache madison "$pkg" | awk -F'|' -v s=" $meta_suite/main " 'index($3, s) {gsub(/ /, "", $2); print $2; exit}')
    [ -n "$ver" ] || ver=$("${A[@]}" apt-cache madison "$pkg" | awk -F'|' 'NR == 1 {gsub(/ /, "", $2); print $2}')
  fi
  [ -n "$ver" ] || fail "no version of $pkg in $suites"
  log "$pkg $ver: $("${A[@]}" apt-cache show "$pkg=$ver" | grep -E '^(Pre-)?Depends:' | tr '\n' ' ')"

  step "apt-get download $pkg=$ver into $dir"
  (cd "$WORK" && "${A[@]}" apt-get -q download "$pkg=$ver" >"$WORK/download.log" 2>&1) ||
    { tail -n 20 "$WORK/download.log" >&2; fail "apt-get download $pkg=$ver"; }
  deb=$(cd "$WORK" && ls ./*.deb | head -n 1)
  deb=${deb#./}
  # the directory holds the one kernel that debian-update.sh installs
  find "$dir" -maxdepth 1 -name '*.deb' ! -name "$deb" -delete
  mv "$WORK/$deb" "$dir/$deb"
  echo "$deb" > "$dir/selected"
  STEP="done"
  echo "$dir/$deb"
  log "OK fetched $pkg $ver for $release"
}

if [ "${1:-}" = --fetch ]; then
  [ $# = 2 ] || usage
  fetch "$2"
  exit 0
fi

# --------------------------------------------------------------------------
# HVMDISK NEWKERNEL_DEB_DIR
# --------------------------------------------------------------------------
[ $# = 2 ] || usage
DISK=$1
DEBDIR=$2
START_TS=$(date +%s)
[ "$(id -u)" = 0 ] || fail "needs root (loop device, mounts, chroot)"
[ -f "$DISK" ] || fail "no disk image $DISK"
debs=("$DEBDIR"/*.deb)
[ -f "${debs[0]}" ] || fail "no .deb in $DEBDIR"

in_root() {
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C TERM=dumb \
    DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
    chroot "$MNT" "$@"
}

step "read the MBR of $DISK"
read -r P_LABEL P_START P_SIZE < <(sfdisk -J "$DISK" | python3 -c '
import json, sys
t = json.load(sys.stdin)["partitiontable"]
p = [p for p in t.get("partitions", []) if p["node"].endswith("1") and not p["node"].endswith("11")]
print(t["label"], p[0]["start"] if p else 0, p[0]["size"] if p else 0)')
[ "$P_LABEL" = dos ] && [ "$P_START" -gt 0 ] || fail "$DISK has no MBR partition 1"
[ "$P_START" = 2048 ] || log "note: partition 1 starts at sector $P_START, not 2048"

step "loop-mount partition 1 (sector $P_START, $P_SIZE sectors)"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/amitool-day2.XXXXXX")
LOOP=$(losetup -f --show --offset $((P_START * 512)) --sizelimit $((P_SIZE * 512)) "$DISK")
MNT=$WORK/root
mkdir -p "$MNT"
# Mounted through a second node of another name: grub-mkconfig_lib treats a
# root on /dev/loop[0-9] as a file to loop-mount at boot (it asks losetup for
# the backing file, runs grub-probe on that host path, which the chroot does
# not have, and would write `loopback loopN ...`). Under another name the root
# is an ordinary disk to GRUB, as it is on the guest.
mm=$(stat -c '%t:%T' "$LOOP")
ALIAS=/dev/amitool-day2-$$
rm -f "$ALIAS"
mknod "$ALIAS" b $((16#${mm%:*})) $((16#${mm#*:}))
MADE+=("$ALIAS")
mount -t ext4 "$ALIAS" "$MNT"
UUID=$(blkid -o value -s UUID "$LOOP")
[ -n "$UUID" ] || fail "no filesystem UUID on partition 1"
# shellcheck disable=SC1091
GUEST=$(. "$MNT/etc/os-release" && echo "$PRETTY_NAME")
log "guest: $GUEST, root UUID $UUID"

step "bind-mount /dev, /dev/pts, /proc, /sys; lend resolv.conf"
for m in dev dev/pts proc sys; do
  mkdir -p "$MNT/$m"
  mount --bind "/$m" "$MNT/$m"
  MOUNTS+=("$MNT/$m")
done
if [ -e "$MNT/etc/resolv.conf" ] || [ -L "$MNT/etc/resolv.conf" ]; then
  cp -a "$MNT/etc/resolv.conf" "$WORK/resolv.conf.guest"; RESOLV_SAVED=saved
else
  RESOLV_SAVED=none
fi
rm -f "$MNT/etc/resolv.conf"
cp -L /etc/resolv.conf "$MNT/etc/resolv.conf" 2>/dev/null || : > "$MNT/etc/resolv.conf"

# No udev in the chroot: the root's /dev/disk/by-uuid link, as on the
# running guest, so that 10_linux names root=UUID=... and not the loop device.
if [ ! -e "/dev/disk/by-uuid/$UUID" ]; then
  [ -d /dev/disk ] || MADE+=(/dev/disk)
  [ -d /dev/disk/by-uuid ] || MADE+=(/dev/disk/by-uuid)
  mkdir -p /dev/disk/by-uuid
  ln -s "$ALIAS" "/dev/disk/by-uuid/$UUID"
  MADE+=("/dev/disk/by-uuid/$UUID")
fi
# zz-update-grub exits early where `systemd-detect-virt --container` says yes
if in_root sh -c 'command -v systemd-detect-virt >/dev/null && systemd-detect-virt --quiet --container'; then
  log "warning: in the chroot systemd-detect-virt says container: zz-update-grub will not run update-grub"
fi

step "the guest before: kernels and boot config"
OLD_PKGS=$(in_root dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' 'linux-image-[0-9]*' | awk '$1 ~ /^[ih]i/ {print $2}')
[ -n "$OLD_PKGS" ] || fail "no linux-image package installed in the guest"
log "installed kernel packages: $(echo $OLD_PKGS)"
CFG=/boot/grub/grub.cfg
[ -e "$MNT$CFG" ] || CFG=/boot/grub/menu.lst
[ -e "$MNT$CFG" ] || fail "the guest has no /boot/grub/grub.cfg or menu.lst"
cp "$MNT$CFG" "$WORK/before.cfg"

step "dpkg -i ${debs[*]##*/} (in the guest)"
mkdir -p "$MNT/var/tmp/amitool-day2"
MADE+=("$MNT/var/tmp/amitool-day2")
cp "${debs[@]}" "$MNT/var/tmp/amitool-day2/"
NEW_PKGS=$(for d in "${debs[@]}"; do dpkg-deb -f "$d" Package; done)
in_debs=()
for d in "${debs[@]}"; do in_debs+=("/var/tmp/amitool-day2/${d##*/}"); done
in_root dpkg -i "${in_debs[@]}" 2>&1 | sed 's/^/  | /'
for p in $NEW_PKGS; do
  in_root dpkg-query -W -f '${db:Status-Abbrev}\n' "$p" | grep -q '^ii' || fail "$p is not installed after dpkg -i"
done
NEW_KVER=$(for p in $NEW_PKGS; do in_root dpkg -L "$p"; done | sed -n 's|^/boot/vmlinuz-||p' | head -n 1)
[ -n "$NEW_KVER" ] || fail "the new package has no /boot/vmlinuz-*"
[ -f "$MNT/boot/initrd.img-$NEW_KVER" ] || fail "initramfs-tools built no /boot/initrd.img-$NEW_KVER"

PURGE=$(for p in $OLD_PKGS; do case " $NEW_PKGS " in *" $p "*) ;; *) echo "$p" ;; esac; done)
step "apt-get purge $(echo $PURGE) (in the guest)"
in_root apt-get -y -o Dpkg::Use-Pty=0 purge $PURGE 2>&1 | sed 's/^/  | /'
for p in $PURGE; do
  if in_root dpkg-query -W -f '${db:Status-Abbrev}\n' "$p" 2>/dev/null | grep -q '^[ih]i'; then
    fail "$p is still installed"
  fi
done
rm -rf "$MNT/var/tmp/amitool-day2"

step "the guest's resulting boot configuration"
show() { # PATH
  local p=$1 t=""
  [ -L "$MNT$p" ] && t=" -> $(readlink "$MNT$p")"
  echo "===== $p$t"
  cat "$MNT$p"
}
[ ! -e "$MNT/boot/grub/grub.cfg" ] || show /boot/grub/grub.cfg
if [ -e "$MNT/boot/grub/menu.lst" ]; then
  if [ -L "$MNT/boot/grub/menu.lst" ]; then
    echo "===== /boot/grub/menu.lst -> $(readlink "$MNT/boot/grub/menu.lst")"
  else
    show /boot/grub/menu.lst
  fi
fi
for l in /vmlinuz /initrd.img /vmlinuz.old /initrd.img.old /boot/vmlinuz /boot/initrd.img; do
  [ ! -L "$MNT$l" ] || echo "===== $l -> $(readlink "$MNT$l")"
done
echo "===== /boot"
ls -1 "$MNT/boot"
CHANGED=no
cmp -s "$WORK/before.cfg" "$MNT$CFG" || CHANGED=yes
ROOTS=$(grep -o 'root=[^ ]*' "$MNT$CFG" | sort -u | tr '\n' ' ')
if grep -qE "loopback|/dev/loop|$ALIAS" "$MNT$CFG"; then
  fail "the chroot's devices leaked into $CFG: $(grep -nE "loopback|/dev/loop|$ALIAS" "$MNT$CFG" | head -n 3 | tr '\n' ' ')"
fi
STEP="done"
echo "$ME: OK $GUEST: installed $(echo $NEW_PKGS) ($NEW_KVER: /boot/vmlinuz-$NEW_KVER, /boot/initrd.img-$NEW_KVER), purged $(echo $PURGE); $CFG rewritten by the guest: $CHANGED, its root= values: ${ROOTS% }; root UUID $UUID; $(( $(date +%s) - START_TS ))s"
