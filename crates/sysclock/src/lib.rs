//! Read the kernel clock discipline state: `adjtimex(2)` with `modes = 0`, which only
//! reads (no privilege needed, nothing is changed). The one `unsafe` call lives here so
//! that the daemon crate can keep `#![forbid(unsafe_code)]`.

/// `STA_UNSYNC`: the clock is not synchronised.
pub const STA_UNSYNC: i32 = 0x0040;
/// `STA_NANO`: `offset` is in nanoseconds.
pub const STA_NANO: i32 = 0x2000;
/// Return value `TIME_ERROR`: the clock is not synchronised.
pub const TIME_ERROR: i32 = 5;

/// The fields of `struct timex` the recorder keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timex {
    /// The call's return value (clock state: `TIME_OK` 0 … `TIME_ERROR` 5).
    pub state: i32,
    /// `status` bits.
    pub status: i32,
    /// `maxerror`, µs.
    pub maxerror_us: i64,
    /// `esterror`, µs.
    pub esterror_us: i64,
    /// `offset`, µs (converted from ns under `STA_NANO`).
    pub offset_us: i64,
}

impl Timex {
    /// Unsynchronised: `STA_UNSYNC` set or `TIME_ERROR` returned.
    pub fn unsync(&self) -> bool {
        self.status & STA_UNSYNC != 0 || self.state == TIME_ERROR
    }
}

/// Read the state.
#[cfg(target_os = "linux")]
pub fn read() -> std::io::Result<Timex> {
    // SAFETY: `timex` is a plain C struct for which all-zero bytes are a valid value;
    // with `modes == 0` adjtimex only writes into the struct we own.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    t.modes = 0;
    // SAFETY: a valid, exclusively borrowed pointer for the duration of the call.
    let r = unsafe { libc::adjtimex(&mut t) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let offset = t.offset as i64;
    Ok(Timex {
        state: r,
        status: t.status,
        maxerror_us: t.maxerror as i64,
        esterror_us: t.esterror as i64,
        offset_us: if t.status & STA_NANO != 0 {
            offset / 1000
        } else {
            offset
        },
    })
}

/// Not Linux: unsupported.
#[cfg(not(target_os = "linux"))]
pub fn read() -> std::io::Result<Timex> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "adjtimex is Linux-only",
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_machine() {
        let t = super::read().expect("adjtimex");
        assert!(t.maxerror_us >= 0 && t.esterror_us >= 0, "{t:?}");
        assert!((0..=5).contains(&t.state), "{t:?}");
    }
}
