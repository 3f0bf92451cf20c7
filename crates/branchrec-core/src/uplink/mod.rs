//! The sans-IO half of the upload to the central archive: [`planner`] (what to upload
//! next), [`multipart`] (the resumable multipart-upload state machine with end-to-end
//! checksums), [`rate`] (token bucket, time windows, congestion back-off), [`sigv4`]
//! (AWS Signature V4 request signing) and [`status`] (the status document and the fleet
//! view). The HTTP client and the daemon's upload loop are `branchrec::uplink`.

pub mod multipart;
pub mod planner;
pub mod rate;
pub mod sigv4;
pub mod status;
