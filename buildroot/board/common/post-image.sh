#!/bin/sh
# BR2_ROOTFS_POST_IMAGE_SCRIPT for every branchrec board: assemble the disk image.
# $1: BINARIES_DIR; $2: the board's genimage config (BR2_ROOTFS_POST_SCRIPT_ARGS).
# Buildroot exports BUILD_DIR and HOST_DIR.
set -eu

BINARIES_DIR="$1"
GENIMAGE_CFG="$2"
BOARD_DIR="$(dirname "${GENIMAGE_CFG}")"
GENIMAGE_TMP="${BUILD_DIR}/genimage.tmp"

# Raspberry Pi: the firmware's config.txt, and device-tree overlays of the board
# (board/<board>/*.dtso: LEDs, button) compiled and loaded at boot.
if [ -d "${BINARIES_DIR}/rpi-firmware" ]; then
	mkdir -p "${BINARIES_DIR}/rpi-firmware/overlays"
	for dtso in "${BOARD_DIR}"/*.dtso; do
		[ -e "${dtso}" ] || continue
		name="$(basename "${dtso}" .dtso)"
		"${HOST_DIR}/bin/dtc" -@ -I dts -O dtb \
			-o "${BINARIES_DIR}/rpi-firmware/overlays/${name}.dtbo" "${dtso}"
		grep -qx "dtoverlay=${name}" "${BINARIES_DIR}/rpi-firmware/config.txt" ||
			echo "dtoverlay=${name}" >> "${BINARIES_DIR}/rpi-firmware/config.txt"
	done
fi

# genimage copies its root path; the root filesystem is already rootfs.ext4, so give it
# an empty one (the data partition is created empty from it too).
ROOTPATH_TMP="$(mktemp -d)"
trap 'rm -rf "${ROOTPATH_TMP}"' EXIT
rm -rf "${GENIMAGE_TMP}"

"${HOST_DIR}/bin/genimage" \
	--rootpath "${ROOTPATH_TMP}" \
	--tmppath "${GENIMAGE_TMP}" \
	--inputpath "${BINARIES_DIR}" \
	--outputpath "${BINARIES_DIR}" \
	--config "${GENIMAGE_CFG}"
