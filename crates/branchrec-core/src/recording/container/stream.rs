//! The decode stream: verified chunks to interleaved PCM (Opus decoded), and the
//! whole-file readers built on it.

use std::io::Read;

use super::header::Header;
use super::reader::ContainerReader;
use super::scan::ScanState;
use super::ContainerError;
use crate::keys::KeyWrap;
use crate::recording::opus::OpusStreamDecoder;

/// Streams the decoded audio (interleaved s16 at the recording rate) of a container:
/// PCM chunks as stored, Opus chunks decoded with the encoder delay removed and the end
/// trimmed, so the audio is exactly as long as the frames the chunks account for.
/// Memory use is one chunk.
pub struct PcmStream<R: Read> {
    rd: ContainerReader<R>,
    dec: Option<OpusStreamDecoder>,
    allow_interrupted: bool,
    state: Option<ScanState>,
}

impl<R: Read> PcmStream<R> {
    /// Open a container. With `allow_interrupted` a missing final chunk or a torn tail
    /// ends the stream (the verified prefix, see [`read_valid_prefix`]) instead of
    /// failing.
    pub fn open(
        r: R,
        vault: &dyn KeyWrap,
        allow_interrupted: bool,
    ) -> Result<Self, ContainerError> {
        let rd = ContainerReader::open(r, vault)?;
        let dec = match &rd.header().opus {
            Some(o) => Some(
                OpusStreamDecoder::new(
                    rd.header().sample_rate,
                    rd.header().channels,
                    u32::from(o.pre_skip),
                    0,
                )
                .map_err(|e| ContainerError::HeaderMalformed(e.to_string()))?,
            ),
            None => None,
        };
        Ok(PcmStream {
            rd,
            dec,
            allow_interrupted,
            state: None,
        })
    }

    /// The container header.
    pub fn header(&self) -> &Header {
        self.rd.header()
    }

    /// The underlying reader (frames, chunk count, audio hash so far).
    pub fn reader(&self) -> &ContainerReader<R> {
        &self.rd
    }

    /// The underlying reader, to read chunks directly (Opus packets without decoding).
    /// Mixing this with [`next_into`](Self::next_into) skips audio.
    pub fn reader_mut(&mut self) -> &mut ContainerReader<R> {
        &mut self.rd
    }

    /// How the stream ended (`None` until it has).
    pub fn state(&self) -> Option<&ScanState> {
        self.state.as_ref()
    }

    /// Append the next piece of audio to `out`; `Ok(false)` once the stream has ended
    /// (then [`state`](Self::state) says how).
    pub fn next_into(&mut self, out: &mut Vec<i16>) -> Result<bool, ContainerError> {
        if self.state.is_some() {
            return Ok(false);
        }
        let ended = match self.rd.next_chunk() {
            Ok(Some(c)) => {
                match &mut self.dec {
                    None => out.extend_from_slice(&c.samples),
                    Some(d) => {
                        d.set_limit(self.rd.frames());
                        for p in &c.packets {
                            d.decode(p, out)
                                .map_err(|e| ContainerError::ChunkMalformed {
                                    chunk: c.index,
                                    reason: format!("Opus packet does not decode: {e}"),
                                })?;
                        }
                        if c.last {
                            d.finish(out);
                        }
                    }
                }
                if !c.last {
                    return Ok(true);
                }
                ScanState::Complete
            }
            Ok(None) => ScanState::Complete,
            Err(e) => self.rd.end_of_prefix(e, self.allow_interrupted)?,
        };
        if let Some(d) = &mut self.dec {
            // Interrupted: the last `pre_skip` frames never left the encoder.
            d.finish(out);
        }
        self.state = Some(ended);
        Ok(true)
    }
}

/// Read and verify a complete recording. Refuses (with the error naming the chunk)
/// anything that is not a complete, intact container rather than return wrong audio.
/// Opus recordings are decoded.
pub fn read_all_audio<R: Read>(
    r: R,
    vault: &dyn KeyWrap,
) -> Result<(Header, Vec<i16>), ContainerError> {
    let mut st = PcmStream::open(r, vault, false)?;
    let mut samples = Vec::new();
    while st.next_into(&mut samples)? {}
    Ok((st.header().clone(), samples))
}

/// Read the verified prefix of a possibly interrupted recording (recovery after a
/// crash): the audio of every chunk that verifies, and the scan state. Damaged
/// containers are still refused.
pub fn read_valid_prefix<R: Read>(
    r: R,
    vault: &dyn KeyWrap,
) -> Result<(Header, Vec<i16>, ScanState), ContainerError> {
    let mut st = PcmStream::open(r, vault, true)?;
    let mut samples = Vec::new();
    while st.next_into(&mut samples)? {}
    let state = st.state().cloned().unwrap_or(ScanState::Complete);
    Ok((st.header().clone(), samples, state))
}
