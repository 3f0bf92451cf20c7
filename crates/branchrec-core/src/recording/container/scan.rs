//! Crash and tamper scan: the integrity state of a whole container.

use std::io::Read;

use super::header::Header;
use super::reader::ContainerReader;
use super::ContainerError;
use crate::keys::KeyWrap;

pub use super::reader::ScanState;

/// Result of [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// The container's header.
    pub header: Header,
    /// Integrity state.
    pub state: ScanState,
    /// Frames in the verified prefix.
    pub frames: u64,
    /// Chunks that verified.
    pub valid_chunks: u32,
}

/// Verify a whole container. Errors only if the header cannot be parsed, the key cannot
/// be unwrapped or reading fails; chunk problems are reported in the [`ScanReport`].
pub fn scan<R: Read>(r: R, vault: &dyn KeyWrap) -> Result<ScanReport, ContainerError> {
    let mut rd = ContainerReader::open(r, vault)?;
    let state = loop {
        match rd.next_chunk() {
            Ok(Some(c)) if c.last => {
                // next_chunk already confirmed there is no trailing data.
                break ScanState::Complete;
            }
            Ok(Some(_)) => {}
            Ok(None) => break ScanState::Complete,
            Err(ContainerError::MissingFinalChunk {
                valid_chunks,
                frames,
            }) => {
                break ScanState::Interrupted {
                    valid_chunks,
                    frames,
                    torn_tail: false,
                }
            }
            Err(ContainerError::ChunkTruncated { .. }) => {
                break ScanState::Interrupted {
                    valid_chunks: rd.valid_chunks(),
                    frames: rd.frames(),
                    torn_tail: true,
                }
            }
            Err(ContainerError::Io(e)) => return Err(ContainerError::Io(e)),
            Err(e) => {
                break ScanState::Damaged {
                    at_chunk: rd.valid_chunks(),
                    reason: e.to_string(),
                }
            }
        }
    };
    Ok(ScanReport {
        frames: rd.frames(),
        valid_chunks: rd.valid_chunks(),
        header: rd.header().clone(),
        state,
    })
}
