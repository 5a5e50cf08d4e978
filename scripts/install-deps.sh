#!/usr/bin/env bash
# scripts/install-deps.sh [--tests] [--dry-run] | --refresh-lists
#
# The one place that installs amitool's system packages (Debian, Ubuntu):
#   default  what building and running amitool and scripts/quickstart.sh need
#   --tests  also what the test suite needs (tests/run.sh, .ci/run)
#   --dry-run  say what would be installed, change nothing
#   --refresh-lists  only `apt-get update`, with the retries below (for the
#            fixture builder's `apt-get download`)
#
# It keeps the system whole: it never removes or downgrades a package (every
# install is simulated first and refused if apt would), and when an installed
# package pins a version that the machine's apt sources do not carry (today's
# image: qemu-utils from bookworm-backports with only bookworm in the sources)
# it installs that package's siblings (qemu-system-x86 for qemu-utils) from
# the same suite, adding that suite as ONE file of its own,
# /etc/apt/sources.list.d/amitool-<suite>.sources, derived from the machine's
# own Debian source entry. It never edits an existing source file.
#
# Idempotent: with everything present it runs no apt command and exits 0 in
# well under a second. A mirror that is briefly unavailable is retried
# (Acquire::Retries, and `apt-get update` up to 4 times with a back-off).
set -euo pipefail

PROG=install-deps
say() { echo "$PROG: $*" >&2; }
die() { echo "$PROG: $*" >&2; exit 1; }

tests=0
dry=0
refresh=0
for a in "$@"; do
  case $a in
    --tests) tests=1 ;;
    --dry-run) dry=1 ;;
    --refresh-lists) refresh=1 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "$PROG: unknown argument '$a' (see --help)" >&2; exit 2 ;;
  esac
done

export DEBIAN_FRONTEND=noninteractive LC_ALL=C
SOURCES_DIR=${AMITOOL_APT_SOURCES_DIR:-/etc/apt/sources.list.d}
RETRY_SLEEP=${AMITOOL_APT_RETRY_SLEEP:-5}
APT_OPTS=(-o "Acquire::Retries=${AMITOOL_APT_RETRIES:-3}" -o Dpkg::Use-Pty=0)

# --------------------------------------------------------------------------
# apt with a bounded retry: a syncing mirror fails `apt-get update` for a
# minute or two ("Mirror sync in progress?").
# --------------------------------------------------------------------------
apt_update() {
  local n=1 max=4 wait=$RETRY_SLEEP out
  while :; do
    if out=$(apt-get "${APT_OPTS[@]}" update -q 2>&1); then
      # apt-get update exits 0 on some fetch failures; a W: about a list
      # that could not be fetched is a failure too.
      if ! grep -qE '^(W|E): (Failed to fetch|Some index files failed)' <<<"$out"; then
        return 0
      fi
    fi
    if [ $n -ge $max ]; then
      local why
      why=$(grep -E '^(E|W):' <<<"$out" | head -n 1)
      die "apt-get update failed $max times (${why:-no reason given}), needed $for_what; a mirror may be syncing: run this again in a few minutes"
    fi
    say "apt-get update failed (attempt $n of $max): retrying in ${wait}s"
    sleep "$wait"
    n=$((n + 1)); wait=$((wait * 2))
  done
}

[ -r /etc/os-release ] || die "no /etc/os-release: this script knows Debian and Ubuntu only; install the packages README.md lists by hand"
# shellcheck disable=SC1091
. /etc/os-release
distro=${ID:-unknown}
codename=${VERSION_CODENAME:-}
case " $distro ${ID_LIKE:-} " in
  *" debian "*|*" ubuntu "*) ;;
  *) die "$PRETTY_NAME is not Debian or Ubuntu: install by hand what README.md's set-up lists (Fedora: gcc e2fsprogs-devel grub2-tools grub2-pc-modules qemu-system-x86)" ;;
esac
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null || die "apt-get or dpkg-query not found on $PRETTY_NAME"

# --------------------------------------------------------------------------
# What is needed: package names, the same on Debian 11-13 and Ubuntu 20.04+.
# --------------------------------------------------------------------------
# build: a C compiler and libext2fs' headers (csrc/extwrite.c links libext2fs)
# run: GRUB's PC images and grub-mkimage (the HVM boot area), e2fsprogs,
#      QEMU for `launch --qemu` and `migrate --verify` on the local backend
# quickstart: the fixture builder (tests/fixtures/build-images.sh) and python3
# (busybox-static and the kernels are fetched with apt-get download, never
# installed: busybox-static would replace a system's busybox.)
base=(gcc libc6-dev libext2fs-dev e2fsprogs grub-common grub-pc-bin qemu-system-x86
      kmod cpio fdisk lvm2 python3 ca-certificates)
# tests: LocalStack in a venv (curl, python3-venv), qemu-img (benches, disk
# checks), debootstrap (fresh roots, real Debian guests), xfsprogs and
# btrfs-progs (the refusal of non-ext roots is tested on real ones), procps
# (kill), util-linux/mount (loop devices for the helper script's tests).
extra=(curl python3-venv qemu-utils debootstrap xfsprogs btrfs-progs procps
       util-linux mount openssl)
want=("${base[@]}")
[ "$tests" = 1 ] && want+=("${extra[@]}")

installed_version() { # PKG -> version, or nothing
  dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null | awk '$1 ~ /^ii/ {print $2}'
}

if [ "$refresh" = 1 ]; then
  [ "$(id -u)" = 0 ] || die "--refresh-lists runs apt-get update: run it as root"
  for_what="for the fixture builder's apt-get download"
  apt_update
  say "apt lists refreshed"
  exit 0
fi

need_i386=0
if [ "$tests" = 1 ] && ! dpkg --print-foreign-architectures | grep -qx i386; then
  need_i386=1
fi

missing=()
for p in "${want[@]}"; do
  [ -n "$(installed_version "$p")" ] || missing+=("$p")
done

# Everything there: no apt command at all (a second run takes milliseconds).
if [ ${#missing[@]} -eq 0 ] && [ "$need_i386" = 0 ]; then
  say "nothing to install: every package is present (${#want[@]} checked)"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  if [ "$dry" = 0 ] && command -v sudo >/dev/null; then
    say "not root: running again under sudo to install ${missing[*]}"
    exec sudo --preserve-env=AMITOOL_APT_SOURCES_DIR,AMITOOL_APT_RETRY_SLEEP "$0" "$@"
  fi
  [ "$dry" = 1 ] || die "missing ${missing[*]}: run this script as root (or install sudo)"
fi

# The Debian/Ubuntu source entries this machine has: "URI|SUITE|COMPONENTS|SIGNED-BY"
# lines, from deb822 .sources files and one-line .list files alike.
source_entries() {
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
        uri = $i; suite = $(i + 1); comps = ""
        for (j = i + 2; j <= NF; j++) comps = comps (comps == "" ? "" : " ") $j
        print uri "|" suite "|" comps "|" signed
      }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && enabled != "no")
          for (u = 1; u <= nu; u++) for (s = 1; s <= ns; s++) print uris[u] "|" suites[s] "|" comps "|" signed
        types = ""; nu = 0; ns = 0; comps = ""; signed = ""; enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
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

# --------------------------------------------------------------------------
# Pins: an installed package built from the same source as one we install
# fixes that one's version (qemu-system-x86 and qemu-utils share `qemu`:
# Breaks/Depends tie them to one version).
# --------------------------------------------------------------------------
src_of_candidate() { # PKG -> "SOURCE SOURCE-VERSION" of apt's candidate
  apt-cache show --no-all-versions "$1" 2>/dev/null | awk '
    /^Package:/ { pkg = $2 } /^Version:/ { ver = $2 }
    /^Source:/ { src = $2; if ($3 ~ /^\(/) { sver = $3; gsub(/[()]/, "", sver) } }
    /^$/ { exit }
    END { if (pkg != "") print (src == "" ? pkg : src), (sver == "" ? ver : sver) }'
}

# installed packages: "SOURCE SOURCE-VERSION PACKAGE VERSION"
installed_sources() {
  dpkg-query -W -f='${db:Status-Abbrev}|${source:Package}|${source:Version}|${Package}|${Version}\n' 2>/dev/null \
    | awk -F'|' '$1 ~ /^ii/ { print $2, $3, $4, $5 }'
}

# A version's backports suite, from the version string (Debian's ~bpoNN).
suite_of_version() { # VERSION -> suite or nothing
  local v=$1 n
  if [[ $v =~ ~bpo([0-9]+) ]]; then
    n=${BASH_REMATCH[1]}
    case $n in
      10) echo buster-backports ;; 11) echo bullseye-backports ;;
      12) echo bookworm-backports ;; 13) echo trixie-backports ;;
      14) echo forky-backports ;;
    esac
  fi
}

# madison: the suites that carry PKG at a source version
suite_with_source_version() { # PKG SOURCE-VERSION -> suite or nothing
  local pkg=$1 sver=$2 v suite
  while read -r v suite; do
    local s
    s=$(apt-cache show "$pkg=$v" 2>/dev/null | awk '/^Source:/ && $3 ~ /^\(/ {gsub(/[()]/, "", $3); print $3; exit}')
    [ -n "$s" ] || s=$v
    if [ "$s" = "$sver" ]; then echo "$suite"; return; fi
  done < <(apt-cache madison "$pkg" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); split($3, a, " "); split(a[2], b, "/"); print $2, b[1]}')
}

# the source version of PKG's newest version in SUITE
source_version_in_suite() { # PKG SUITE -> source version or nothing
  local v suite s
  while read -r v suite; do
    [ "$suite" = "$2" ] || continue
    s=$(apt-cache show "$1=$v" 2>/dev/null | awk '/^Source:/ && $3 ~ /^\(/ {gsub(/[()]/, "", $3); print $3; exit}')
    echo "${s:-$v}"; return
  done < <(apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); split($3, a, " "); split(a[2], b, "/"); print $2, b[1]}')
}

if [ "$dry" = 1 ]; then
  say "would install on $PRETTY_NAME: ${missing[*]}$([ "$need_i386" = 1 ] && echo ' (and the i386 architecture, for apt-get download of the 32-bit fixture)')"
  say "dry run: nothing changed (the versions and suites are decided after apt-get update, which a dry run does not run)"
  exit 0
fi

say "will install on $PRETTY_NAME: ${missing[*]}"
for_what="to install ${missing[*]}"
if [ "$need_i386" = 1 ]; then
  say "adding dpkg's i386 architecture (the tests apt-get download a 32-bit kernel and busybox; nothing i386 is installed)"
  dpkg --add-architecture i386
fi
apt_update

# Decide each missing package's suite.
declare -A pin_suite=() pin_why=() upgrade_with=()
inst=$(installed_sources)
added_source=""
for p in "${missing[@]}"; do
  src=""; sver=""
  read -r src sver < <(src_of_candidate "$p") || true
  [ -n "${src:-}" ] || die "no package $p in the apt sources of $PRETTY_NAME (apt-cache show $p found nothing)"
  # an installed sibling at another source version?
  sib=$(awk -v s="$src" -v v="$sver" '$1 == s && $2 != v { print $3, $4, $2; exit }' <<<"$inst")
  [ -n "$sib" ] || continue
  read -r sib_pkg sib_ver sib_sver <<<"$sib"
  # a newer sibling: take the suite that has it; an older one is upgraded with p.
  if dpkg --compare-versions "$sib_sver" lt "$sver"; then
    continue
  fi
  suite=$(suite_with_source_version "$p" "$sib_sver")
  if [ -z "$suite" ]; then
    suite=$(suite_of_version "$sib_ver")
    [ -n "$suite" ] || die "cannot install $p: the installed $sib_pkg $sib_ver comes from a suite this machine's apt sources do not list, and its version does not say which; add that suite's source, or install $p at version $sib_ver by hand"
    if [ -z "$added_source" ]; then
      file="$SOURCES_DIR/amitool-$suite.sources"
      if [ -f "$file" ]; then
        say "using $file (written by an earlier run) for $suite"
      else
        base_suite=${suite%-backports}
        entry=$(source_entries | awk -F'|' -v s="$base_suite" '$2 == s { print; exit }')
        [ -n "$entry" ] || die "cannot install $p: the installed $sib_pkg $sib_ver is from $suite, and no apt source of this machine names $base_suite to derive it from; add $suite to your apt sources, then run this again"
        IFS='|' read -r uri _ comps signed <<<"$entry"
        {
          echo "# Written by amitool's scripts/install-deps.sh: $sib_pkg $sib_ver is installed"
          echo "# from $suite, so its siblings ($p) must come from there too. Derived from"
          echo "# this machine's $base_suite entry; remove this file to undo."
          echo "Types: deb"
          echo "URIs: $uri"
          echo "Suites: $suite"
          echo "Components: ${comps:-main}"
          [ -z "$signed" ] || echo "Signed-By: $signed"
        } > "$file.tmp"
        mv "$file.tmp" "$file"
        say "added the apt source $suite as $file ($uri), because the installed $sib_pkg $sib_ver comes from there"
      fi
      added_source=$suite
      apt_update
    fi
    if [ -z "$(suite_with_source_version "$p" "$sib_sver")" ]; then
      # The suite moved on (backports keeps only its newest version): take p
      # at the suite's version and upgrade the sibling with it, from there.
      # An upgrade, never a downgrade (the simulation below refuses one).
      newer=$(source_version_in_suite "$p" "$suite")
      if [ -z "$newer" ] || ! dpkg --compare-versions "$newer" gt "$sib_sver"; then
        die "cannot install $p: the installed $sib_pkg is at $sib_ver, and $suite has no $p of that source version or a newer one"
      fi
      upgrade_with[$sib_pkg]=$suite
      say "$suite has moved on from $sib_pkg $sib_ver: $p and $sib_pkg come from there at source version $newer"
    fi
  fi
  pin_suite[$p]=$suite
  pin_why[$p]="$sib_pkg $sib_ver"
done

# Groups: the packages of the machine's default suites, and per pinned suite
# the packages that must come from it. A pinned group is installed with
# `-t SUITE`, so that its dependencies come from there as they need to
# (`pkg/suite` alone does not take qemu-system-common along); the other
# packages never see that suite's versions.
declare -A groups=()
for p in "${missing[@]}"; do
  s=${pin_suite[$p]:-default}
  groups[$s]+="$p "
  [ "$s" = default ] || say "$p comes from $s, to match the installed ${pin_why[$p]}"
done
for p in "${!upgrade_with[@]}"; do groups[${upgrade_with[$p]}]+="$p "; done
suites=()
for s in "${!groups[@]}"; do [ "$s" = default ] || suites+=("$s"); done
[ -z "${groups[default]:-}" ] || suites+=(default)

# target_args SUITE -> apt-get's -t for a pinned group, nothing for the default
target_args() { [ "$1" = default ] || echo "-t $1"; }

# Simulate every group first: refuse any removal or downgrade, name a
# conflict, before anything is installed.
total=0
for s in "${suites[@]}"; do
  read -ra pk <<<"${groups[$s]}"
  # shellcheck disable=SC2046
  sim_status=0
  sim=$(apt-get "${APT_OPTS[@]}" -s $(target_args "$s") install --no-install-recommends "${pk[@]}" 2>&1) || sim_status=$?
  from=""; [ "$s" = default ] || from=" from $s"
  if [ "$sim_status" != 0 ]; then
    why=$(grep -E '^ +[^ ]+ : (Depends|Breaks|Conflicts|PreDepends)' <<<"$sim" | head -n 3 | sed 's/^ *//; s/  */ /g' | paste -sd ';' -)
    [ -n "$why" ] || why=$(grep -E '^E:' <<<"$sim" | head -n 1)
    die "apt cannot install ${pk[*]}$from: $why; nothing was changed (resolve that conflict, e.g. by upgrading or removing the package named, then run this again)"
  fi
  removed=$(awk '/^Remv / { print $2 " " $3 }' <<<"$sim" | tr -d '[]' | paste -sd ',' -)
  [ -z "$removed" ] || die "installing ${pk[*]}$from would remove $removed; nothing was changed (this script never removes a package: install those by hand if you accept that)"
  downgraded=""
  while read -r pkg old new; do
    dpkg --compare-versions "$new" lt "$old" && downgraded+="$pkg $old -> $new; "
  done < <(sed -n 's/^Inst \([^ ]*\) \[\([^]]*\)\] (\([^ ]*\) .*/\1 \2 \3/p' <<<"$sim")
  [ -z "$downgraded" ] || die "installing ${pk[*]}$from would downgrade ${downgraded%; }; nothing was changed"
  total=$((total + $(grep -c '^Inst ' <<<"$sim" || true)))
done
say "apt will unpack $total packages (those named and their dependencies); nothing is removed or downgraded"

for s in "${suites[@]}"; do
  read -ra pk <<<"${groups[$s]}"
  n=1
  # shellcheck disable=SC2046
  until apt-get "${APT_OPTS[@]}" $(target_args "$s") install -y -q --no-install-recommends --no-remove "${pk[@]}" >&2; do
    [ $n -lt 3 ] || die "apt-get install ${pk[*]} ($s suite) failed 3 times (see apt's message above)"
    say "apt-get install failed (attempt $n of 3): updating the lists and retrying in ${RETRY_SLEEP}s"
    sleep "$RETRY_SLEEP"; apt_update; n=$((n + 1))
  done
done

# What the tools say, not only what dpkg says.
for c in cc grub-mkimage mke2fs qemu-system-x86_64; do
  command -v "$c" >/dev/null || die "$c is still missing after the install"
done
[ -f /usr/lib/grub/i386-pc/boot.img ] || die "/usr/lib/grub/i386-pc/boot.img is still missing after installing grub-pc-bin"
[ -f /usr/include/ext2fs/ext2fs.h ] || die "/usr/include/ext2fs/ext2fs.h is still missing after installing libext2fs-dev"
if command -v qemu-img >/dev/null; then
  qs=$(qemu-system-x86_64 --version | sed -n 's/.*version \([^ ]*\).*/\1/p;q')
  qi=$(qemu-img --version | sed -n 's/.*version \([^ ]*\).*/\1/p;q')
  [ "$qs" = "$qi" ] || die "qemu-system-x86_64 is $qs but qemu-img is $qi: they should come from one qemu"
fi
say "done: installed ${missing[*]}"
