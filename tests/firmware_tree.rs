//! Structure of the firmware build tree and the service files, checked without Buildroot
//! (its sources cannot be downloaded in CI):
//!
//! * `buildroot_tree`: external.desc/.mk/Config.in; every package has Config.in and
//!   `<name>.mk`, is sourced, and installs only files that exist; every defconfig names
//!   existing overlays, fragments, scripts, genimage configs and users tables, selects
//!   systemd and the recorder; fragments, genimage configs and the users table are
//!   well-formed and agree with the unit; scripts are executable and pass `shellcheck`.
//!   With `BUILDROOT_DIR` set (a Buildroot checkout) the paths defconfigs take from
//!   Buildroot itself are checked too.
//! * `systemd_unit`: `systemd-analyze verify` of the unit and the data mount,
//!   sysusers.d/tmpfiles.d applied to a scratch root, and the unit's exposure from
//!   `systemd-analyze security --offline=true` at or below [`MAX_EXPOSURE`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Highest `systemd-analyze security` exposure the unit may have (it is 2.0 today).
const MAX_EXPOSURE: f64 = 2.5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn br() -> PathBuf {
    root().join("buildroot")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn require_tool(bin: &str, arg: &str, package: &str) {
    let ok = Command::new(bin)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`{bin}` not found: install the `{package}` package (scripts/test-all does)"
    );
}

/// `KEY=value` lines of a defconfig (comments and `# … is not set` skipped).
fn defconfig(p: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (n, l) in read(p).lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (k, v) = l
            .split_once('=')
            .unwrap_or_else(|| panic!("{}:{}: not KEY=value: {l}", p.display(), n + 1));
        assert!(
            k.starts_with("BR2_"),
            "{}:{}: {k} is not a Buildroot symbol",
            p.display(),
            n + 1
        );
        assert!(
            m.insert(k.to_string(), v.trim_matches('"').to_string())
                .is_none(),
            "{}: {k} set twice",
            p.display()
        );
    }
    m
}

/// Paths in a defconfig value: `$(BR2_EXTERNAL_BRANCHREC_PATH)/…` resolved in this tree;
/// other relative paths are Buildroot's own (`board/qemu/…`).
enum Ref {
    Ours(PathBuf),
    Buildroot(String),
}

fn refs(value: &str) -> Vec<Ref> {
    if value.contains("$(call ") || value.contains("://") {
        return Vec::new(); // a download location, not a file
    }
    value
        .split_whitespace()
        .map(
            |w| match w.strip_prefix("$(BR2_EXTERNAL_BRANCHREC_PATH)/") {
                Some(rest) => Ref::Ours(br().join(rest)),
                None => Ref::Buildroot(w.to_string()),
            },
        )
        .collect()
}

/// Whether a defconfig symbol's value is a list of files (not a kernel DTS name, URL, …).
fn is_path_key(k: &str) -> bool {
    [
        "_FILE",
        "_FILES",
        "_DIR",
        "_OVERLAY",
        "_SCRIPT",
        "_TABLES",
        "_SCRIPT_ARGS",
    ]
    .iter()
    .any(|s| k.ends_with(s))
}

/// Symbols defined by `config` lines in a Kconfig file.
fn kconfig_symbols(p: &Path) -> BTreeSet<String> {
    read(p)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("config "))
        .map(|s| format!("BR2_{}", s.trim().trim_start_matches("BR2_")))
        .collect()
}

fn shellcheck(p: &Path) {
    let o = Command::new("shellcheck").arg(p).output().unwrap();
    assert!(
        o.status.success(),
        "shellcheck {}:\n{}",
        p.display(),
        String::from_utf8_lossy(&o.stdout)
    );
}

fn check_fragment(p: &Path, must: &[&str]) {
    let text = read(p);
    let mut set = BTreeSet::new();
    for (n, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() {
            continue;
        }
        if let Some(c) = l.strip_prefix("# ") {
            if let Some(sym) = c.strip_suffix(" is not set") {
                assert!(sym.starts_with("CONFIG_"), "{}:{}", p.display(), n + 1);
            }
            continue;
        }
        assert!(
            !l.starts_with('#') || l == "#",
            "{}:{}: {l}",
            p.display(),
            n + 1
        );
        let (k, v) = l
            .split_once('=')
            .unwrap_or_else(|| panic!("{}:{}: not CONFIG_X=v: {l}", p.display(), n + 1));
        assert!(k.starts_with("CONFIG_"), "{}:{}: {k}", p.display(), n + 1);
        assert!(
            matches!(v, "y" | "m" | "n") || v.starts_with('"') || v.parse::<i64>().is_ok(),
            "{}:{}: value {v}",
            p.display(),
            n + 1
        );
        assert!(set.insert(k.to_string()), "{}: {k} twice", p.display());
    }
    for m in must {
        assert!(set.contains(*m), "{}: needs {m}=y", p.display());
    }
}

/// `image = "…"` names, labels, and the images each genimage config defines.
fn check_genimage(p: &Path) {
    let text = read(p);
    let defined: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image "))
        .map(|l| l.trim_end_matches('{').trim().to_string())
        .collect();
    let used: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image = "))
        .map(|v| v.trim_matches('"').to_string())
        .collect();
    assert!(!used.is_empty(), "{}: no partitions", p.display());
    for u in &used {
        // rootfs.ext4 comes from Buildroot (BR2_TARGET_ROOTFS_EXT2_4), the rest from here.
        assert!(
            u == "rootfs.ext4" || defined.contains(u),
            "{}: partition image {u} is not defined",
            p.display()
        );
    }
    assert!(
        text.contains("label = \"brdata\""),
        "{}: no data partition labelled brdata (var-lib-branchrec.mount mounts it)",
        p.display()
    );
    assert_eq!(
        text.matches('{').count(),
        text.matches('}').count(),
        "{}: unbalanced braces",
        p.display()
    );
}

/// Names in a makeusers table: (users, groups).
fn users_table(p: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut users, mut groups) = (BTreeSet::new(), BTreeSet::new());
    for (n, l) in read(p).lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(
            f.len() >= 8,
            "{}:{}: makeusers needs 8 fields + comment",
            p.display(),
            n + 1
        );
        if f[0] != "-" {
            users.insert(f[0].to_string());
        }
        groups.insert(f[2].to_string());
        if f[7] != "-" {
            groups.extend(f[7].split(',').map(str::to_string));
        }
        assert!(
            f[1] == "-" || f[1] == "-1" || f[1] == "-2" || f[1].parse::<u32>().is_ok(),
            "{}:{}: uid",
            p.display(),
            n + 1
        );
    }
    (users, groups)
}

/// `Key=value` values of a unit file (all occurrences, in order).
fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

#[test]
fn buildroot_tree() {
    require_tool("shellcheck", "--version", "shellcheck");
    let desc = read(&br().join("external.desc"));
    assert!(
        desc.lines().any(|l| l == "name: BRANCHREC"),
        "external.desc: {desc}"
    );
    let ext_mk = read(&br().join("external.mk"));
    assert!(
        ext_mk.contains("$(BR2_EXTERNAL_BRANCHREC_PATH)/package/*/*.mk"),
        "external.mk must include every package's .mk"
    );
    // Packages: Config.in + <name>.mk, sourced from the top Config.in.
    let top = read(&br().join("Config.in"));
    let sourced: BTreeSet<PathBuf> = top
        .lines()
        .filter_map(|l| l.trim().strip_prefix("source "))
        .map(|s| {
            let s = s.trim_matches('"');
            let rest = s
                .strip_prefix("$BR2_EXTERNAL_BRANCHREC_PATH/")
                .unwrap_or_else(|| panic!("Config.in sources {s} outside the tree"));
            br().join(rest)
        })
        .collect();
    for s in &sourced {
        assert!(s.is_file(), "Config.in sources missing {}", s.display());
    }
    let mut symbols = BTreeSet::new();
    let mut packages = 0;
    for e in std::fs::read_dir(br().join("package")).unwrap() {
        let dir = e.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let cfg = dir.join("Config.in");
        let mk = dir.join(format!("{name}.mk"));
        assert!(cfg.is_file(), "package {name} has no Config.in");
        assert!(mk.is_file(), "package {name} has no {name}.mk");
        assert!(sourced.contains(&cfg), "Config.in does not source {name}");
        let upper = name.to_uppercase().replace('-', "_");
        let syms = kconfig_symbols(&cfg);
        assert!(
            syms.contains(&format!("BR2_PACKAGE_{upper}")),
            "{name}: no BR2_PACKAGE_{upper}"
        );
        symbols.extend(syms);
        let mk_text = read(&mk);
        assert!(
            mk_text.contains("$(eval $(cargo-package))")
                || mk_text.contains("$(eval $(generic-package))"),
            "{name}.mk: no package infrastructure"
        );
        // Files the package installs from its (local) source: they must exist here.
        for w in mk_text.split_whitespace() {
            if let Some(rel) = w.strip_prefix("$(@D)/") {
                if rel.starts_with("target/") || rel.contains("$(") {
                    continue;
                }
                let rel = rel.trim_end_matches(['\\', ';']);
                assert!(
                    root().join(rel).exists(),
                    "{name}.mk installs {rel}, which is not in the repository"
                );
            }
        }
        packages += 1;
    }
    assert!(packages >= 1);
    let mk = read(&br().join("package/branchrec/branchrec.mk"));
    for v in [
        "BRANCHREC_DEPENDENCIES",
        "BRANCHREC_CARGO_ENV",
        "BRANCHREC_SITE",
    ] {
        let n = mk
            .lines()
            .filter(|l| l.starts_with(&format!("{v} =")))
            .count();
        assert_eq!(
            n, 1,
            "branchrec.mk assigns {v} {n} times (a later `=` drops the earlier)"
        );
    }
    for dep in ["tpm2-tss", "libpcap", "opus", "host-pkgconf"] {
        assert!(
            mk.lines()
                .any(|l| l.starts_with("BRANCHREC_DEPENDENCIES") && l.contains(dep)),
            "branchrec.mk: {dep} not in BRANCHREC_DEPENDENCIES"
        );
    }

    // The unit's user and groups, for the users tables.
    let unit = read(&root().join("dist/systemd/branchrec.service"));
    let user = unit_values(&unit, "User").pop().expect("User=");
    let sup: Vec<String> = unit_values(&unit, "SupplementaryGroups")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();

    let buildroot_dir = std::env::var_os("BUILDROOT_DIR").map(PathBuf::from);
    let mut defconfigs = 0;
    let mut boards = BTreeSet::new();
    for e in std::fs::read_dir(br().join("configs")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.ends_with("_defconfig"), "configs/{name}");
        let d = defconfig(&p);
        defconfigs += 1;
        let get = |k: &str| {
            d.get(k)
                .unwrap_or_else(|| panic!("{name}: {k} not set"))
                .clone()
        };
        assert_eq!(get("BR2_aarch64"), "y", "{name}");
        assert_eq!(get("BR2_INIT_SYSTEMD"), "y", "{name}: systemd is the init");
        assert_eq!(get("BR2_PACKAGE_BRANCHREC"), "y", "{name}");
        assert_eq!(
            get("BR2_TARGET_ROOTFS_EXT2_4"),
            "y",
            "{name}: genimage takes rootfs.ext4"
        );
        assert_eq!(get("BR2_PACKAGE_HOST_GENIMAGE"), "y", "{name}");
        for k in d.keys() {
            if k.starts_with("BR2_PACKAGE_BRANCHREC") {
                assert!(
                    symbols.contains(k),
                    "{name}: {k} is not defined by this tree"
                );
            }
        }
        for k in [
            "BR2_ROOTFS_OVERLAY",
            "BR2_ROOTFS_POST_BUILD_SCRIPT",
            "BR2_ROOTFS_POST_IMAGE_SCRIPT",
            "BR2_ROOTFS_POST_SCRIPT_ARGS",
            "BR2_ROOTFS_USERS_TABLES",
            "BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES",
        ] {
            get(k);
        }
        for (k, v) in &d {
            for r in refs(v) {
                match r {
                    Ref::Ours(path) => {
                        assert!(
                            path.exists(),
                            "{name}: {k} names missing {}",
                            path.display()
                        );
                        let path = path.canonicalize().unwrap();
                        assert!(
                            path.starts_with(root().canonicalize().unwrap()),
                            "{name}: {k} leaves the repository"
                        );
                        if k.ends_with("_SCRIPT") {
                            let mode = std::os::unix::fs::PermissionsExt::mode(
                                &path.metadata().unwrap().permissions(),
                            );
                            assert!(mode & 0o111 != 0, "{}: not executable", path.display());
                            shellcheck(&path);
                        }
                        if k == "BR2_ROOTFS_USERS_TABLES" {
                            let (users, groups) = users_table(&path);
                            assert!(users.contains(&user), "{name}: no user {user} in the table");
                            for g in &sup {
                                // tss comes from the tpm2-tss package's own users.
                                assert!(
                                    groups.contains(g) || g == "tss",
                                    "{name}: group {g} (SupplementaryGroups) not made"
                                );
                            }
                        }
                        if k == "BR2_ROOTFS_OVERLAY" {
                            assert!(
                                path.is_dir(),
                                "{}: overlay is not a directory",
                                path.display()
                            );
                        }
                    }
                    Ref::Buildroot(rel) if is_path_key(k) && !rel.starts_with('/') => {
                        if let Some(b) = &buildroot_dir {
                            assert!(
                                b.join(&rel).exists(),
                                "{name}: {k} names {rel}, not in {}",
                                b.display()
                            );
                        }
                    }
                    Ref::Buildroot(_) => {}
                }
            }
        }
        // The board directory: fragment with the TPM and GPIO drivers, genimage config.
        let gen = br().join(
            get("BR2_ROOTFS_POST_SCRIPT_ARGS")
                .strip_prefix("$(BR2_EXTERNAL_BRANCHREC_PATH)/")
                .expect("genimage config in this tree"),
        );
        check_genimage(&gen);
        let board = gen.parent().unwrap().canonicalize().unwrap();
        let tpm = if d.contains_key("BR2_PACKAGE_RPI_FIRMWARE") {
            "CONFIG_TCG_TIS_SPI"
        } else {
            "CONFIG_TCG_TIS"
        };
        check_fragment(
            &board.join("linux.fragment"),
            &[
                "CONFIG_TCG_TPM",
                tpm,
                "CONFIG_GPIO_CDEV",
                "CONFIG_SECCOMP_FILTER",
                "CONFIG_CGROUP_BPF",
                "CONFIG_EXT4_FS",
            ],
        );
        if name.starts_with("qemu") {
            check_fragment(&board.join("linux.fragment"), &["CONFIG_GPIO_SIM"]);
        }
        // A pin map, when the board has one, is TOML.
        let pins = board.join("pins.toml");
        if pins.exists() {
            read(&pins)
                .parse::<toml::Table>()
                .unwrap_or_else(|e| panic!("{}: {e}", pins.display()));
        }
        boards.insert(board);
    }
    assert!(defconfigs >= 2, "qemu and at least one real board");
    assert!(boards.len() >= 2);
    // Every script in the tree, referenced or not.
    let mut stack = vec![br()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "sh") {
                shellcheck(&p);
            }
        }
    }
}

#[test]
fn systemd_unit() {
    require_tool("systemd-analyze", "--version", "systemd");
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart= exists: point it at the binary under test.
    let unit = read(&root().join("dist/systemd/branchrec.service"));
    assert!(unit.contains("ExecStart=/usr/bin/branchrec run --config /etc/branchrec/config.toml"));
    let u = dir.path().join("branchrec.service");
    std::fs::write(
        &u,
        unit.replace("/usr/bin/branchrec", env!("CARGO_BIN_EXE_branchrec")),
    )
    .unwrap();
    let m = dir.path().join("var-lib-branchrec.mount");
    std::fs::copy(
        br().join("board/common/rootfs_overlay/usr/lib/systemd/system/var-lib-branchrec.mount"),
        &m,
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&u)
        .arg(&m)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // Only complaints about this host's units (not ours) are tolerated.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("branchrec")).collect();
    assert!(
        o.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{err}"
    );
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StartLimitBurst=",
    ] {
        assert!(unit.contains(key), "unit lacks {key}");
    }
    assert_eq!(
        unit_values(&unit, "CapabilityBoundingSet"),
        ["CAP_NET_RAW"],
        "capabilities beyond capture"
    );

    // Exposure.
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(root().join("dist/systemd/branchrec.service"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    let score: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for branchrec.service: ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    eprintln!("systemd-analyze security exposure: {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}: the unit lost hardening\n{out}"
    );

    // sysusers.d and tmpfiles.d applied to a scratch root.
    let r = dir.path().join("root");
    for (src, dst) in [
        (
            "dist/sysusers.d/branchrec.conf",
            "usr/lib/sysusers.d/branchrec.conf",
        ),
        (
            "dist/tmpfiles.d/branchrec.conf",
            "usr/lib/tmpfiles.d/branchrec.conf",
        ),
    ] {
        std::fs::create_dir_all(r.join(dst).parent().unwrap()).unwrap();
        std::fs::copy(root().join(src), r.join(dst)).unwrap();
    }
    std::fs::create_dir_all(r.join("etc")).unwrap();
    let o = Command::new("systemd-sysusers")
        .arg(format!("--root={}", r.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let passwd = read(&r.join("etc/passwd"));
    let group = read(&r.join("etc/group"));
    assert!(passwd.contains("branchrec:x:"), "{passwd}");
    for g in ["tss", "gpio"] {
        let line = group
            .lines()
            .find(|l| l.starts_with(&format!("{g}:")))
            .unwrap_or_else(|| panic!("no group {g}: {group}"));
        assert!(line.ends_with("branchrec"), "{line}");
    }
    let o = Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", r.display()))
        .arg("--create")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(r.join("var/lib/branchrec").is_dir());
    assert!(r.join("etc/branchrec/config.d").is_dir());

    // The box configuration is complete once a site drop-in sets the address (config
    // tests); with the qemu drop-in it loads as is.
    let c = dir.path().join("etc");
    std::fs::create_dir_all(c.join("config.d")).unwrap();
    std::fs::copy(
        root().join("dist/etc/branchrec/config.toml"),
        c.join("config.toml"),
    )
    .unwrap();
    std::fs::copy(
        br().join("board/qemu_aarch64_virt/rootfs_overlay/etc/branchrec/config.d/50-qemu.toml"),
        c.join("config.d/50-qemu.toml"),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_branchrec"))
        .args(["check-config", "--config"])
        .arg(c.join("config.toml"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("50-qemu.toml"),
        "check-config lists the drop-in: {out}"
    );
}
