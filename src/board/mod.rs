//! The box's front panel: four status LEDs (REC, SYNC, FAULT, HOLD) and the legal-hold
//! button (docs/board.md).
//!
//! - [`pins`]: pin maps and line lookup (sans-IO).
//! - [`leds`]: what the LEDs show, from daemon snapshots and time (sans-IO).
//! - [`button`]: debounce and long-press detection (sans-IO).
//! - [`cdev`] / [`sim`]: embedded-hal [`OutputPin`]/[`InputPin`] implementations on the
//!   Linux GPIO character device and in memory.
//!
//! The daemon's shell that drives them is `app::board`.

pub mod cdev;
pub use branchrec_core::board::{button, leds, pins, sim};

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use embedded_hal::digital::{InputPin, OutputPin};
use serde::{Deserialize, Serialize};

use leds::Levels;
use pins::{PinMap, ResolvedPin};

/// Which board implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoardKind {
    /// `cdev` when the pin map file exists, else `sim`.
    #[default]
    Auto,
    /// Simulated lines (a development PC).
    Sim,
    /// The GPIO character device, lines from the pin map (start-up fails if a line is
    /// missing).
    Cdev,
}

/// `[board]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoardConfig {
    /// `auto`, `sim` or `cdev`.
    pub kind: BoardKind,
    /// Pin map (`board/<board>/pins.toml` installed here).
    pub pins: PathBuf,
    /// How often the button is sampled and the LEDs refreshed, ms.
    pub poll_ms: u64,
    /// The button's level must be stable this long, ms.
    pub debounce_ms: u64,
    /// A press held this long places a hold, ms.
    pub long_press_ms: u64,
    /// At least this long between two button holds, s.
    pub min_hold_interval_s: u64,
    /// The button holds calls in progress and those ended in the last N minutes.
    pub hold_window_min: u64,
    /// HOLD stays lit this long after the hold is durable, s.
    pub hold_led_s: u64,
    /// A backlog without upload progress for this long lights FAULT, s.
    pub uplink_stall_s: u64,
    /// FAULT blinks this long after the capture drop counters last grew, s.
    pub capture_drop_show_s: u64,
}

impl Default for BoardConfig {
    fn default() -> Self {
        BoardConfig {
            kind: BoardKind::Auto,
            pins: PathBuf::from("/etc/branchrec/pins.toml"),
            poll_ms: 20,
            debounce_ms: 50,
            long_press_ms: 2000,
            min_hold_interval_s: 30,
            hold_window_min: 30,
            hold_led_s: 60,
            uplink_stall_s: 900,
            capture_drop_show_s: 300,
        }
    }
}

impl BoardConfig {
    /// Check ranges; `Err((key, message))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("board.{k}"), m.to_string()));
        if !(5..=200).contains(&self.poll_ms) {
            return bad("poll_ms", "must be 5..=200");
        }
        if self.debounce_ms < self.poll_ms || self.debounce_ms > 1000 {
            return bad("debounce_ms", "must be at least poll_ms and at most 1000");
        }
        if self.long_press_ms < self.debounce_ms.saturating_mul(2) || self.long_press_ms > 60_000 {
            return bad(
                "long_press_ms",
                "must be at least twice debounce_ms and at most 60000",
            );
        }
        if self.min_hold_interval_s > 86_400 {
            return bad("min_hold_interval_s", "at most 86400");
        }
        if !(1..=10_080).contains(&self.hold_window_min) {
            return bad("hold_window_min", "must be 1..=10080 (a week)");
        }
        if self.hold_led_s > 86_400 {
            return bad("hold_led_s", "at most 86400");
        }
        if self.uplink_stall_s < 10 {
            return bad("uplink_stall_s", "at least 10");
        }
        if self.kind == BoardKind::Cdev && self.pins.as_os_str().is_empty() {
            return bad("pins", "kind = \"cdev\" needs a pin map");
        }
        Ok(())
    }

    /// The sans-IO LED thresholds.
    pub fn led_config(&self) -> leds::LedConfig {
        leds::LedConfig {
            uplink_stall: Duration::from_secs(self.uplink_stall_s),
            drop_show: Duration::from_secs(self.capture_drop_show_s),
            hold_led: Duration::from_secs(self.hold_led_s),
        }
    }

    /// The sans-IO button timing.
    pub fn button_config(&self) -> button::ButtonConfig {
        button::ButtonConfig {
            debounce: Duration::from_millis(self.debounce_ms),
            long_press: Duration::from_millis(self.long_press_ms),
            min_interval: Duration::from_secs(self.min_hold_interval_s),
        }
    }
}

/// Why the board could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// Pin map problem.
    #[error(transparent)]
    Pins(#[from] pins::PinError),
    /// GPIO character device problem.
    #[error(transparent)]
    Cdev(#[from] cdev::CdevError),
}

/// The five lines, behind embedded-hal traits.
pub struct Lines<O, I> {
    /// REC LED.
    pub rec: O,
    /// SYNC LED.
    pub sync: O,
    /// FAULT LED.
    pub fault: O,
    /// HOLD LED.
    pub hold: O,
    /// Hold button.
    pub button: I,
}

fn drive<P: OutputPin>(p: &mut P, on: bool) -> Result<(), P::Error> {
    if on {
        p.set_high()
    } else {
        p.set_low()
    }
}

impl<O: OutputPin, I: InputPin> Lines<O, I> {
    /// Set the four LEDs.
    pub fn set(&mut self, l: Levels) -> Result<(), String> {
        let e = |r: &str, x: O::Error| format!("{r} LED: {x:?}");
        drive(&mut self.rec, l.rec).map_err(|x| e("REC", x))?;
        drive(&mut self.sync, l.sync).map_err(|x| e("SYNC", x))?;
        drive(&mut self.fault, l.fault).map_err(|x| e("FAULT", x))?;
        drive(&mut self.hold, l.hold).map_err(|x| e("HOLD", x))
    }

    /// Whether the button is pressed (logical level).
    pub fn pressed(&mut self) -> Result<bool, String> {
        self.button
            .is_high()
            .map_err(|x| format!("hold button: {x:?}"))
    }
}

/// An opened board.
pub enum BoardIo {
    /// In memory; the button line is shared with the control socket's `board.press`.
    Sim(Lines<sim::SimPin, sim::SimPin>),
    /// GPIO character device.
    Cdev(Box<Lines<cdev::CdevPin, cdev::CdevPin>>),
}

impl BoardIo {
    /// Set the LEDs.
    pub fn set(&mut self, l: Levels) -> Result<(), String> {
        match self {
            BoardIo::Sim(x) => x.set(l),
            BoardIo::Cdev(x) => x.set(l),
        }
    }
    /// Read the button.
    pub fn pressed(&mut self) -> Result<bool, String> {
        match self {
            BoardIo::Sim(x) => x.pressed(),
            BoardIo::Cdev(x) => x.pressed(),
        }
    }
}

/// The board the daemon drives.
pub struct Board {
    /// Lines.
    pub io: BoardIo,
    /// What is shown in `branchrec status`.
    pub info: BoardInfo,
}

/// Which board is in use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoardInfo {
    /// `sim` or `cdev`.
    pub kind: String,
    /// Board name from the pin map (`sim` for the simulated board).
    pub board: String,
    /// Pin map file, when one is used.
    pub pins_file: Option<String>,
    /// The lines found.
    pub lines: Vec<ResolvedPin>,
}

/// Open the configured board: `cdev` through the pin map, or the simulated board.
pub fn open(cfg: &BoardConfig) -> Result<Board, BoardError> {
    let use_cdev = match cfg.kind {
        BoardKind::Cdev => true,
        BoardKind::Sim => false,
        BoardKind::Auto => cfg.pins.exists(),
    };
    if !use_cdev {
        let pin = sim::SimPin::default;
        return Ok(Board {
            io: BoardIo::Sim(Lines {
                rec: pin(),
                sync: pin(),
                fault: pin(),
                hold: pin(),
                button: pin(),
            }),
            info: BoardInfo {
                kind: "sim".into(),
                board: "sim".into(),
                pins_file: None,
                lines: Vec::new(),
            },
        });
    }
    let map = load_pin_map(&cfg.pins)?;
    let chips = cdev::chips()?;
    let resolved = pins::resolve(&map, &chips)?;
    let get = |r: pins::Role| -> Result<cdev::CdevPin, BoardError> {
        // `resolve` returns one entry per role.
        let p = resolved
            .iter()
            .find(|p| p.role == r)
            .ok_or_else(|| pins::PinError::Invalid(format!("no pin for {r}")))?;
        Ok(cdev::request(p)?)
    };
    let lines = Lines {
        rec: get(pins::Role::Rec)?,
        sync: get(pins::Role::Sync)?,
        fault: get(pins::Role::Fault)?,
        hold: get(pins::Role::Hold)?,
        button: get(pins::Role::HoldButton)?,
    };
    Ok(Board {
        io: BoardIo::Cdev(Box::new(lines)),
        info: BoardInfo {
            kind: "cdev".into(),
            board: map.board,
            pins_file: Some(cfg.pins.display().to_string()),
            lines: resolved,
        },
    })
}

/// The last button press, for `branchrec status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PressStatus {
    /// When the press began (RFC 3339).
    pub at: String,
    /// How long it was held (ms; so far, while still pressed).
    pub held_ms: u64,
    /// `none` (short), `hold` (placed a hold), `suppressed` (too soon after the last),
    /// `busy` (a hold was still being committed).
    pub action: String,
}

/// The last button hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HoldStatus {
    /// `pending`, `durable` or `failed`.
    pub state: String,
    /// Hold id once placed.
    pub hold_id: Option<i64>,
    /// Recordings it covered when placed.
    pub recordings: Option<u64>,
    /// When requested (RFC 3339).
    pub at: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// One LED as `branchrec status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedStatus {
    /// `off`, `on`, `blink`, `fast_blink`.
    pub pattern: String,
    /// Lit at this instant.
    pub lit: bool,
}

/// The board's live state (served on the control socket as `{"cmd":"board"}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoardStatus {
    /// Which board.
    #[serde(flatten)]
    pub info: BoardInfo,
    /// LEDs by name (`rec`, `sync`, `fault`, `hold`).
    pub leds: std::collections::BTreeMap<String, LedStatus>,
    /// Active FAULT reasons.
    pub faults: Vec<String>,
    /// Button pressed now (debounced).
    pub button_pressed: bool,
    /// Last press.
    pub last_press: Option<PressStatus>,
    /// Last button hold.
    pub last_hold: Option<HoldStatus>,
    /// The last line I/O error, if the lines fail.
    pub io_error: Option<String>,
}

/// State shared between the board task and the control socket.
pub struct BoardShared {
    /// The latest status.
    pub status: Mutex<Option<BoardStatus>>,
    /// The simulated button's line (None on a real board).
    pub sim_button: Option<sim::SimPin>,
    /// Generation of simulated presses (a newer press cancels an older release).
    pub press_gen: std::sync::atomic::AtomicU64,
}

impl BoardShared {
    /// State for `board`.
    pub fn new(board: &Board) -> Self {
        BoardShared {
            status: Mutex::new(None),
            sim_button: match &board.io {
                BoardIo::Sim(l) => Some(l.button.clone()),
                BoardIo::Cdev(_) => None,
            },
            press_gen: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let d = BoardConfig::default();
        assert!(d.validate().is_ok());
        assert_eq!((d.long_press_ms, d.hold_window_min), (2000, 30));
        let key = |c: BoardConfig| c.validate().unwrap_err().0;
        assert_eq!(
            key(BoardConfig {
                poll_ms: 0,
                ..d.clone()
            }),
            "board.poll_ms"
        );
        assert_eq!(
            key(BoardConfig {
                long_press_ms: 60,
                ..d.clone()
            }),
            "board.long_press_ms"
        );
        assert_eq!(
            key(BoardConfig {
                hold_window_min: 0,
                ..d.clone()
            }),
            "board.hold_window_min"
        );
        assert_eq!(
            key(BoardConfig {
                debounce_ms: 10,
                ..d.clone()
            }),
            "board.debounce_ms"
        );
    }

    #[test]
    fn auto_without_a_pin_map_is_the_simulated_board() {
        let cfg = BoardConfig {
            pins: "/nonexistent/pins.toml".into(),
            ..Default::default()
        };
        let mut b = open(&cfg).unwrap();
        assert_eq!(b.info.kind, "sim");
        let BoardIo::Sim(lines) = &b.io else {
            panic!("not simulated")
        };
        let (rec, fault, button) = (lines.rec.clone(), lines.fault.clone(), lines.button.clone());
        // Through the embedded-hal traits.
        b.io.set(Levels {
            rec: true,
            fault: false,
            ..Default::default()
        })
        .unwrap();
        assert!(rec.get() && !fault.get());
        assert!(!b.io.pressed().unwrap());
        button.set(true);
        assert!(b.io.pressed().unwrap());
        // Explicit cdev with a missing map fails and names the file.
        let e = open(&BoardConfig {
            kind: BoardKind::Cdev,
            ..cfg
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("/nonexistent/pins.toml"), "{e}");
    }
}

/// Read, parse and validate a pin map file (the parsing is [`PinMap::from_toml`]).
pub fn load_pin_map(path: &std::path::Path) -> Result<PinMap, pins::PinError> {
    let text = std::fs::read_to_string(path).map_err(|e| pins::PinError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    PinMap::from_toml(&text, path)
}
