#!/bin/sh
# BR2_ROOTFS_POST_BUILD_SCRIPT for every branchrec board.
# $1: TARGET_DIR; $2: the board's genimage config (BR2_ROOTFS_POST_SCRIPT_ARGS).
set -eu

TARGET_DIR="$1"

# The data partition (label brdata, see the board's genimage.cfg) is mounted on
# /var/lib/branchrec by var-lib-branchrec.mount from the overlay; make sure the mount
# point exists in the read-only root.
mkdir -p "${TARGET_DIR}/var/lib/branchrec"

# The unit must be there (BR2_INIT_SYSTEMD): without it the recorder would never start.
if [ ! -f "${TARGET_DIR}/usr/lib/systemd/system/branchrec.service" ]; then
	echo "post-build: branchrec.service missing (is BR2_INIT_SYSTEMD set?)" >&2
	exit 1
fi

# Start branchrec at boot even if the image skips `systemctl preset-all`.
mkdir -p "${TARGET_DIR}/etc/systemd/system/multi-user.target.wants"
ln -sf /usr/lib/systemd/system/branchrec.service \
	"${TARGET_DIR}/etc/systemd/system/multi-user.target.wants/branchrec.service"
