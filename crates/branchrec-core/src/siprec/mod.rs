//! SIPREC (RFC 7866) request bodies and RFC 7865 recording metadata.
//!
//! * [`split_body`] / [`classify`]: take a request's Content-Type and body apart and decide
//!   whether it is a recording-session request.
//! * [`metadata`]: parse the `rs-metadata` XML (RFC 7865 and the older draft / BroadWorks
//!   dialects), merge partial updates, and map offered m-lines to participants
//!   ([`channel_map`]).
//!
//! All pure functions over bytes; no I/O.

pub mod body;
pub mod cisco_bib;
pub mod metadata;
pub mod srs;

pub use body::{classify, split_body, BodyError, Classification, MetadataPart, SiprecBody};
pub use metadata::{
    channel_map, ChannelAssignment, DataMode, MappingSource, MetadataError, Namespace,
    RecordingMetadata,
};
