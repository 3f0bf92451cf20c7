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
    signer: Option<&dyn crate::vault::AuditSigner>,
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

/// Release a hold (explicitly, audited), then sign the new audit head with the software
/// key file if readable.
pub fn release_hold(
    cat: &mut Catalog,
    cfg: &Config,
    id: i64,
    operator: &str,
    reason: &str,
    now: i64,
) -> anyhow::Result<()> {
    cat.release_hold(id, operator, reason, now)?;
    super::audit::sign_head(cat, cfg, now);
    Ok(())
}
