################################################################################
#
# branchrec
#
################################################################################

# The package source is the repository this br2-external tree lives in.
BRANCHREC_SITE = $(BR2_EXTERNAL_BRANCHREC_PATH)/..
BRANCHREC_SITE_METHOD = local
# Cargo.toml is the only place the version is written down.
BRANCHREC_VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' \
	$(BR2_EXTERNAL_BRANCHREC_PATH)/../Cargo.toml | head -n 1)
BRANCHREC_LICENSE = Apache-2.0

# tss-esapi links the TPM2 software stack through pkg-config; live capture links libpcap
# (the `pcap` crate); the `opus` crate links libopus.
BRANCHREC_DEPENDENCIES = host-pkgconf tpm2-tss libpcap opus
# The catalogue is SQLCipher (rusqlite `bundled-sqlcipher-vendored-openssl`): OpenSSL's
# libcrypto is built from source by the openssl-src crate with the target C compiler the
# cargo infrastructure exports, and linked statically — no BR2_PACKAGE_OPENSSL needed.
# It runs OpenSSL's Configure, i.e. needs perl and make on the build host, both among
# Buildroot's own host requirements.

# - AES-GCM must use the ARMv8 Crypto Extensions (see docs/crypto-benchmark.md); a
#   RUSTFLAGS from the environment would override .cargo/config.toml, so set them here.
# - The pcap crate's build script would dlopen libpcap to learn its version, which cannot
#   work for the target: say it instead.
BRANCHREC_CARGO_ENV = \
	RUSTFLAGS="--cfg aes_armv8 --cfg polyval_armv8" \
	LIBPCAP_LIBDIR=$(STAGING_DIR)/usr/lib \
	LIBPCAP_VER=$(LIBPCAP_VERSION)

# Do not copy host build output or local recordings into the build directory.
BRANCHREC_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude=/target --exclude=/fuzz/target --exclude=/branchrec-data

# For tarball and git sites the cargo infrastructure vendors the crates in
# its download post-processing; the local method only rsyncs the tree and
# skips that step. Fetch the crates pinned by Cargo.lock into Buildroot's
# cargo home instead, once host-rustc is installed (configure runs after
# the dependencies), so that the infrastructure's `cargo build --offline
# --locked` finds them.
define BRANCHREC_CARGO_FETCH
	cd $(@D) && \
	$(HOST_MAKE_ENV) $(PKG_COMMON_CARGO_ENV) \
		cargo fetch --locked --manifest-path Cargo.toml
endef
BRANCHREC_PRE_CONFIGURE_HOOKS += BRANCHREC_CARGO_FETCH

# Only the daemon goes on the box, not the load generator.
BRANCHREC_CARGO_BUILD_OPTS = --bin branchrec

# The box's configuration (the site adds /etc/branchrec/config.d/*.toml) and the
# commented reference configuration.
define BRANCHREC_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 \
		$(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)/branchrec \
		$(TARGET_DIR)/usr/bin/branchrec
	$(INSTALL) -D -m 0644 $(@D)/dist/etc/branchrec/config.toml \
		$(TARGET_DIR)/etc/branchrec/config.toml
	$(INSTALL) -d -m 0755 $(TARGET_DIR)/etc/branchrec/config.d
	$(INSTALL) -D -m 0644 $(@D)/etc/branchrec.toml \
		$(TARGET_DIR)/usr/share/doc/branchrec/branchrec.toml
	$(INSTALL) -D -m 0644 $(@D)/README.md \
		$(TARGET_DIR)/usr/share/doc/branchrec/README.md
endef

# The hardened unit (enabled through its preset), the service user and groups for
# systemd-sysusers, the data directory for systemd-tmpfiles, device permissions.
define BRANCHREC_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/dist/systemd/branchrec.service \
		$(TARGET_DIR)/usr/lib/systemd/system/branchrec.service
	$(INSTALL) -D -m 0644 $(@D)/dist/systemd/80-branchrec.preset \
		$(TARGET_DIR)/usr/lib/systemd/system-preset/80-branchrec.preset
	$(INSTALL) -D -m 0644 $(@D)/dist/sysusers.d/branchrec.conf \
		$(TARGET_DIR)/usr/lib/sysusers.d/branchrec.conf
	$(INSTALL) -D -m 0644 $(@D)/dist/tmpfiles.d/branchrec.conf \
		$(TARGET_DIR)/usr/lib/tmpfiles.d/branchrec.conf
	$(INSTALL) -D -m 0644 $(@D)/dist/udev/60-branchrec.rules \
		$(TARGET_DIR)/usr/lib/udev/rules.d/60-branchrec.rules
endef

# The service user and its groups come from the users table the defconfigs name
# (board/common/users.table, BR2_ROOTFS_USERS_TABLES) and, at boot, from sysusers.d.

$(eval $(cargo-package))
