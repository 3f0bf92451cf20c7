//! The real board: lines of the Linux GPIO character device (uAPI v2) through `gpiocdev`,
//! behind embedded-hal's [`OutputPin`] / [`InputPin`].
//!
//! Levels are logical: the kernel applies `active_low`, so `set_high` lights an LED and
//! `is_high` means the button is pressed, whatever the wiring.

use std::path::PathBuf;

use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin};
use gpiocdev::line::Value;

use super::pins::{Bias, ChipDesc, ResolvedPin};

/// A GPIO character-device error.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct CdevError {
    /// What was being done.
    pub what: String,
    /// gpiocdev's error.
    #[source]
    pub source: gpiocdev::Error,
}

impl embedded_hal::digital::Error for CdevError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// One requested line.
pub struct CdevPin {
    req: gpiocdev::Request,
    offset: u32,
}

impl std::fmt::Debug for CdevPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CdevPin({} line {})",
            self.req.chip_path().display(),
            self.offset
        )
    }
}

impl ErrorType for CdevPin {
    type Error = CdevError;
}

impl CdevPin {
    fn err(&self, what: &str, source: gpiocdev::Error) -> CdevError {
        CdevError {
            what: format!(
                "{what} {} line {}",
                self.req.chip_path().display(),
                self.offset
            ),
            source,
        }
    }
}

impl OutputPin for CdevPin {
    fn set_low(&mut self) -> Result<(), CdevError> {
        self.req
            .set_value(self.offset, Value::Inactive)
            .map_err(|e| self.err("setting", e))
    }
    fn set_high(&mut self) -> Result<(), CdevError> {
        self.req
            .set_value(self.offset, Value::Active)
            .map_err(|e| self.err("setting", e))
    }
}

impl InputPin for CdevPin {
    fn is_high(&mut self) -> Result<bool, CdevError> {
        self.req
            .value(self.offset)
            .map(|v| v == Value::Active)
            .map_err(|e| self.err("reading", e))
    }
    fn is_low(&mut self) -> Result<bool, CdevError> {
        self.is_high().map(|h| !h)
    }
}

/// Every GPIO chip of this system with its line names (what [`super::pins::resolve`]
/// needs). Chips that cannot be opened are skipped with a warning.
pub fn chips() -> Result<Vec<ChipDesc>, CdevError> {
    let paths = gpiocdev::chip::chips().map_err(|source| CdevError {
        what: "listing /dev/gpiochip*".into(),
        source,
    })?;
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        match describe(&path) {
            Ok(d) => out.push(d),
            Err(e) => tracing::warn!(error = %e, "skipping GPIO chip"),
        }
    }
    Ok(out)
}

fn describe(path: &PathBuf) -> Result<ChipDesc, CdevError> {
    let wrap = |source| CdevError {
        what: format!("reading {}", path.display()),
        source,
    };
    let chip = gpiocdev::Chip::from_path(path).map_err(wrap)?;
    let info = chip.info().map_err(wrap)?;
    let mut lines = Vec::with_capacity(info.num_lines as usize);
    for li in chip.line_info_iter().map_err(wrap)? {
        lines.push(li.map_err(wrap)?.name);
    }
    Ok(ChipDesc {
        path: path.clone(),
        name: info.name,
        label: info.label,
        lines,
    })
}

/// Request one resolved line (consumer `branchrec`): LEDs as outputs, initially dark;
/// the button as an input with the map's bias.
pub fn request(p: &ResolvedPin) -> Result<CdevPin, CdevError> {
    let mut b = gpiocdev::Request::builder();
    b.on_chip(&p.chip)
        .with_consumer(format!("branchrec-{}", p.role))
        .with_line(p.offset);
    if p.active_low {
        b.as_active_low();
    }
    if p.role.is_input() {
        b.as_input();
    } else {
        b.as_output(Value::Inactive);
    }
    match p.bias {
        Bias::AsIs => {}
        Bias::PullUp => {
            b.with_bias(gpiocdev::line::Bias::PullUp);
        }
        Bias::PullDown => {
            b.with_bias(gpiocdev::line::Bias::PullDown);
        }
        Bias::Disabled => {
            b.with_bias(gpiocdev::line::Bias::Disabled);
        }
    }
    let req = b.request().map_err(|source| CdevError {
        what: format!(
            "requesting {} line {} (\"{}\") for {}",
            p.chip.display(),
            p.offset,
            p.line_name,
            p.role
        ),
        source,
    })?;
    Ok(CdevPin {
        req,
        offset: p.offset,
    })
}
