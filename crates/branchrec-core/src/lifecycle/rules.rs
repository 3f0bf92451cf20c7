//! Recording rules: ordered `[[rules]]` from the config, first match wins.
//!
//! A rule matches on what the SIPREC INVITE gives (participant AoRs/numbers from the
//! RFC 7865 metadata, the call direction derived from `[policy] internal`, the SRC's
//! transport address and SIP `From` URI) and on the local time of day. It says whether to
//! record, the retention class, a minimum duration and tags. All of it is pure: the shell
//! passes the local time in.

use chrono::{NaiveTime, Weekday};
use serde::Deserialize;

use super::pattern::{aor_matches, check, glob};

/// Direction of a call as seen from this site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallDirection {
    /// The first participant (the caller) is outside, another one is inside.
    Inbound,
    /// The caller is inside, another participant is outside.
    Outbound,
    /// Every participant is inside.
    Internal,
    /// No participant is inside, or the metadata does not say who takes part.
    Unknown,
}

impl CallDirection {
    /// Name as in the config and the catalogue.
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::Inbound => "inbound",
            CallDirection::Outbound => "outbound",
            CallDirection::Internal => "internal",
            CallDirection::Unknown => "unknown",
        }
    }
}

/// `[policy]`: what applies when no rule matches, and who is "inside".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Patterns of this site's own numbers/AoRs (for `direction`).
    pub internal: Vec<String>,
    /// Record calls that no rule matches.
    pub default_record: bool,
    /// Retention class of calls that no rule (or a rule without `retention`) matches.
    pub default_retention: String,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            internal: Vec::new(),
            default_record: true,
            default_retention: "default".into(),
        }
    }
}

/// One `[[rules]]` entry. Every condition given must hold; a list matches if any element
/// does. A rule with no condition matches every call.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name, shown in the catalogue (`recordings show`) and the audit log.
    pub name: String,
    /// Any participant's AoR or number matches one of these patterns.
    #[serde(default)]
    pub participant: Vec<String>,
    /// The call direction is one of these.
    #[serde(default)]
    pub direction: Vec<CallDirection>,
    /// The SRC's address (`ip` or `ip:port`) matches one of these patterns.
    #[serde(default)]
    pub src: Vec<String>,
    /// The SIP `From` URI of the recording INVITE matches one of these patterns.
    #[serde(default)]
    pub src_from: Vec<String>,
    /// Local time of day `HH:MM-HH:MM` (end exclusive; may wrap past midnight).
    #[serde(default)]
    pub time: Option<String>,
    /// Days of the week (`mon` … `sun`).
    #[serde(default)]
    pub days: Vec<String>,
    /// Record (default) or not: `false` answers the SRC with every stream declined and
    /// keeps no media at all.
    #[serde(default = "yes")]
    pub record: bool,
    /// Retention class (a key of `[retention.classes]`); default `[policy] default_retention`.
    #[serde(default)]
    pub retention: Option<String>,
    /// Recordings shorter than this are discarded (crypto-shredded) after the call.
    #[serde(default)]
    pub min_duration_s: u32,
    /// Tags stored with the recording.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Storage format of the audio (`wav` or `opus`); default `[storage] format`.
    #[serde(default)]
    pub format: Option<crate::recording::StorageFormat>,
}

fn yes() -> bool {
    true
}

/// What the rule engine needs to know about a call.
#[derive(Debug, Clone, Default)]
pub struct CallFacts {
    /// Participant AoRs, in metadata order (the first one is taken as the caller).
    pub participants: Vec<String>,
    /// SRC transport address, `ip:port`.
    pub src_addr: String,
    /// SIP `From` URI of the recording INVITE.
    pub src_from: Option<String>,
    /// Local time of day when the INVITE arrived.
    pub local_time: NaiveTime,
    /// Local day of the week.
    pub weekday: Option<Weekday>,
}

/// The outcome for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDecision {
    /// Name of the matching rule, `None` for the defaults.
    pub rule: Option<String>,
    /// Record or not.
    pub record: bool,
    /// Retention class.
    pub retention_class: String,
    /// Minimum duration in ms (0 = keep every recording).
    pub min_duration_ms: u64,
    /// Tags.
    pub tags: Vec<String>,
    /// Direction that was derived.
    pub direction: CallDirection,
    /// Storage format the rule chose (`None`: the `[storage] format` default).
    pub format: Option<crate::recording::StorageFormat>,
}

/// Direction of a call from its participants and the site's `internal` patterns.
pub fn direction(participants: &[String], internal: &[String]) -> CallDirection {
    let inside = |a: &String| internal.iter().any(|p| aor_matches(p, a));
    let Some(first) = participants.first() else {
        return CallDirection::Unknown;
    };
    let rest_inside = participants.iter().skip(1).any(inside);
    let rest_outside = participants.iter().skip(1).any(|a| !inside(a));
    match (inside(first), rest_inside, rest_outside) {
        (true, _, true) => CallDirection::Outbound,
        (true, _, false) => CallDirection::Internal,
        (false, true, _) => CallDirection::Inbound,
        (false, false, _) => CallDirection::Unknown,
    }
}

fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").ok()
}

/// Parse `HH:MM-HH:MM`.
pub fn parse_time_range(s: &str) -> Result<(NaiveTime, NaiveTime), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("time `{s}`: expected HH:MM-HH:MM"))?;
    let a = parse_hhmm(a).ok_or_else(|| format!("time `{s}`: `{a}` is not HH:MM"))?;
    let b = parse_hhmm(b).ok_or_else(|| format!("time `{s}`: `{b}` is not HH:MM"))?;
    if a == b {
        return Err(format!("time `{s}`: empty range"));
    }
    Ok((a, b))
}

fn parse_day(s: &str) -> Result<Weekday, String> {
    s.trim()
        .parse::<Weekday>()
        .map_err(|_| format!("day `{s}`: expected mon, tue, wed, thu, fri, sat or sun"))
}

fn in_range(t: NaiveTime, (a, b): (NaiveTime, NaiveTime)) -> bool {
    if a < b {
        a <= t && t < b
    } else {
        t >= a || t < b
    }
}

/// Check the rules against the known retention classes; the message names the rule.
pub fn validate(
    rules: &[RuleConfig],
    policy: &PolicyConfig,
    class_exists: impl Fn(&str) -> bool,
) -> Result<(), (String, String)> {
    for p in &policy.internal {
        check(p).map_err(|m| ("policy.internal".to_string(), m))?;
    }
    if !class_exists(&policy.default_retention) {
        return Err((
            "policy.default_retention".into(),
            format!("unknown retention class `{}`", policy.default_retention),
        ));
    }
    for (i, r) in rules.iter().enumerate() {
        let key = format!("rules[{i}] ({})", r.name);
        let err = |m: String| (key.clone(), m);
        if r.name.trim().is_empty() {
            return Err(err("needs a name".into()));
        }
        if rules[..i].iter().any(|o| o.name == r.name) {
            return Err(err("name used twice".into()));
        }
        for p in r.participant.iter().chain(&r.src).chain(&r.src_from) {
            check(p).map_err(err)?;
        }
        let needs_internal = r.direction.iter().any(|d| *d != CallDirection::Unknown);
        if needs_internal && policy.internal.is_empty() {
            return Err(err(
                "`direction` needs `[policy] internal` (the site's own numbers)".into(),
            ));
        }
        if let Some(t) = &r.time {
            parse_time_range(t).map_err(err)?;
        }
        for d in &r.days {
            parse_day(d).map_err(err)?;
        }
        if let Some(c) = &r.retention {
            if !class_exists(c) {
                return Err(err(format!("unknown retention class `{c}`")));
            }
        }
        for t in &r.tags {
            if t.is_empty()
                || t.len() > 64
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
            {
                return Err(err(format!(
                    "tag `{t}`: 1..=64 characters of A-Z a-z 0-9 - _ . : /"
                )));
            }
        }
    }
    Ok(())
}

fn rule_matches(r: &RuleConfig, f: &CallFacts, dir: CallDirection) -> bool {
    if !r.participant.is_empty()
        && !f
            .participants
            .iter()
            .any(|a| r.participant.iter().any(|p| aor_matches(p, a)))
    {
        return false;
    }
    if !r.direction.is_empty() && !r.direction.contains(&dir) {
        return false;
    }
    if !r.src.is_empty() {
        let ip = f
            .src_addr
            .parse::<std::net::SocketAddr>()
            .map(|s| s.ip().to_string())
            .unwrap_or_else(|_| f.src_addr.clone());
        if !r.src.iter().any(|p| glob(p, &f.src_addr) || glob(p, &ip)) {
            return false;
        }
    }
    if !r.src_from.is_empty() {
        let Some(from) = &f.src_from else {
            return false;
        };
        if !r.src_from.iter().any(|p| aor_matches(p, from)) {
            return false;
        }
    }
    if let Some(t) = &r.time {
        match parse_time_range(t) {
            Ok(range) if in_range(f.local_time, range) => {}
            _ => return false,
        }
    }
    if !r.days.is_empty() {
        let Some(wd) = f.weekday else { return false };
        if !r.days.iter().any(|d| parse_day(d).ok() == Some(wd)) {
            return false;
        }
    }
    true
}

/// Evaluate the rules in order; the first that matches decides.
pub fn evaluate(rules: &[RuleConfig], policy: &PolicyConfig, f: &CallFacts) -> RuleDecision {
    let dir = direction(&f.participants, &policy.internal);
    for r in rules {
        if rule_matches(r, f, dir) {
            return RuleDecision {
                rule: Some(r.name.clone()),
                record: r.record,
                retention_class: r
                    .retention
                    .clone()
                    .unwrap_or_else(|| policy.default_retention.clone()),
                min_duration_ms: u64::from(r.min_duration_s) * 1000,
                tags: r.tags.clone(),
                direction: dir,
                format: r.format,
            };
        }
    }
    RuleDecision {
        rule: None,
        record: policy.default_record,
        retention_class: policy.default_retention.clone(),
        min_duration_ms: 0,
        tags: Vec::new(),
        direction: dir,
        format: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> RuleConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn facts(ps: &[&str], hhmm: &str) -> CallFacts {
        CallFacts {
            participants: ps.iter().map(|s| s.to_string()).collect(),
            src_addr: "192.0.2.10:5060".into(),
            src_from: Some("sip:acmeSrc@192.0.2.10".into()),
            local_time: parse_hhmm(hhmm).unwrap(),
            weekday: Some(Weekday::Wed),
        }
    }

    #[test]
    fn first_match_wins_and_defaults_apply() {
        let policy = PolicyConfig {
            internal: vec!["1???".into()],
            ..PolicyConfig::default()
        };
        let rules = vec![
            rule("name='hr'\nparticipant=['+4930999*']\nrecord=false\n"),
            rule("name='trading'\nparticipant=['1[0-9]00'] \n".replace("1[0-9]00", "12?0").as_str()),
            rule("name='support'\ndirection=['inbound']\nretention='support'\nmin_duration_s=5\ntags=['support']\n"),
        ];
        validate(&rules, &policy, |c| c == "default" || c == "support").unwrap();
        let d = evaluate(
            &rules,
            &policy,
            &facts(&["sip:+4930999123@x", "sip:1234@pbx"], "10:00"),
        );
        assert_eq!(d.rule.as_deref(), Some("hr"));
        assert!(!d.record);
        let d = evaluate(
            &rules,
            &policy,
            &facts(&["sip:+4940111@x", "sip:1234@pbx"], "10:00"),
        );
        assert_eq!(d.rule.as_deref(), Some("support"));
        assert_eq!(d.direction, CallDirection::Inbound);
        assert_eq!(d.min_duration_ms, 5000);
        assert_eq!(d.tags, vec!["support".to_string()]);
        assert_eq!(d.retention_class, "support");
        let d = evaluate(
            &rules,
            &policy,
            &facts(&["sip:1234@pbx", "sip:+4940111@x"], "10:00"),
        );
        assert_eq!(d.rule, None);
        assert_eq!(d.direction, CallDirection::Outbound);
        assert!(d.record);
        assert_eq!(d.retention_class, "default");
        let d = evaluate(
            &rules,
            &policy,
            &facts(&["sip:1210@pbx", "sip:1234@pbx"], "10:00"),
        );
        assert_eq!(d.rule.as_deref(), Some("trading"));
    }

    #[test]
    fn time_of_day_days_src() {
        let policy = PolicyConfig::default();
        let rules = vec![
            rule("name='night'\ntime='22:00-06:00'\nrecord=false\n"),
            rule("name='weekend'\ndays=['sat','sun']\ntags=['weekend']\n"),
            rule("name='sbc2'\nsrc=['198.51.100.*']\ntags=['sbc2']\n"),
            rule("name='acme'\nsrc_from=['sip:acme*']\ntags=['acme']\n"),
        ];
        validate(&rules, &policy, |c| c == "default").unwrap();
        assert_eq!(
            evaluate(&rules, &policy, &facts(&[], "23:10"))
                .rule
                .as_deref(),
            Some("night")
        );
        assert_eq!(
            evaluate(&rules, &policy, &facts(&[], "05:59"))
                .rule
                .as_deref(),
            Some("night")
        );
        assert_eq!(
            evaluate(&rules, &policy, &facts(&[], "06:00"))
                .rule
                .as_deref(),
            Some("acme")
        );
        let mut f = facts(&[], "12:00");
        f.weekday = Some(Weekday::Sun);
        assert_eq!(
            evaluate(&rules, &policy, &f).rule.as_deref(),
            Some("weekend")
        );
        f.weekday = Some(Weekday::Mon);
        f.src_addr = "198.51.100.7:5060".into();
        assert_eq!(evaluate(&rules, &policy, &f).rule.as_deref(), Some("sbc2"));
        f.src_addr = "203.0.113.1:5060".into();
        f.src_from = Some("sip:other@x".into());
        assert_eq!(evaluate(&rules, &policy, &f).rule, None);
    }

    #[test]
    fn validation_names_the_rule() {
        let policy = PolicyConfig::default();
        let bad = vec![rule("name='x'\nretention='nope'\n")];
        let (k, m) = validate(&bad, &policy, |c| c == "default").unwrap_err();
        assert!(k.contains("(x)") && m.contains("nope"), "{k} {m}");
        let bad = vec![rule("name='d'\ndirection=['inbound']\n")];
        assert!(validate(&bad, &policy, |c| c == "default").is_err());
        let bad = vec![rule("name='t'\ntime='25:00-26:00'\n")];
        assert!(validate(&bad, &policy, |c| c == "default").is_err());
        let bad = vec![rule("name='p'\nparticipant=['1[0-9]']\n")];
        assert!(validate(&bad, &policy, |c| c == "default").is_err());
    }
}
