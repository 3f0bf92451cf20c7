//! Pin maps (`board/<board>/pins.toml`, installed as `/etc/branchrec/pins.toml`) and the
//! sans-IO part of line lookup: which chip and offset each role uses, given the chips the
//! kernel reports. Opening the chips is [`super::cdev`]'s job.
//!
//! A pin is found by line NAME (`name = "led-rec"`, preferred: device trees and gpio-sim
//! name lines, so the map survives chip renumbering) or by chip + offset
//! (`chip = "gpiochip0"`, `line = 17`). `chip` matches a chip's device name
//! (`gpiochip0`), its path (`/dev/gpiochip0`) or its label (`pinctrl-bcm2711`,
//! `branchrec-sim`); with `name` it only narrows the search.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a pin map cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PinError {
    /// The file could not be read.
    #[error("cannot read pin map {path}: {message}")]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        message: String,
    },
    /// TOML syntax, unknown key, wrong type.
    #[error("pin map {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What toml/serde said.
        message: String,
    },
    /// The entries parse but are inconsistent.
    #[error("pin map: {0}")]
    Invalid(String),
    /// No chip matches `chip`.
    #[error("{role}: no GPIO chip named or labelled `{chip}` (chips: {available})")]
    NoChip {
        /// Role of the pin.
        role: Role,
        /// The `chip` value.
        chip: String,
        /// What exists.
        available: String,
    },
    /// No line with that name.
    #[error("{role}: no GPIO line named `{name}`{within}")]
    NoLine {
        /// Role of the pin.
        role: Role,
        /// Line name looked for.
        name: String,
        /// ` on chip …` when the search was narrowed.
        within: String,
    },
    /// Several lines carry the name: the map must name the chip.
    #[error("{role}: line name `{name}` is on several chips ({chips}); set `chip`")]
    Ambiguous {
        /// Role of the pin.
        role: Role,
        /// Line name.
        name: String,
        /// Chips carrying it.
        chips: String,
    },
    /// The offset is past the chip's last line.
    #[error("{role}: chip {chip} has {lines} lines, no line {offset}")]
    Offset {
        /// Role of the pin.
        role: Role,
        /// Chip.
        chip: String,
        /// Its line count.
        lines: usize,
        /// Requested offset.
        offset: u32,
    },
    /// Two roles resolve to the same line.
    #[error("{a} and {b} are both {chip} line {offset}")]
    Shared {
        /// First role.
        a: Role,
        /// Second role.
        b: Role,
        /// Chip path.
        chip: String,
        /// Offset.
        offset: u32,
    },
}

/// What a pin is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// REC LED.
    Rec,
    /// SYNC LED.
    Sync,
    /// FAULT LED.
    Fault,
    /// HOLD LED.
    Hold,
    /// The legal-hold push button (input).
    HoldButton,
}

impl Role {
    /// Every role, LEDs first; a pin map names each exactly once.
    pub const ALL: [Role; 5] = [
        Role::Rec,
        Role::Sync,
        Role::Fault,
        Role::Hold,
        Role::HoldButton,
    ];

    /// Name as written in the pin map.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Rec => "rec",
            Role::Sync => "sync",
            Role::Fault => "fault",
            Role::Hold => "hold",
            Role::HoldButton => "hold_button",
        }
    }

    /// Whether the line is an input.
    pub fn is_input(self) -> bool {
        self == Role::HoldButton
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bias requested for a line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bias {
    /// Leave as configured by firmware / device tree.
    #[default]
    AsIs,
    /// Internal pull-up (a button to ground: `active_low = true`).
    PullUp,
    /// Internal pull-down.
    PullDown,
    /// No bias.
    Disabled,
}

/// One `[[pin]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PinSpec {
    /// What the pin is for.
    pub role: Role,
    /// Chip device name, path or label.
    #[serde(default)]
    pub chip: Option<String>,
    /// Offset on `chip`.
    #[serde(default)]
    pub line: Option<u32>,
    /// Line name (gpio-line-names / gpio-sim `name`).
    #[serde(default)]
    pub name: Option<String>,
    /// The line is active (LED lit, button pressed) when electrically low.
    #[serde(default)]
    pub active_low: bool,
    /// Bias.
    #[serde(default)]
    pub bias: Bias,
}

/// A whole pin map.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PinMap {
    /// Board name (`rpi4`, `qemu_aarch64_virt`).
    pub board: String,
    /// The pins.
    #[serde(rename = "pin", default)]
    pub pins: Vec<PinSpec>,
}

impl PinMap {
    /// Parse and validate TOML text (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &Path) -> Result<PinMap, PinError> {
        let map: PinMap = toml::from_str(text).map_err(|e| PinError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        map.validate()?;
        Ok(map)
    }

    /// Each role exactly once; each pin by `name` or by `chip` + `line`.
    pub fn validate(&self) -> Result<(), PinError> {
        let bad = |m: String| Err(PinError::Invalid(m));
        if self.board.trim().is_empty() {
            return bad("`board` must name the board".into());
        }
        for role in Role::ALL {
            match self.pins.iter().filter(|p| p.role == role).count() {
                1 => {}
                0 => return bad(format!("no [[pin]] with role = \"{role}\"")),
                n => return bad(format!("role \"{role}\" is given {n} times")),
            }
        }
        for p in &self.pins {
            match (&p.name, p.line, &p.chip) {
                (Some(n), None, _) if !n.is_empty() => {}
                (None, Some(_), Some(c)) if !c.is_empty() => {}
                (Some(_), Some(_), _) => {
                    return bad(format!("{}: give `name` or `line`, not both", p.role))
                }
                (None, Some(_), _) => return bad(format!("{}: `line` needs `chip`", p.role)),
                _ => {
                    return bad(format!(
                        "{}: needs `name` (preferred) or `chip` + `line`",
                        p.role
                    ))
                }
            }
        }
        Ok(())
    }
}

/// What the kernel reports about one GPIO chip (`GPIO_GET_CHIPINFO` + line info).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChipDesc {
    /// `/dev/gpiochipN`.
    pub path: PathBuf,
    /// Device name, `gpiochipN`.
    pub name: String,
    /// Label (driver or gpio-sim bank label).
    pub label: String,
    /// Line names by offset (empty string: unnamed).
    pub lines: Vec<String>,
}

impl ChipDesc {
    fn matches(&self, chip: &str) -> bool {
        self.name == chip || self.label == chip || self.path == Path::new(chip)
    }
}

/// A pin found on a chip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedPin {
    /// Role.
    pub role: Role,
    /// Chip device path.
    pub chip: PathBuf,
    /// Chip label, for messages.
    pub chip_label: String,
    /// Offset on the chip.
    pub offset: u32,
    /// Line name (as the kernel reports it).
    pub line_name: String,
    /// Active low.
    pub active_low: bool,
    /// Bias.
    pub bias: Bias,
}

/// Find every pin of `map` among `chips`.
pub fn resolve(map: &PinMap, chips: &[ChipDesc]) -> Result<Vec<ResolvedPin>, PinError> {
    let mut out = Vec::with_capacity(map.pins.len());
    for role in Role::ALL {
        let Some(p) = map.pins.iter().find(|p| p.role == role) else {
            return Err(PinError::Invalid(format!("no pin for role {role}")));
        };
        let candidates: Vec<&ChipDesc> = match &p.chip {
            Some(c) => chips.iter().filter(|d| d.matches(c)).collect(),
            None => chips.iter().collect(),
        };
        if let Some(c) = &p.chip {
            if candidates.is_empty() {
                let available = chips
                    .iter()
                    .map(|d| format!("{} \"{}\"", d.name, d.label))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(PinError::NoChip {
                    role,
                    chip: c.clone(),
                    available: if available.is_empty() {
                        "none".into()
                    } else {
                        available
                    },
                });
            }
        }
        let (chip, offset) = match (&p.name, p.line) {
            (Some(name), _) => {
                let hits: Vec<(&ChipDesc, u32)> = candidates
                    .iter()
                    .flat_map(|d| {
                        d.lines
                            .iter()
                            .enumerate()
                            .filter(|(_, n)| *n == name)
                            .filter_map(move |(i, _)| Some((*d, u32::try_from(i).ok()?)))
                    })
                    .collect();
                match hits.as_slice() {
                    [one] => *one,
                    [] => {
                        return Err(PinError::NoLine {
                            role,
                            name: name.clone(),
                            within: p
                                .chip
                                .as_ref()
                                .map(|c| format!(" on chip `{c}`"))
                                .unwrap_or_default(),
                        })
                    }
                    many => {
                        return Err(PinError::Ambiguous {
                            role,
                            name: name.clone(),
                            chips: many
                                .iter()
                                .map(|(d, o)| format!("{} line {o}", d.name))
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                }
            }
            (None, Some(offset)) => {
                // `validate` guarantees `chip` here; several chips matching (a label
                // shared by two banks) is ambiguous.
                let d = match candidates.as_slice() {
                    [one] => *one,
                    _ => {
                        return Err(PinError::Ambiguous {
                            role,
                            name: format!("offset {offset}"),
                            chips: candidates
                                .iter()
                                .map(|d| d.name.clone())
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                };
                if offset as usize >= d.lines.len() {
                    return Err(PinError::Offset {
                        role,
                        chip: d.name.clone(),
                        lines: d.lines.len(),
                        offset,
                    });
                }
                (d, offset)
            }
            (None, None) => return Err(PinError::Invalid(format!("{role}: no name or line"))),
        };
        out.push(ResolvedPin {
            role,
            chip: chip.path.clone(),
            chip_label: chip.label.clone(),
            offset,
            line_name: chip.lines.get(offset as usize).cloned().unwrap_or_default(),
            active_low: p.active_low,
            bias: p.bias,
        });
    }
    let mut seen: BTreeMap<(PathBuf, u32), Role> = BTreeMap::new();
    for r in &out {
        if let Some(a) = seen.insert((r.chip.clone(), r.offset), r.role) {
            return Err(PinError::Shared {
                a,
                b: r.role,
                chip: r.chip.display().to_string(),
                offset: r.offset,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(board: &str) -> PinMap {
        let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../board"))
            .join(board)
            .join("pins.toml");
        PinMap::from_toml(&std::fs::read_to_string(&p).unwrap(), &p)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// gpio-sim as the image creates it, next to the virt machine's PL061.
    fn qemu_chips() -> Vec<ChipDesc> {
        vec![
            ChipDesc {
                path: "/dev/gpiochip0".into(),
                name: "gpiochip0".into(),
                label: "9030000.pl061".into(),
                lines: vec![String::new(); 8],
            },
            ChipDesc {
                path: "/dev/gpiochip1".into(),
                name: "gpiochip1".into(),
                label: "branchrec-sim".into(),
                lines: ["led-rec", "led-sync", "led-fault", "led-hold", "btn-hold"]
                    .map(String::from)
                    .to_vec(),
            },
        ]
    }

    /// The Raspberry Pi 4's main chip with the overlay's gpio-line-names.
    fn rpi_chips() -> Vec<ChipDesc> {
        let mut lines = vec![String::new(); 58];
        for (o, n) in [
            (5, "BRANCHREC_LED_REC"),
            (6, "BRANCHREC_LED_SYNC"),
            (13, "BRANCHREC_LED_FAULT"),
            (19, "BRANCHREC_LED_HOLD"),
            (26, "BRANCHREC_BTN_HOLD"),
            (8, "SPI_CE0_N"),
        ] {
            lines[o] = n.into();
        }
        vec![
            ChipDesc {
                path: "/dev/gpiochip0".into(),
                name: "gpiochip0".into(),
                label: "pinctrl-bcm2711".into(),
                lines,
            },
            ChipDesc {
                path: "/dev/gpiochip1".into(),
                name: "gpiochip1".into(),
                label: "raspberrypi-exp-gpio".into(),
                lines: vec!["BT_ON".into(), "WL_ON".into(), "PWR_LED_OFF".into()],
            },
        ]
    }

    #[test]
    fn qemu_map_resolves_on_gpio_sim() {
        let m = fixture("qemu_aarch64_virt");
        assert_eq!(m.board, "qemu_aarch64_virt");
        let r = resolve(&m, &qemu_chips()).unwrap();
        let got: Vec<(Role, &str, u32, bool)> = r
            .iter()
            .map(|p| (p.role, p.chip.to_str().unwrap(), p.offset, p.active_low))
            .collect();
        assert_eq!(
            got,
            vec![
                (Role::Rec, "/dev/gpiochip1", 0, false),
                (Role::Sync, "/dev/gpiochip1", 1, false),
                (Role::Fault, "/dev/gpiochip1", 2, false),
                (Role::Hold, "/dev/gpiochip1", 3, false),
                (Role::HoldButton, "/dev/gpiochip1", 4, true),
            ]
        );
        assert_eq!(r[4].bias, Bias::PullUp);
        // The chip is found by label whatever its number.
        let mut chips = qemu_chips();
        chips.swap(0, 1);
        chips[0].path = "/dev/gpiochip7".into();
        let r = resolve(&m, &chips).unwrap();
        assert!(r.iter().all(|p| p.chip == Path::new("/dev/gpiochip7")));
    }

    #[test]
    fn rpi4_map_resolves_on_the_overlay_names() {
        let m = fixture("rpi4");
        let r = resolve(&m, &rpi_chips()).unwrap();
        let offsets: Vec<u32> = r.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![5, 6, 13, 19, 26]);
        assert!(r.iter().all(|p| p.chip_label == "pinctrl-bcm2711"));
        assert!(r[4].active_low && r[4].bias == Bias::PullUp);
    }

    #[test]
    fn lookup_errors_name_the_problem() {
        let m = fixture("qemu_aarch64_virt");
        // Missing line.
        let mut chips = qemu_chips();
        chips[1].lines[4] = "something".into();
        let e = resolve(&m, &chips).unwrap_err();
        assert!(
            matches!(
                &e,
                PinError::NoLine {
                    role: Role::HoldButton,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("btn-hold"), "{e}");
        // No such chip.
        let e = resolve(&m, &qemu_chips()[..1]).unwrap_err();
        assert!(
            matches!(
                e,
                PinError::NoChip {
                    role: Role::Rec,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("9030000.pl061"), "{e}");
        // A name on two chips (without `chip`) is ambiguous.
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../board/qemu_aarch64_virt/pins.toml"
        ))
        .unwrap()
        .replace("chip = \"branchrec-sim\"\n", "");
        let m2 = PinMap::from_toml(&text, Path::new("x")).unwrap();
        let mut chips = qemu_chips();
        chips[0].lines[2] = "led-sync".into();
        let e = resolve(&m2, &chips).unwrap_err();
        assert!(
            matches!(
                e,
                PinError::Ambiguous {
                    role: Role::Sync,
                    ..
                }
            ),
            "{e}"
        );
        // Without the duplicate it resolves by name alone.
        assert_eq!(resolve(&m2, &qemu_chips()).unwrap()[1].offset, 1);
    }

    #[test]
    fn offsets_and_shared_lines() {
        let text = r#"
            board = "x"
            [[pin]]
            role = "rec"
            chip = "gpiochip1"
            line = 0
            [[pin]]
            role = "sync"
            chip = "/dev/gpiochip1"
            line = 1
            [[pin]]
            role = "fault"
            chip = "branchrec-sim"
            line = 2
            [[pin]]
            role = "hold"
            chip = "gpiochip1"
            line = 9
            [[pin]]
            role = "hold_button"
            name = "led-rec"
        "#;
        let m = PinMap::from_toml(text, Path::new("x")).unwrap();
        let e = resolve(&m, &qemu_chips()).unwrap_err();
        assert_eq!(
            e,
            PinError::Offset {
                role: Role::Hold,
                chip: "gpiochip1".into(),
                lines: 5,
                offset: 9
            }
        );
        let m = PinMap::from_toml(&text.replace("line = 9", "line = 3"), Path::new("x")).unwrap();
        let e = resolve(&m, &qemu_chips()).unwrap_err();
        assert!(
            matches!(
                e,
                PinError::Shared {
                    a: Role::Rec,
                    b: Role::HoldButton,
                    offset: 0,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn validation() {
        let base = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../board/qemu_aarch64_virt/pins.toml"
        ))
        .unwrap();
        let err = |t: &str| {
            PinMap::from_toml(t, Path::new("p.toml"))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&base.replace("role = \"fault\"", "role = \"rec\"")).contains("2 times"));
        assert!(err(&base.replace("role = \"fault\"", "role = \"sync\"")).contains("2 times"));
        assert!(
            err(&base.replace("name = \"led-hold\"", "name = \"led-hold\"\nline = 3"))
                .contains("not both")
        );
        assert!(err(&base.replace("active_low", "activelow")).contains("unknown field"));
        assert!(err(&base.replace("pull-up", "pullup")).contains("pullup"));
        assert!(err(&base.replace("role = \"rec\"", "role = \"power\"")).contains("power"));
        let no_chip = "board = \"x\"\n[[pin]]\nrole = \"rec\"\nline = 1\n";
        assert!(err(no_chip).contains("no [[pin]] with role = \"sync\""));
    }
}
