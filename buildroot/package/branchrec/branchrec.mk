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

# Live capture links libpcap (the `pcap` crate). Its build script would dlopen the
# library to learn its version, which cannot work for the target: say it instead.
BRANCHREC_DEPENDENCIES = libpcap
BRANCHREC_CARGO_ENV = \
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

# tss-esapi links the TPM2 software stack through pkg-config.
BRANCHREC_DEPENDENCIES = tpm2-tss host-pkgconf

# AES-GCM must use the ARMv8 Crypto Extensions (see docs/crypto-benchmark.md); a
# RUSTFLAGS from the environment would override .cargo/config.toml, so set them here.
BRANCHREC_CARGO_ENV = RUSTFLAGS="--cfg aes_armv8 --cfg polyval_armv8"

# Only the daemon goes on the box, not the load generator.
BRANCHREC_CARGO_BUILD_OPTS = --bin branchrec

define BRANCHREC_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 \
		$(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)/branchrec \
		$(TARGET_DIR)/usr/bin/branchrec
endef

$(eval $(cargo-package))
