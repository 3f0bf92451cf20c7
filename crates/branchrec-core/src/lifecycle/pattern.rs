//! Number and AoR patterns: `*` (any run) and `?` (one character), nothing else.
//!
//! The same syntax is used in `[[rules]]` and in holds by participant, and it is the subset
//! of SQLite's `GLOB` that the catalogue uses to search, so a pattern matches the same
//! recordings in memory and in SQL.

/// Whether `pat` is acceptable: non-empty, at most 256 bytes, no `[`/`]` (which SQLite
/// `GLOB` would treat as a character class), no control characters.
pub fn check(pat: &str) -> Result<(), String> {
    if pat.is_empty() || pat.len() > 256 {
        return Err(format!("pattern `{pat}` must be 1..=256 bytes"));
    }
    if pat.contains(['[', ']']) || pat.chars().any(char::is_control) {
        return Err(format!(
            "pattern `{pat}`: only `*` and `?` are special; `[`, `]` and control characters are not allowed"
        ));
    }
    Ok(())
}

/// Glob match of `text` against `pat` (`*`, `?`), case-sensitive like SQLite `GLOB`.
/// Iterative with one backtrack point: linear in practice, never recursive.
pub fn glob(pat: &str, text: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || Some(c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    while p.get(pi) == Some(&'*') {
        pi += 1;
    }
    pi == p.len()
}

/// The "number" of an address of record: the user part of a `sip:`/`sips:`/`tel:` URI
/// (without parameters), with visual separators (` -.()`) removed; for a bare string, the
/// string with separators removed. `None` when nothing is left.
///
/// `sip:+49 30 1234-0@pbx;user=phone` → `+493012340`; `tel:+1-555-0100` → `+15550100`.
pub fn number_of(aor: &str) -> Option<String> {
    let s = aor.trim().trim_start_matches('<').trim_end_matches('>');
    let lower = s.to_ascii_lowercase();
    let rest = if let Some(r) = lower.strip_prefix("sips:") {
        s.get(s.len() - r.len()..)?
    } else if let Some(r) = lower.strip_prefix("sip:") {
        s.get(s.len() - r.len()..)?
    } else if let Some(r) = lower.strip_prefix("tel:") {
        let r = s.get(s.len() - r.len()..)?;
        return clean(r.split(';').next().unwrap_or_default());
    } else {
        return clean(s);
    };
    let user = match rest.split_once('@') {
        Some((u, _)) => u,
        None => return None, // sip:host without a user part has no number
    };
    clean(user.split(';').next().unwrap_or_default())
}

fn clean(s: &str) -> Option<String> {
    let out: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    (!out.is_empty()).then_some(out)
}

/// Whether a participant with this AoR matches `pat`: the pattern is tried against the
/// whole AoR and against its [`number_of`].
pub fn aor_matches(pat: &str, aor: &str) -> bool {
    glob(pat, aor) || number_of(aor).is_some_and(|n| glob(pat, &n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_basics() {
        assert!(glob("*", ""));
        assert!(glob("+4930*", "+4930111"));
        assert!(!glob("+4930*", "+4940111"));
        assert!(glob("1???", "1234"));
        assert!(!glob("1???", "12345"));
        assert!(glob("*@pbx.example", "sip:1@pbx.example"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("**a", "ba"));
        assert!(!glob("abc", "ABC"));
    }

    #[test]
    fn numbers() {
        assert_eq!(
            number_of("sip:+49 30 1234-0@pbx;user=phone").as_deref(),
            Some("+493012340")
        );
        assert_eq!(
            number_of("tel:+1-555-0100;phone-context=x").as_deref(),
            Some("+15550100")
        );
        assert_eq!(number_of("SIP:1002@10.0.0.1").as_deref(), Some("1002"));
        assert_eq!(
            number_of("<sips:alice@example.com>").as_deref(),
            Some("alice")
        );
        assert_eq!(number_of("sip:example.com"), None);
        assert_eq!(number_of("0049 (30) 111").as_deref(), Some("004930111"));
        assert_eq!(number_of(""), None);
    }

    #[test]
    fn aor_matching() {
        assert!(aor_matches("+4930*", "sip:+4930111@pbx"));
        assert!(aor_matches("sip:*@pbx", "sip:+4930111@pbx"));
        assert!(!aor_matches("+4940*", "sip:+4930111@pbx"));
        assert!(aor_matches("9000", "sip:9000@192.168.50.102"));
    }

    #[test]
    fn check_rejects_classes() {
        assert!(check("1[0-9]").is_err());
        assert!(check("").is_err());
        assert!(check("+49*").is_ok());
    }
}
