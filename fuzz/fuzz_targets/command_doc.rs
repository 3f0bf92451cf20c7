//! Fuzz the command documents of headquarters (`branchrec::command`): the parser, the
//! canonical bytes and the sequence state machine, and the box's acknowledgements.
//!
//! Properties: never panics; a document that passes with an always-true verifier
//! re-serialises to one that parses to the same command with the same canonical bytes;
//! with an always-false verifier nothing is ever accepted; the state machine accepts
//! only the expected seq for the own box, and `advance` moves by exactly one.
#![no_main]

use branchrec::command::{Refusal, SequenceState, SignedAck, SignedCommand};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: the state's last applied seq; second: the slot.
    let (last, slot, doc) = match data {
        [a, b, rest @ ..] => (u64::from(*a), u64::from(*b), rest),
        _ => return,
    };
    let mut st = SequenceState { last_applied: last };
    assert!(matches!(
        st.check("box-1", slot, doc, |_, _| false),
        Err(Refusal::Malformed { .. } | Refusal::Signature { .. })
    ));
    if let Ok(c) = st.check("box-1", slot, doc, |_, _| true) {
        assert_eq!(c.box_id, "box-1");
        assert_eq!(c.seq, last + 1);
        assert_eq!(c.seq, slot);
        let d = SignedCommand::parse(doc).expect("accepted documents parse");
        let again = SignedCommand::parse(&d.to_bytes()).expect("own output parses");
        assert_eq!(again, d);
        assert_eq!(again.command.canonical_bytes(), c.canonical_bytes());
        assert!(st.advance(c.seq));
        assert!(matches!(
            st.check("box-1", slot, doc, |_, _| true),
            Err(Refusal::Replay { .. })
        ));
    }
    if let Ok(a) = SignedAck::parse(doc) {
        assert!(!a.verify(|_, _| false));
        let again = SignedAck::parse(&a.to_bytes()).expect("own ack parses");
        assert_eq!(again.ack.canonical_bytes(), a.ack.canonical_bytes());
    }
});
