#!/usr/bin/env bash
# Boot the image built by image/build.sh by hand: qemu-system-aarch64 -M virt (TCG), a swtpm
# as the TPM (its state in target/image/run/tpm), the serial console on this terminal
# (root is logged in; Ctrl-A X quits), user-mode networking with SIP (5060/udp+tcp) and the
# RTP ports of image/rootfs/etc/branchrec/config.d/50-qemu-virt.toml forwarded from
# 127.0.0.1, so a SIPREC client on this machine records into the guest:
#   sipp 127.0.0.1:5060 -sf tests/sipp/oracle_acme_basic.xml ...
#
#   image/run-qemu.sh [--fresh]     --fresh: start again from the built disk and a new TPM
#
# The run's disk is a copy (target/image/run/disk.img), so a later build does not erase it;
# SIP_PORT overrides the host port of SIP.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
IMG="${IMAGE_OUT:-${CARGO_TARGET_DIR:-$(dirname "$HERE")/target}/image}"
RUN="$IMG/run"
[ -f "$IMG/disk.img" ] || { echo "no image: run image/build.sh first" >&2; exit 1; }
if [ "${1:-}" = "--fresh" ]; then rm -rf "$RUN"; fi
mkdir -p "$RUN/tpm"
[ -f "$RUN/disk.img" ] || cp --sparse=always "$IMG/disk.img" "$RUN/disk.img"

swtpm socket --tpm2 --tpmstate dir="$RUN/tpm" --ctrl type=unixio,path="$RUN/swtpm.sock" \
  --log file="$RUN/swtpm.log" --daemon --pid file="$RUN/swtpm.pid"
trap 'kill "$(cat "$RUN/swtpm.pid")" 2>/dev/null || true' EXIT

SIP_PORT="${SIP_PORT:-5060}"
fwd="hostfwd=udp:127.0.0.1:$SIP_PORT-:5060,hostfwd=tcp:127.0.0.1:$SIP_PORT-:5060"
for p in $(seq 40100 40107); do fwd="$fwd,hostfwd=udp:127.0.0.1:$p-:$p"; done

qemu-system-aarch64 -M virt -cpu max -smp 2 -m 1024 -nographic \
  -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" -append "$(cat "$IMG/cmdline")" \
  -drive file="$RUN/disk.img",if=none,format=raw,id=disk0 -device virtio-blk-pci,drive=disk0 \
  -netdev "user,id=net0,$fwd" -device virtio-net-pci,netdev=net0,romfile= \
  -chardev socket,id=chrtpm,path="$RUN/swtpm.sock" -tpmdev emulator,id=tpm0,chardev=chrtpm \
  -device tpm-tis-device,tpmdev=tpm0
