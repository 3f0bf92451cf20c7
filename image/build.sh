#!/usr/bin/env bash
# Build the bootable aarch64 disk image of the box from Debian arm64 packages.
#
#   image/build.sh            build (reuses the cached root filesystem and kernel modules)
#   image/build.sh --rebuild  ignore the cache
#
# Output (target/image/, or $IMAGE_OUT):
#   disk.img     GPT disk: p1 "br-root" ext4 root filesystem, p2 "br-data" ext4 mounted at
#                /var/lib/branchrec (recordings, catalogue, keys)
#   vmlinuz, initrd.img, cmdline   booted directly by QEMU (-kernel/-initrd/-append)
#   manifest.txt what went in (kernel, package versions, branchrec build)
# image/run-qemu.sh boots it by hand; image/README.md describes the layout.
#
# Steps:
#  1. packages for the build (arm64 multiarch, qemu-user with binfmt, mmdebstrap, the
#     cross compiler) - via scripts/build-aarch64 deps;
#  2. the cached part, keyed by a hash of its inputs (this script, image/kmod/, the kernel
#     package version) in $IMAGE_CACHE (default ~/.cache/branchrec-image):
#       - rootfs/: mmdebstrap --arch=arm64 of Debian 12 with the kernel, systemd, udev and
#         the libraries branchrec links; the initramfs is built with MODULES=list (virtio,
#         ext4 only), which keeps the emulated second stage to a few minutes;
#       - tpm_tis.ko and gpio-sim.ko, which Debian's arm64 kernel lacks, built out of tree
#         from Debian's linux-source-6.1 of the same version against its linux-headers
#         (Module.symvers, vermagic) with gcc-aarch64-linux-gnu; the interrupt simulator
#         gpio-sim needs (CONFIG_IRQ_SIM, also missing) is linked into gpio-sim.ko, using
#         generic_handle_irq() since irq_to_desc() is not exported to modules;
#  3. every run: the branchrec binary (scripts/build-aarch64), its systemd unit, sysusers,
#     tmpfiles and udev files and config (dist/), the board's gpio-sim lines (pins.toml),
#     the image's own files (image/rootfs/), then mkfs.ext4 -d and the GPT disk.
#
# Environment: IMAGE_OUT, IMAGE_CACHE; BRANCHREC_BIN (a prebuilt aarch64 binary instead of
# running scripts/build-aarch64); BRANCHREC_DIST (default dist/), BRANCHREC_PINS (default
# board/qemu_aarch64_virt/pins.toml).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
OUT="${IMAGE_OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/image}"
CACHE="${IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/branchrec-image}"
DIST="${BRANCHREC_DIST:-$ROOT/dist}"
PINS="${BRANCHREC_PINS:-$ROOT/board/qemu_aarch64_virt/pins.toml}"
SUITE=bookworm
REBUILD=0
[ "${1:-}" = "--rebuild" ] && REBUILD=1

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
log() { printf '[image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { echo "image/build.sh: $*" >&2; exit 1; }
T0=$SECONDS

# --- 1. build dependencies -------------------------------------------------------------
"$ROOT/scripts/build-aarch64" deps
need=()
for p in mmdebstrap arch-test e2fsprogs fdisk make xz-utils gcc-aarch64-linux-gnu kmod; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi
# mmdebstrap's second stage runs arm64 maintainer scripts through binfmt_misc.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  [ -f "$conf" ] || die "$conf missing (qemu-user-binfmt from bookworm-backports)"
  grep -v '^#' "$conf" | $SUDO tee /proc/sys/fs/binfmt_misc/register >/dev/null
fi
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "binfmt qemu-aarch64 not enabled"

# --- 2. cached: root filesystem, kernel, initramfs, out-of-tree modules -----------------
# The kernel ABI package linux-image-arm64 points at (e.g. linux-image-6.1.0-56-arm64) and
# its version; the modules are built from linux-source-6.1 of exactly that version.
KPKG="$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-[0-9]/{sub(":arm64","",$2); print $2; exit}')"
[ -n "$KPKG" ] || die "cannot resolve linux-image-arm64:arm64 (apt-get update? arm64 architecture?)"
KREL="${KPKG#linux-image-}"
KVER="$(apt-cache show --no-all-versions "$KPKG:arm64" | awk '/^Version:/{print $2; exit}')"
KABI="${KREL%-arm64}"
# Packages of the root filesystem: boot, udev/kmod for the modules, networkd for the
# emulated NIC, and the shared libraries branchrec links (TPM2 TSS with the device TCTI,
# libpcap, libopus).
PKGS=(systemd systemd-sysv udev kmod initramfs-tools "$KPKG" e2fsprogs iproute2 procps
  less libtss2-esys-3.0.2-0 libtss2-tctildr0 libtss2-mu0 libtss2-tcti-device0 tpm-udev
  libpcap0.8 libopus0)
MIRRORS=("deb http://deb.debian.org/debian $SUITE main"
  "deb http://deb.debian.org/debian $SUITE-updates main"
  "deb http://deb.debian.org/debian-security $SUITE-security main")

build_modules() {
  local w="$1/kmod-build" d
  rm -rf "$w" && mkdir -p "$w/deb" "$w/x" "$w/src"
  log "kernel modules: downloading $KPKG $KVER headers and linux-source-6.1"
  # linux-kbuild (fixdep, modpost) for the build machine; headers for arm64.
  (cd "$w/deb" && apt-get download "linux-headers-$KREL:arm64=$KVER" "linux-headers-$KABI-common=$KVER" \
    "linux-kbuild-6.1=$KVER" "linux-source-6.1=$KVER" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) || true
  for d in "$w"/deb/linux-headers-* "$w"/deb/linux-kbuild-*; do
    [ -f "$d" ] || die "download of kernel headers failed"
    dpkg-deb -x "$d" "$w/x"
  done
  dpkg-deb --fsys-tarfile "$w"/deb/linux-source-6.1_*.deb | tar -x -C "$w/x" ./usr/src/linux-source-6.1.tar.xz
  tar -xJf "$w/x/usr/src/linux-source-6.1.tar.xz" -C "$w/x" --wildcards \
    'linux-source-6.1/drivers/char/tpm/tpm.h' 'linux-source-6.1/drivers/char/tpm/tpm_tis_core.h' \
    'linux-source-6.1/drivers/char/tpm/tpm_tis.c' 'linux-source-6.1/drivers/gpio/gpio-sim.c' \
    'linux-source-6.1/drivers/gpio/gpiolib.h' 'linux-source-6.1/kernel/irq/irq_sim.c'
  local s="$w/x/linux-source-6.1"
  cp "$s"/drivers/char/tpm/{tpm.h,tpm_tis_core.h,tpm_tis.c} "$s/drivers/gpio/gpiolib.h" "$w/src/"
  cp "$s/drivers/gpio/gpio-sim.c" "$w/src/gpio_sim_main.c"
  # irq_sim.c inside a module: irq_to_desc() is not exported, generic_handle_irq() is the
  # exported equivalent; its symbols stay module-local.
  sed -e 's/handle_simple_irq(irq_to_desc(irqnum))/generic_handle_irq(irqnum)/' \
    -e '/^EXPORT_SYMBOL_GPL/d' "$s/kernel/irq/irq_sim.c" >"$w/src/irq_sim.c"
  grep -q 'generic_handle_irq(irqnum)' "$w/src/irq_sim.c" || die "irq_sim.c: the patch no longer applies"
  cp "$HERE/kmod/Kbuild" "$w/src/"
  # The headers' Makefile includes the -common tree by absolute path.
  local hdr="$w/x/usr/src/linux-headers-$KREL"
  sed -i "s#/usr/src/#$w/x/usr/src/#" "$hdr/Makefile"
  log "kernel modules: building tpm_tis.ko, gpio-sim.ko for $KREL"
  make -s -C "$hdr" M="$w/src" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- \
    CC=aarch64-linux-gnu-gcc-12 modules >&2
  mkdir -p "$1/modules"
  cp "$w/src/tpm_tis.ko" "$w/src/gpio-sim.ko" "$1/modules/"
  rm -rf "$w"
}

build_rootfs() {
  log "rootfs: mmdebstrap --arch=arm64 $SUITE ($KPKG $KVER)"
  # MODULES=list: the initramfs holds only what mounts the root disk (the default, most,
  # makes update-initramfs under emulation take a quarter of an hour).
  # The hooks are expanded by mmdebstrap ("$1" = the chroot), not here.
  # shellcheck disable=SC2016
  mmdebstrap --arch=arm64 --variant=minbase --mode=root \
    --aptopt='APT::Install-Recommends "false"' \
    --include="$(IFS=,; echo "${PKGS[*]}")" \
    --setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks"' \
    --setup-hook='printf "MODULES=list\nCOMPRESS=gzip\n" > "$1/etc/initramfs-tools/conf.d/branchrec"' \
    --setup-hook='printf "#!/bin/sh\n[ \"\$1\" = prereqs ] && exit 0\n. /usr/share/initramfs-tools/hook-functions\nmanual_add_modules virtio_pci virtio_blk virtio_mmio ext4 crc32c_generic\n" > "$1/etc/initramfs-tools/hooks/branchrec-virt" && chmod 755 "$1/etc/initramfs-tools/hooks/branchrec-virt"' \
    --customize-hook='rm -f "$1"/etc/machine-id "$1"/var/lib/dbus/machine-id; touch "$1/etc/machine-id"' \
    --customize-hook='chroot "$1" dpkg-query -W > "$1/.packages"' \
    --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
    "$SUITE" "$1/rootfs" "${MIRRORS[@]}" >&2
}

# Cache key: everything the cached part is made from (not the assembly below).
KEY="$( { declare -f build_modules build_rootfs; cat "$HERE"/kmod/*;
  echo "$KPKG $KVER ${PKGS[*]} ${MIRRORS[*]}"; } | sha256sum | cut -c1-16)"
C="$CACHE/$KREL-$KEY"
mkdir -p "$CACHE"
if [ $REBUILD -eq 1 ] || [ ! -f "$C/done" ]; then
  rm -rf "$C.tmp" && mkdir -p "$C.tmp"
  t=$SECONDS; build_modules "$C.tmp"; log "kernel modules: $((SECONDS - t)) s"
  t=$SECONDS; build_rootfs "$C.tmp"; log "rootfs: $((SECONDS - t)) s"
  echo "$KPKG $KVER" >"$C.tmp/done"
  rm -rf "$C" && mv "$C.tmp" "$C"
  # Older cache entries are of no further use.
  find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -path "$C" -exec rm -rf {} +
else
  log "cached rootfs and modules: $C"
fi

# --- 3. assemble ------------------------------------------------------------------------
if [ -n "${BRANCHREC_BIN:-}" ]; then
  BIN="$BRANCHREC_BIN"
else
  "$ROOT/scripts/build-aarch64" build >&2
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/aarch64-build/aarch64-unknown-linux-gnu/release/branchrec"
fi
[ -x "$BIN" ] || die "no aarch64 branchrec binary at $BIN"
file -b "$BIN" 2>/dev/null | grep -q aarch64 || head -c 20 "$BIN" | od -An -tx1 | grep -q 'b7 00' \
  || die "$BIN is not an aarch64 ELF"
for f in systemd/branchrec.service sysusers.d/branchrec.conf tmpfiles.d/branchrec.conf \
  udev/60-branchrec.rules etc/branchrec/config.toml; do
  [ -f "$DIST/$f" ] || die "$DIST/$f missing (the service files; BRANCHREC_DIST names another dist/)"
done
[ -f "$PINS" ] || die "$PINS missing (the board's pin map; BRANCHREC_PINS names another)"

mkdir -p "$OUT"
W="$OUT/work"
R="$W/rootfs"
rm -rf "$W" && mkdir -p "$R"
log "assembling the root filesystem"
cp -a "$C/rootfs/." "$R/"
cp -L "$R/boot/vmlinuz-$KREL" "$OUT/vmlinuz"
cp -L "$R/boot/initrd.img-$KREL" "$OUT/initrd.img" || die "no initramfs for $KREL in the rootfs"

# Out-of-tree modules, loaded at boot.
install -D -m 0644 -t "$R/lib/modules/$KREL/updates" "$C"/modules/*.ko
depmod -b "$R" "$KREL"

# branchrec and its service files.
# Stripped: the image carries no debug info (the build tree keeps it).
install -d "$R/usr/bin"
aarch64-linux-gnu-strip -o "$R/usr/bin/branchrec" "$BIN"
chmod 0755 "$R/usr/bin/branchrec"
install -D -m 0644 "$DIST/systemd/branchrec.service" "$R/usr/lib/systemd/system/branchrec.service"
install -D -m 0644 "$DIST/sysusers.d/branchrec.conf" "$R/usr/lib/sysusers.d/branchrec.conf"
install -D -m 0644 "$DIST/tmpfiles.d/branchrec.conf" "$R/usr/lib/tmpfiles.d/branchrec.conf"
install -D -m 0644 "$DIST/udev/60-branchrec.rules" "$R/usr/lib/udev/rules.d/60-branchrec.rules"
install -D -m 0644 "$DIST/etc/branchrec/config.toml" "$R/etc/branchrec/config.toml"
if [ -f "$DIST/etc/branchrec/config.d/README" ]; then
  install -D -m 0644 "$DIST/etc/branchrec/config.d/README" "$R/etc/branchrec/config.d/README"
fi
install -D -m 0644 "$ROOT/etc/branchrec.toml" "$R/usr/share/doc/branchrec/branchrec.toml"
install -D -m 0644 "$ROOT/README.md" "$R/usr/share/doc/branchrec/README.md"
install -D -m 0644 "$PINS" "$R/etc/branchrec/pins.toml"

# The image's own files (fstab, console login, network, gpio-sim, config drop-in).
cp -a "$HERE/rootfs/." "$R/"
chown -R root:root "$R/etc/branchrec" "$R/usr/lib/branchrec" "$R/etc/systemd"

# gpio-sim lines: the `name`s of the pin map in order (offset 0, 1, ...) on one bank
# labelled with the pin map's `chip`.
# Lines with bias = "pull-up" (the active-low button) start pulled up (released).
chip="$(awk -F'"' '/^chip *=/{print $2; exit}' "$PINS")"
names="$(awk -F'"' '/^name *=/{printf "%s ", $2}' "$PINS")"
pullup="$(awk -F'"' '/^\[\[pin\]\]/{n++} /^bias *= *"pull-up"/{printf "%d ", n-1}' "$PINS")"
if [ -z "$chip" ] || [ -z "$names" ]; then die "$PINS: no chip/name entries"; fi
printf 'GPIO_SIM_LABEL=%s\nGPIO_SIM_LINES="%s"\nGPIO_SIM_PULLUP="%s"\n' "$chip" "${names% }" "${pullup% }" \
  >"$R/etc/branchrec/gpio-sim.env"

# Service user and groups now (the image is never booted without them); the root account
# has no password: the serial console logs in automatically (development/test image).
systemd-sysusers --root="$R" >/dev/null
sed -i 's/^root:[^:]*:/root::/' "$R/etc/shadow"
echo branchrec-box >"$R/etc/hostname"
systemctl --root="$R" enable systemd-networkd.service branchrec-gpio-sim.service branchrec.service >/dev/null 2>&1 \
  || die "systemctl enable in the image failed"
systemctl --root="$R" mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
  e2scrub_reap.service fstrim.timer >/dev/null 2>&1 || true
systemctl --root="$R" set-default multi-user.target >/dev/null 2>&1

{
  echo "built: $(date -u +%FT%TZ)"
  echo "kernel: $KPKG $KVER"
  echo "branchrec: $(sha256sum "$BIN" | cut -c1-16) $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "modules: $(cd "$C/modules" && echo *.ko)"
  echo "gpio-sim: label=$chip lines=$names"
  echo "--- packages"
  cat "$R/.packages"
} >"$OUT/manifest.txt"
rm -f "$R/.packages"

# --- disk: GPT, p1 root (ext4, LABEL=br-root), p2 data (ext4, LABEL=br-data) ------------
log "making the disk"
used_mb=$(du -sm "$R" | cut -f1)
root_mb=$(( (used_mb * 13 / 10 + 256 + 3) / 4 * 4 ))
data_mb=${IMAGE_DATA_MB:-512}
rm -f "$W/root.ext4" "$W/data.ext4"
mkfs.ext4 -q -L br-root -d "$R" "$W/root.ext4" "${root_mb}M"
mkdir -p "$W/data"
mkfs.ext4 -q -L br-data -d "$W/data" "$W/data.ext4" "${data_mb}M"
disk="$OUT/disk.img.part"
rm -f "$disk"
truncate -s "$((1 + root_mb + data_mb + 1))M" "$disk"
sfdisk -q "$disk" <<EOF
label: gpt
start=1MiB, size=${root_mb}MiB, type=linux, name=br-root
start=$((1 + root_mb))MiB, size=${data_mb}MiB, type=linux, name=br-data
EOF
dd if="$W/root.ext4" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$W/data.ext4" of="$disk" bs=1M seek=$((1 + root_mb)) conv=notrunc,sparse status=none
mv "$disk" "$OUT/disk.img"
echo "root=LABEL=br-root rw console=ttyAMA0 loglevel=4 systemd.show_status=auto" >"$OUT/cmdline"
rm -rf "$W"
log "done in $((SECONDS - T0)) s: $OUT/disk.img (root ${root_mb} MiB, data ${data_mb} MiB)"
