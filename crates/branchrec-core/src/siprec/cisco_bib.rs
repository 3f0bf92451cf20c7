//! Cisco UCM built-in-bridge (BiB) recording, sans-IO.
//!
//! UCM records a phone's call by sending the recorder two INVITEs over a SIP trunk, one per
//! voice, usually without SDP (delayed offer). Each INVITE's `From` header (URI parameters,
//! sometimes header parameters) carries the call-leg tags of Cisco's "SIP header
//! enhancement" (Cisco Unified CM "Recording Use Cases", Step 5/Step 6 examples):
//!
//! ```text
//! From: <sip:2000@ucm1;x-nearend;x-refci=ci2;x-nearenddevice=deviceB;
//!        x-farendrefci=ci1;x-farenddevice=deviceA;x-farendaddr=1000>;tag=fromtag1
//! From: <sip:2000@ucm1;x-farend;x-refci=ci2;x-nearenddevice=deviceB;
//!        x-farendrefci=ci1;x-farenddevice=deviceA;x-farendaddr=1000>;tag=fromtag2
//! ```
//!
//! Both legs of one recorded call carry the same `x-refci` (the recorded phone's call leg)
//! and `x-farendrefci`; `x-nearend` / `x-farend` says which voice the leg carries.
//! [`BibLeg::from_header`] reads them; [`Pairer`] ties the two legs of a call together by
//! [`PairKey`] (cluster, refci, far-end refci) and reports a leg whose partner did not
//! arrive within the pairing timeout as one-sided. A transfer or conference gives the
//! recorded phone's leg a new far end, and UCM restarts the recording with new INVITEs
//! carrying a new refci pair: that is a new [`PairKey`], hence a new recording (one
//! recording per recorded call leg, see docs/cisco-bib.md).

use crate::time::Mono;
use std::collections::HashMap;
use std::time::Duration;

/// Which voice a BiB leg carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The recorded phone's own voice (`x-nearend`): channel 0.
    Near,
    /// The other party's voice (`x-farend`): channel 1.
    Far,
}

impl Side {
    /// Channel of the dual-channel recording this voice goes to.
    pub fn channel(self) -> usize {
        match self {
            Side::Near => 0,
            Side::Far => 1,
        }
    }
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Near => Side::Far,
            Side::Far => Side::Near,
        }
    }
    /// `near` / `far`, for logs and the catalogue.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Near => "near",
            Side::Far => "far",
        }
    }
}

/// Longest parameter value kept (a hostile peer must not make us store megabytes).
pub const MAX_PARAM_LEN: usize = 128;

/// The Cisco recording tags of one INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BibLeg {
    /// Voice of this leg.
    pub side: Side,
    /// `x-refci`: the recorded phone's call-leg id (same on both legs).
    pub refci: String,
    /// `x-farendrefci`: the far end's call-leg id, when sent.
    pub farendrefci: Option<String>,
    /// `x-nearendaddr`, or the `From` URI user when absent (UCM puts the near-end DN there).
    pub nearendaddr: Option<String>,
    /// `x-farendaddr`.
    pub farendaddr: Option<String>,
    /// `x-nearenddevice`.
    pub nearenddevice: Option<String>,
    /// `x-farenddevice`.
    pub farenddevice: Option<String>,
    /// `x-nearendclusterid` (empty when not sent: single cluster).
    pub cluster: String,
}

/// The two legs of one recorded call share this.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PairKey {
    /// `x-nearendclusterid`.
    pub cluster: String,
    /// `x-refci`.
    pub refci: String,
    /// `x-farendrefci` (empty when not sent).
    pub farendrefci: String,
}

impl BibLeg {
    /// The Cisco tags of a `From` header value, or `None` when it is no BiB leg (no
    /// `x-refci`, or neither / both of `x-nearend` and `x-farend`, or an over-long value).
    pub fn from_header(from: &str) -> Option<BibLeg> {
        let mut near = false;
        let mut far = false;
        let mut p: HashMap<String, String> = HashMap::new();
        for tok in from.split([';', '<', '>']) {
            let tok = tok.trim();
            let (name, value) = match tok.split_once('=') {
                Some((n, v)) => (n.trim(), v.trim().trim_matches('"')),
                None => (tok, ""),
            };
            let name = name.to_ascii_lowercase();
            if !name.starts_with("x-") {
                continue;
            }
            if value.len() > MAX_PARAM_LEN {
                return None;
            }
            match name.as_str() {
                "x-nearend" => near = true,
                "x-farend" => far = true,
                _ => {
                    p.entry(name).or_insert_with(|| value.to_string());
                }
            }
        }
        let side = match (near, far) {
            (true, false) => Side::Near,
            (false, true) => Side::Far,
            _ => return None,
        };
        let refci = p.remove("x-refci").filter(|v| !v.is_empty())?;
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let nearendaddr = nonempty(p.remove("x-nearendaddr")).or_else(|| from_user(from));
        Some(BibLeg {
            side,
            refci,
            farendrefci: nonempty(p.remove("x-farendrefci")),
            nearendaddr,
            farendaddr: nonempty(p.remove("x-farendaddr")),
            nearenddevice: nonempty(p.remove("x-nearenddevice")),
            farenddevice: nonempty(p.remove("x-farenddevice")),
            cluster: p.remove("x-nearendclusterid").unwrap_or_default(),
        })
    }

    /// The key both legs of this call share.
    pub fn key(&self) -> PairKey {
        PairKey {
            cluster: self.cluster.clone(),
            refci: self.refci.clone(),
            farendrefci: self.farendrefci.clone().unwrap_or_default(),
        }
    }
}

/// User part of the `sip:` URI in a `From` value.
fn from_user(from: &str) -> Option<String> {
    let lower = from.to_ascii_lowercase();
    let at = lower.find("sip:").or_else(|| lower.find("sips:"))?;
    let rest = &from[at..];
    let rest = &rest[rest.find(':')? + 1..];
    let end = rest.find(['@', ';', '>'])?;
    let user = &rest[..end];
    (rest[end..].starts_with('@') && !user.is_empty() && user.len() <= MAX_PARAM_LEN)
        .then(|| user.to_string())
}

/// What [`Pairer::add`] decided about a new leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement<C> {
    /// First leg of its call: a new recording; the partner is awaited until the timeout.
    First,
    /// The partner of `with`, which is already recorded: join its recording.
    Joins {
        /// The call (shell key) of the partner leg.
        with: C,
    },
    /// A leg of this side is already there for this key (a UCM retry or a hostile
    /// duplicate): record it on its own, not in the pair.
    Duplicate,
}

/// A leg whose partner never came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneSided<C> {
    /// The leg that is there.
    pub call: C,
    /// Its side.
    pub side: Side,
    /// The pairing key.
    pub key: PairKey,
}

struct Entry<C> {
    legs: [Option<C>; 2],
    deadline: Option<Mono>,
}

/// Ties BiB legs into pairs (sans-IO: the shell passes time, `C` is its call key).
pub struct Pairer<C> {
    timeout: Duration,
    max_pending: usize,
    pairs: HashMap<PairKey, Entry<C>>,
}

/// Default time to wait for a call's second leg.
pub const DEFAULT_PAIR_TIMEOUT: Duration = Duration::from_secs(10);

impl<C: Clone + PartialEq> Pairer<C> {
    /// A pairer waiting `timeout` for second legs, tracking at most `max_pending` calls
    /// (older entries are evicted first when a hostile peer floods distinct keys).
    pub fn new(timeout: Duration, max_pending: usize) -> Self {
        Pairer {
            timeout,
            max_pending: max_pending.max(1),
            pairs: HashMap::new(),
        }
    }

    /// Calls tracked.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether none are tracked.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// A new leg `call` with tags `leg` arrived at `now`.
    pub fn add(&mut self, now: Mono, call: C, leg: &BibLeg) -> Placement<C> {
        let key = leg.key();
        let i = leg.side.channel();
        if let Some(e) = self.pairs.get_mut(&key) {
            if e.legs[i].is_some() {
                return Placement::Duplicate;
            }
            let with = e.legs[1 - i].clone();
            e.legs[i] = Some(call);
            e.deadline = None;
            return match with {
                Some(with) => Placement::Joins { with },
                None => Placement::First,
            };
        }
        if self.pairs.len() >= self.max_pending {
            // Evict the entry that would time out first (complete pairs have no deadline
            // and are evicted last).
            if let Some(k) = self
                .pairs
                .iter()
                .min_by_key(|(_, e)| (e.deadline.is_none(), e.deadline))
                .map(|(k, _)| k.clone())
            {
                self.pairs.remove(&k);
            }
        }
        let mut legs = [None, None];
        legs[i] = Some(call);
        self.pairs.insert(
            key,
            Entry {
                legs,
                deadline: Some(now + self.timeout),
            },
        );
        Placement::First
    }

    /// A leg ended: forget it (a pair whose both legs ended is dropped).
    pub fn remove(&mut self, call: &C) {
        self.pairs.retain(|_, e| {
            for l in e.legs.iter_mut() {
                if l.as_ref() == Some(call) {
                    *l = None;
                }
            }
            e.legs.iter().any(Option::is_some)
        });
    }

    /// Next deadline, for the shell's timer.
    pub fn poll_timeout(&self) -> Option<Mono> {
        self.pairs.values().filter_map(|e| e.deadline).min()
    }

    /// Legs whose partner did not arrive by `now`: reported once each.
    pub fn expired(&mut self, now: Mono) -> Vec<OneSided<C>> {
        let mut out = vec![];
        for (k, e) in self.pairs.iter_mut() {
            if e.deadline.is_some_and(|d| d <= now) {
                e.deadline = None;
                for (i, l) in e.legs.iter().enumerate() {
                    if let Some(c) = l {
                        out.push(OneSided {
                            call: c.clone(),
                            side: if i == 0 { Side::Near } else { Side::Far },
                            key: k.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Cisco Unified CM 15 "Recording Use Cases", basic call, Step 5 and Step 6.
    const STEP5: &str = "<sip:2000@ucm1;x-nearend;x-refci=ci2;x-nearenddevice=deviceB;x-farendrefci=ci1;x-farenddevice=deviceA;x-farendaddr=1000>;tag=fromtag1";
    const STEP6: &str = "<sip:2000@ucm1;x-farend;x-refci=ci2;x-nearenddevice=deviceB;x-farendrefci=ci1;x-farenddevice=deviceA;x-farendaddr=1000>;tag=fromtag2";

    #[test]
    fn parses_the_published_examples() {
        let a = BibLeg::from_header(STEP5).unwrap();
        assert_eq!(a.side, Side::Near);
        assert_eq!(a.refci, "ci2");
        assert_eq!(a.farendrefci.as_deref(), Some("ci1"));
        assert_eq!(a.nearendaddr.as_deref(), Some("2000"));
        assert_eq!(a.farendaddr.as_deref(), Some("1000"));
        assert_eq!(a.nearenddevice.as_deref(), Some("deviceB"));
        assert_eq!(a.farenddevice.as_deref(), Some("deviceA"));
        let b = BibLeg::from_header(STEP6).unwrap();
        assert_eq!(b.side, Side::Far);
        assert_eq!(a.key(), b.key());
        // Header parameters (outside <>) and x-nearendaddr / cluster are read too.
        let c = BibLeg::from_header(
            "\"Agent\" <sip:4001@10.0.0.5>;tag=9;x-farend;x-refci=25586978;x-nearendclusterid=StandAloneCluster;x-nearendaddr=4001;x-farendrefci=25586979;x-farendaddr=+4930123",
        )
        .unwrap();
        assert_eq!(c.side, Side::Far);
        assert_eq!(c.cluster, "StandAloneCluster");
        assert_eq!(c.nearendaddr.as_deref(), Some("4001"));
        assert_eq!(c.farendaddr.as_deref(), Some("+4930123"));
    }

    #[test]
    fn rejects_non_bib_and_hostile_headers() {
        assert!(BibLeg::from_header("<sip:src@sbc>;tag=1").is_none());
        assert!(
            BibLeg::from_header("<sip:a@b;x-nearend>;tag=1").is_none(),
            "no refci"
        );
        assert!(BibLeg::from_header("<sip:a@b;x-nearend;x-farend;x-refci=1>").is_none());
        let long = format!(
            "<sip:a@b;x-nearend;x-refci={}>",
            "9".repeat(MAX_PARAM_LEN + 1)
        );
        assert!(BibLeg::from_header(&long).is_none());
    }

    #[test]
    fn pairs_legs_times_out_one_sided_and_keeps_transfers_apart() {
        let t0 = Mono::ZERO;
        let mut p: Pairer<u32> = Pairer::new(Duration::from_secs(10), 8);
        let near = BibLeg::from_header(STEP5).unwrap();
        let far = BibLeg::from_header(STEP6).unwrap();
        assert_eq!(p.add(t0, 1, &near), Placement::First);
        assert_eq!(p.add(t0, 2, &far), Placement::Joins { with: 1 });
        assert_eq!(p.add(t0, 3, &far), Placement::Duplicate);
        assert!(
            p.expired(t0 + Duration::from_secs(60)).is_empty(),
            "complete pair"
        );
        // Transfer (use case "Step 14"): new refci pair → a new call.
        let t_near = BibLeg::from_header(
            "<sip:2000@ucm1;x-nearend;x-refci=ci3;x-farendrefci=ci4;x-farendaddr=2001>",
        )
        .unwrap();
        assert_eq!(p.add(t0, 4, &t_near), Placement::First);
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        assert!(p.expired(t0 + Duration::from_secs(9)).is_empty());
        let gone = p.expired(t0 + Duration::from_secs(10));
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].call, gone[0].side), (4, Side::Near));
        assert!(
            p.expired(t0 + Duration::from_secs(20)).is_empty(),
            "reported once"
        );
        p.remove(&1);
        p.remove(&2);
        p.remove(&4);
        assert!(p.is_empty());
    }

    #[test]
    fn pending_calls_are_bounded() {
        let mut p: Pairer<u32> = Pairer::new(Duration::from_secs(10), 4);
        for i in 0..100u32 {
            let l = BibLeg::from_header(&format!("<sip:1@u;x-nearend;x-refci={i}>")).unwrap();
            p.add(Mono::ZERO + Duration::from_millis(i as u64), i, &l);
        }
        assert_eq!(p.len(), 4);
    }
}
