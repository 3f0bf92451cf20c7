//! Legal holds: the one code path of `branchrec hold add|release` and the box's hold
//! button.

use crate::catalog::Catalog;
use crate::config::Config;
use crate::lifecycle::holds::HoldTarget;

/// A hold just placed.
#[derive(Debug, Clone, Copy)]
pub struct PlacedHold {
    /// Hold id.
    pub id: i64,
    /// Recordings it covers now.
    pub recordings: u64,
}

/// Place a legal hold: the one code path of `branchrec hold add` and the box's hold
/// button. Inserts the hold and its `hold.add` audit entry in one durable transaction
/// (`synchronous=FULL`), then signs the new audit head with `signer` (the daemon's
/// custody key) or, without one, with the software key file if readable.
pub fn place_hold(
    cat: &mut Catalog,
    cfg: &Config,
    target: &HoldTarget,
    reason: &str,
    operator: &str,
    now: i64,
    signer: Option<&crate::vault::HeadSigner>,
) -> anyhow::Result<PlacedHold> {
    let id = cat.add_hold(target, reason, operator, now)?;
    super::audit::sign_head_with(cat, cfg, now, signer);
    let recordings = cat
        .holds(false, now)?
        .into_iter()
        .find(|h| h.id == id)
        .map_or(0, |h| h.recordings);
    Ok(PlacedHold { id, recordings })
}

/// Release a hold (explicitly, audited), then sign the new audit head with the custody
/// key if this user can load it. Under the two-person rule (`[audit]
/// two_person_hold_release`, on by default) the first operator's release is only a
/// request; a second, different operator's release within the window carries it out.
pub fn release_hold(
    cat: &mut Catalog,
    cfg: &Config,
    id: i64,
    operator: &str,
    reason: &str,
    now: i64,
) -> anyhow::Result<super::audit::TwoPerson> {
    use super::audit::TwoPerson;
    if !cat.holds(false, now)?.iter().any(|h| h.id == id) {
        anyhow::bail!("no active hold {id}");
    }
    let target = format!("hold:{id}");
    let tp = super::audit::two_person(
        cat,
        cfg,
        cfg.audit.two_person_hold_release,
        "hold.release",
        &target,
        operator,
        reason,
        now,
    )?;
    if matches!(tp, TwoPerson::Requested { .. }) {
        return Ok(tp);
    }
    let reason = match &tp {
        TwoPerson::Confirmed {
            requested_by,
            request_seq,
        } => format!("{reason} (requested by {requested_by}, audit seq {request_seq})"),
        _ => reason.to_string(),
    };
    cat.release_hold(id, operator, &reason, now)?;
    super::audit::sign_head(cat, cfg, now);
    Ok(tp)
}
