//! The box's front panel as state machines: [`pins`] (pin maps and line lookup),
//! [`leds`] (what the LEDs show, from daemon snapshots and time), [`button`] (debounce
//! and long-press detection) and [`sim`] (in-memory embedded-hal pins for tests and
//! development). The GPIO character device and the daemon's driver are
//! `branchrec::board`.

pub mod button;
pub mod leds;
pub mod pins;
pub mod sim;
