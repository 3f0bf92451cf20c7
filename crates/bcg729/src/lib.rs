//! The smallest safe wrapper around bcg729's decoder (`bcg729/decoder.h`, 1.x API):
//! one [`Decoder`] per stream; each call decodes one 10 ms frame (80 samples at 8 kHz).
//!
//! bcg729 is GPL-3.0-or-later; this crate is only built with branchrec's `g729`
//! feature.

use std::ptr::NonNull;

#[repr(C)]
struct Ctx {
    _private: [u8; 0],
}

extern "C" {
    fn initBcg729DecoderChannel() -> *mut Ctx;
    fn closeBcg729DecoderChannel(ctx: *mut Ctx);
    fn bcg729Decoder(
        ctx: *mut Ctx,
        bit_stream: *const u8,
        bit_stream_length: u8,
        frame_erasure_flag: u8,
        sid_frame_flag: u8,
        rfc3389_payload_flag: u8,
        signal: *mut i16,
    );
}

/// Samples per G.729 frame (10 ms at 8 kHz).
pub const FRAME_SAMPLES: usize = 80;
/// Bytes of a G.729 speech frame.
pub const SPEECH_FRAME_BYTES: usize = 10;
/// Bytes of a G.729 Annex B SID (comfort noise) frame.
pub const SID_FRAME_BYTES: usize = 2;

/// What to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A 10-byte speech frame.
    Speech(&'a [u8; SPEECH_FRAME_BYTES]),
    /// A 2-byte Annex B SID frame.
    Sid(&'a [u8; SID_FRAME_BYTES]),
    /// A lost or untransmitted frame: concealment after speech, comfort noise after SID
    /// (G.729 Annex B §B.27).
    Erased,
}

/// A bcg729 decoder channel.
#[derive(Debug)]
pub struct Decoder {
    ctx: NonNull<Ctx>,
}

// SAFETY: the context is owned exclusively by this value and bcg729 keeps no global
// state, so it may move between threads (it is not shared: no Sync).
unsafe impl Send for Decoder {}

impl Decoder {
    /// A new decoder channel; `None` if bcg729 could not allocate one.
    pub fn new() -> Option<Decoder> {
        // SAFETY: plain constructor without arguments; a null return is handled.
        let p = unsafe { initBcg729DecoderChannel() };
        NonNull::new(p).map(|ctx| Decoder { ctx })
    }

    /// Decode one frame into 80 samples.
    pub fn decode(&mut self, frame: Frame<'_>) -> [i16; FRAME_SAMPLES] {
        let mut out = [0i16; FRAME_SAMPLES];
        let (ptr, len, erased, sid) = match frame {
            Frame::Speech(b) => (b.as_ptr(), SPEECH_FRAME_BYTES as u8, 0, 0),
            Frame::Sid(b) => (b.as_ptr(), SID_FRAME_BYTES as u8, 0, 1),
            Frame::Erased => (std::ptr::null(), 0, 1, 0),
        };
        // SAFETY: ctx is a live channel from initBcg729DecoderChannel; `ptr` is null
        // (erasure, which bcg729 accepts) or points at `len` readable bytes (fixed-size
        // arrays); `out` has room for the 80 samples bcg729 always writes.
        unsafe {
            bcg729Decoder(
                self.ctx.as_ptr(),
                ptr,
                len,
                erased,
                sid,
                0,
                out.as_mut_ptr(),
            );
        }
        out
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: ctx came from initBcg729DecoderChannel and is closed exactly once.
        unsafe { closeBcg729DecoderChannel(self.ctx.as_ptr()) }
    }
}
