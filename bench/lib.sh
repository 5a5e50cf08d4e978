# Shared by the benchmark scripts: a sparse PV image with a boot menu, a
# kernel-sized file and DATA_MIB of random data, as a PV-GRUB hd0 disk.
make_pv_image() { # OUT SIZE DATA_MIB
  local out=$1 size=$2 data_mib=$3 root
  root=$(mktemp -d "$(dirname "$out")/root.XXXXXX")
  mkdir -p "$root/boot/grub" "$root/etc"
  printf 'default 0\ntimeout 1\ntitle bench\nroot (hd0)\nkernel /boot/vmlinuz-bench root=LABEL=bench ro console=hvc0\ninitrd /boot/initrd-bench\n' > "$root/boot/grub/menu.lst"
  head -c 4M /dev/urandom > "$root/boot/vmlinuz-bench"
  head -c 1M /dev/urandom > "$root/boot/initrd-bench"
  printf 'LABEL=bench / ext4 defaults 0 1\n' > "$root/etc/fstab"
  head -c "${data_mib}M" /dev/urandom > "$root/data.bin"
  truncate -s "$size" "$out"
  # The same journal size, and uninitialised inode tables and journal, at
  # any size: an 8 GiB and a 1 TiB image hold the same files. The larger
  # filesystem still has more metadata of its own (the bitmaps of its 8192
  # groups, one 512 KiB block per flex group of 16): 2617 data blocks at
  # 1 TiB against 2080 at 8 GiB with 1 GiB of data.
  mke2fs -q -F -t ext4 -J size=64 -E lazy_itable_init=1,lazy_journal_init=1 -L bench -d "$root" "$out"
  rm -rf "$root"
}

alloc() { echo $(( $(stat -c %b "$1") * $(stat -c %B "$1") )); }

# The LocalStack benchmarks' start: the test credentials and endpoint, the
# amitool binary of BENCH_PROFILE (dev) built as $bin, a work directory as
# $work (removed on exit) with amitool's journal and work directories in it.
bench_on_localstack() {
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
  export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}"
  profile=${BENCH_PROFILE:-dev}
  cargo build -q --profile "$profile" --bin amitool
  bin="$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")/amitool"
  work=$(mktemp -d "${BENCH_DIR:-/tmp}/amitool-bench.XXXXXX")
  export AMITOOL_JOURNAL_DIR="$work/amitool/journal" AMITOOL_WORK_DIR="$work/amitool/work"
  mkdir -p "$AMITOOL_JOURNAL_DIR" "$AMITOOL_WORK_DIR"
}
