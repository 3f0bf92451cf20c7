//! Retention classes, expiry, the deletion plan and the disk-pressure decision.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::time::UnixMs;

/// `[retention]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Class name → how long recordings of that class are kept after the call ended,
    /// e.g. `"90 days"`, `"5 years"`, `"forever"`.
    pub classes: BTreeMap<String, String>,
    /// `true`: this box is the only copy, so expired recordings are deleted whether or not
    /// the uplink archived them. `false`: a recording is never deleted (by expiry, by
    /// disk pressure or by `recordings delete`) before the central archive confirmed it.
    pub local_only: bool,
    /// Seconds between retention sweeps of the daemon.
    pub sweep_interval_s: u32,
    /// Disk usage (percent of the data filesystem) above which expired recordings are
    /// deleted at once and, when none is left to delete, new calls are refused (503).
    pub high_watermark_pct: u8,
    /// Usage the pressure sweep deletes down to; refusing stops once usage is below it.
    pub low_watermark_pct: u8,
    /// Seconds between signatures of the audit chain head (when it has moved).
    pub audit_sign_interval_s: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let mut classes = BTreeMap::new();
        classes.insert("default".to_string(), "90 days".to_string());
        RetentionConfig {
            classes,
            local_only: true,
            sweep_interval_s: 300,
            high_watermark_pct: 90,
            low_watermark_pct: 80,
            audit_sign_interval_s: 300,
        }
    }
}

/// How long a class keeps recordings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// This many milliseconds after the end of the call.
    For(u64),
    /// Never expires.
    Forever,
}

/// Parse `"90 days"`, `"5 years"`, `"36h"`, `"forever"`.
///
/// Units: s/sec/seconds, min/minutes, h/hours, d/days, w/weeks, months, y/years. A month
/// counts as 31 days and a year as 366 days, so an expiry never falls before the calendar
/// date a legal minimum ("keep five years") names; it may fall up to a few days after.
pub fn parse_keep(s: &str) -> Result<Keep, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "forever" || t == "never" {
        return Ok(Keep::Forever);
    }
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}`: missing unit (e.g. \"90 days\")"))?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a number then a unit, e.g. \"90 days\""))?;
    let day = 86_400_000u64;
    let unit_ms = match unit.trim() {
        "s" | "sec" | "second" | "seconds" => 1000,
        "min" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => day,
        "w" | "week" | "weeks" => 7 * day,
        "month" | "months" => 31 * day,
        "y" | "year" | "years" => 366 * day,
        other => return Err(format!("`{s}`: unknown unit `{other}`")),
    };
    if n == 0 {
        return Err(format!(
            "`{s}`: must be positive (use a rule with record = false to keep nothing)"
        ));
    }
    n.checked_mul(unit_ms)
        .filter(|ms| *ms < 200 * 366 * day)
        .map(Keep::For)
        .ok_or_else(|| format!("`{s}`: too long (use \"forever\")"))
}

impl RetentionConfig {
    /// Validate; errors are (key, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (k, v) in &self.classes {
            if k.is_empty()
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err((
                    format!("retention.classes.{k}"),
                    "class names are A-Z a-z 0-9 _ -".into(),
                ));
            }
            parse_keep(v).map_err(|m| (format!("retention.classes.{k}"), m))?;
        }
        if !(1..=100).contains(&self.high_watermark_pct)
            || self.low_watermark_pct >= self.high_watermark_pct
        {
            return Err((
                "retention.low_watermark_pct".into(),
                "need 0 <= low_watermark_pct < high_watermark_pct <= 100".into(),
            ));
        }
        if self.sweep_interval_s == 0 || self.audit_sign_interval_s == 0 {
            return Err((
                "retention.sweep_interval_s".into(),
                "intervals must be at least 1 s".into(),
            ));
        }
        Ok(())
    }

    /// Retention of a class, `None` if the class is unknown.
    pub fn keep(&self, class: &str) -> Option<Keep> {
        self.classes.get(class).and_then(|v| parse_keep(v).ok())
    }

    /// Retention in ms as stored in the catalogue (`None` = forever). An unknown class
    /// (config changed since) keeps forever: never delete on a guess.
    pub fn retention_ms(&self, class: &str) -> Option<u64> {
        match self.keep(class) {
            Some(Keep::For(ms)) => Some(ms),
            _ => None,
        }
    }
}

/// What the planner sees of one recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Recording id.
    pub id: String,
    /// Expiry; `None` = never (or call still running).
    pub expires_at: Option<UnixMs>,
    /// Whether the central archive has confirmed it.
    pub archived: bool,
    /// Whether an active legal hold covers it.
    pub held: bool,
    /// Whether it is still being recorded.
    pub recording: bool,
    /// File size (for pressure planning).
    pub bytes: u64,
}

/// Why a recording is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepReason {
    /// Under legal hold.
    Held,
    /// Not yet archived centrally and `local_only = false`.
    Unarchived,
    /// Not expired yet.
    NotExpired,
    /// Still recording.
    InProgress,
}

impl KeepReason {
    /// Text for logs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            KeepReason::Held => "held",
            KeepReason::Unarchived => "not archived (retention.local_only = false)",
            KeepReason::NotExpired => "not expired",
            KeepReason::InProgress => "recording",
        }
    }
}

/// Whether a recording may be deleted by expiry now; `Err` says why not.
pub fn expiry_verdict(c: &Candidate, now: UnixMs, local_only: bool) -> Result<(), KeepReason> {
    if c.recording {
        return Err(KeepReason::InProgress);
    }
    if c.held {
        return Err(KeepReason::Held);
    }
    match c.expires_at {
        Some(t) if t <= now => {}
        _ => return Err(KeepReason::NotExpired),
    }
    if !local_only && !c.archived {
        return Err(KeepReason::Unarchived);
    }
    Ok(())
}

/// Whether an operator may delete a recording (data-subject request) regardless of
/// expiry; `Err` says why not.
pub fn manual_delete_verdict(c: &Candidate, local_only: bool) -> Result<(), KeepReason> {
    if c.recording {
        return Err(KeepReason::InProgress);
    }
    if c.held {
        return Err(KeepReason::Held);
    }
    if !local_only && !c.archived {
        return Err(KeepReason::Unarchived);
    }
    Ok(())
}

/// Result of planning a sweep.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Recordings to delete, earliest expiry first.
    pub delete: Vec<String>,
    /// Expired recordings kept, with the reason (held / unarchived).
    pub blocked: Vec<(String, KeepReason)>,
}

/// Plan an expiry sweep: every expired, unprotected recording is deleted, earliest expiry
/// first; expired but protected ones are reported.
pub fn plan_expiry(cands: &[Candidate], now: UnixMs, local_only: bool) -> Plan {
    let mut c: Vec<&Candidate> = cands.iter().collect();
    c.sort_by_key(|c| (c.expires_at.unwrap_or(UnixMs(i64::MAX)), c.id.clone()));
    let mut plan = Plan::default();
    for c in c {
        match expiry_verdict(c, now, local_only) {
            Ok(()) => plan.delete.push(c.id.clone()),
            Err(r @ (KeepReason::Held | KeepReason::Unarchived)) => {
                if c.expires_at.is_some_and(|t| t <= now) {
                    plan.blocked.push((c.id.clone(), r));
                }
            }
            Err(_) => {}
        }
    }
    plan
}

/// Usage of the data filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Total bytes usable by us.
    pub total: u64,
    /// Bytes available to us.
    pub avail: u64,
}

impl DiskUsage {
    /// Used percentage, 0..=100.
    pub fn used_pct(&self) -> f64 {
        if self.total == 0 {
            return 100.0;
        }
        100.0 * (self.total.saturating_sub(self.avail)) as f64 / self.total as f64
    }
}

/// Admission state kept by the daemon between decisions (hysteresis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pressure {
    /// Below the high watermark (or back below the low one).
    #[default]
    Normal,
    /// Above the high watermark and nothing deletable: new calls are refused.
    Refusing,
}

/// What to do about disk pressure now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PressureDecision {
    /// Expired, unprotected recordings to delete now, in order.
    pub delete: Vec<String>,
    /// New state.
    pub state: Pressure,
    /// Raise (or keep) the alarm: over the high watermark with only protected recordings.
    pub alarm: bool,
}

/// Decide about pressure: above `high`, delete expired unprotected recordings (earliest
/// expiry first) until the projected usage is below `low`; if that is not enough, refuse
/// new calls until usage falls below `low` again. Nothing protected is ever chosen.
pub fn plan_pressure(
    usage: DiskUsage,
    high_pct: u8,
    low_pct: u8,
    prev: Pressure,
    cands: &[Candidate],
    now: UnixMs,
    local_only: bool,
) -> PressureDecision {
    let used = usage.used_pct();
    let high = f64::from(high_pct);
    let low = f64::from(low_pct);
    if used < high && (prev == Pressure::Normal || used < low) {
        return PressureDecision {
            delete: Vec::new(),
            state: Pressure::Normal,
            alarm: false,
        };
    }
    if used < high {
        // Between the watermarks after refusing: keep refusing until below `low`
        // (hysteresis), but delete nothing more — there is nothing deletable.
        let plan = plan_expiry(cands, now, local_only);
        if plan.delete.is_empty() {
            return PressureDecision {
                delete: Vec::new(),
                state: Pressure::Refusing,
                alarm: true,
            };
        }
    }
    let plan = plan_expiry(cands, now, local_only);
    let sizes: std::collections::HashMap<&str, u64> =
        cands.iter().map(|c| (c.id.as_str(), c.bytes)).collect();
    let target_used = (usage.total as f64 * low / 100.0) as u64;
    let mut used_bytes = usage.total.saturating_sub(usage.avail);
    let mut delete = Vec::new();
    for id in plan.delete {
        if used_bytes <= target_used {
            break;
        }
        used_bytes = used_bytes.saturating_sub(sizes.get(id.as_str()).copied().unwrap_or(0));
        delete.push(id);
    }
    // Not enough to get below `low`: refuse new calls until it is (hysteresis).
    let state = if used_bytes <= target_used {
        Pressure::Normal
    } else {
        Pressure::Refusing
    };
    PressureDecision {
        alarm: state == Pressure::Refusing,
        delete,
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, exp: Option<i64>, archived: bool, held: bool, bytes: u64) -> Candidate {
        Candidate {
            id: id.into(),
            expires_at: exp.map(UnixMs),
            archived,
            held,
            recording: false,
            bytes,
        }
    }

    #[test]
    fn keep_parsing() {
        assert_eq!(parse_keep("90 days"), Ok(Keep::For(90 * 86_400_000)));
        assert_eq!(parse_keep("5 years"), Ok(Keep::For(5 * 366 * 86_400_000)));
        assert_eq!(parse_keep("30s"), Ok(Keep::For(30_000)));
        assert_eq!(parse_keep("forever"), Ok(Keep::Forever));
        assert!(parse_keep("0 days").is_err());
        assert!(parse_keep("90").is_err());
        assert!(parse_keep("3 fortnights").is_err());
        assert!(parse_keep("999999999 years").is_err());
    }

    #[test]
    fn expiry_plan_respects_holds_and_archive() {
        let cands = vec![
            c("b", Some(200), true, false, 1),
            c("a", Some(100), true, false, 1),
            c("held", Some(50), true, true, 1),
            c("unarch", Some(60), false, false, 1),
            c("future", Some(10_000), true, false, 1),
            c("forever", None, true, false, 1),
            Candidate {
                recording: true,
                ..c("rec", Some(1), true, false, 1)
            },
        ];
        let p = plan_expiry(&cands, UnixMs(1000), false);
        assert_eq!(p.delete, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(
            p.blocked,
            vec![
                ("held".to_string(), KeepReason::Held),
                ("unarch".to_string(), KeepReason::Unarchived)
            ]
        );
        let p = plan_expiry(&cands, UnixMs(1000), true);
        assert_eq!(
            p.delete,
            vec!["unarch".to_string(), "a".to_string(), "b".to_string()]
        );
        assert_eq!(
            manual_delete_verdict(&cands[2], true),
            Err(KeepReason::Held)
        );
        assert_eq!(manual_delete_verdict(&cands[4], true), Ok(()));
        assert_eq!(
            manual_delete_verdict(&cands[3], false),
            Err(KeepReason::Unarchived)
        );
    }

    #[test]
    fn pressure_deletes_expired_first_then_refuses() {
        let usage = DiskUsage {
            total: 1000,
            avail: 50,
        }; // 95 %
        let cands = vec![
            c("old", Some(10), true, false, 100),
            c("older", Some(5), true, false, 100),
            c("held", Some(1), true, true, 500),
            c("new", Some(10_000), true, false, 100),
        ];
        let d = plan_pressure(usage, 90, 80, Pressure::Normal, &cands, UnixMs(100), true);
        // 950 used → delete older (850), old (750 ≤ 800) → enough.
        assert_eq!(d.delete, vec!["older".to_string(), "old".to_string()]);
        assert_eq!(d.state, Pressure::Normal);
        assert!(!d.alarm);
        // Only protected left: refuse and alarm, delete nothing.
        let prot = vec![
            c("held", Some(1), true, true, 500),
            c("new", Some(10_000), true, false, 100),
        ];
        let d = plan_pressure(usage, 90, 80, Pressure::Normal, &prot, UnixMs(100), true);
        assert!(d.delete.is_empty());
        assert_eq!(d.state, Pressure::Refusing);
        assert!(d.alarm);
        // Hysteresis: at 85 % still refusing; at 79 % back to normal.
        let mid = DiskUsage {
            total: 1000,
            avail: 150,
        };
        assert_eq!(
            plan_pressure(mid, 90, 80, Pressure::Refusing, &prot, UnixMs(100), true).state,
            Pressure::Refusing
        );
        assert_eq!(
            plan_pressure(mid, 90, 80, Pressure::Normal, &prot, UnixMs(100), true).state,
            Pressure::Normal
        );
        let low = DiskUsage {
            total: 1000,
            avail: 210,
        };
        assert_eq!(
            plan_pressure(low, 90, 80, Pressure::Refusing, &prot, UnixMs(100), true).state,
            Pressure::Normal
        );
    }
}
