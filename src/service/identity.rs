//! Who an operator is, from the OS: the real user id of the CLI process, or the peer
//! credentials (`SO_PEERCRED`) of a control-socket connection, mapped to the account
//! name. Never a string the operator types, nor an environment variable.

/// The account name of `uid` from the local account database (`/etc/passwd`; the box
/// has only local accounts), `uid:<n>` if it has none.
pub fn user_name(uid: u32) -> String {
    name_in(
        &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
        uid,
    )
    .unwrap_or_else(|| format!("uid:{uid}"))
}

/// The name of `uid` in passwd-format `text`.
fn name_in(text: &str, uid: u32) -> Option<String> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        let id: u32 = f.next()?.trim().parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// The login user of this process: the name of its real user id.
pub fn current_user() -> String {
    user_name(rustix::process::getuid().as_raw())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_come_from_the_account_database() {
        let t = "root:x:0:0:root:/root:/bin/bash\n#x:x:7:7::/:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(super::name_in(t, 0).as_deref(), Some("root"));
        assert_eq!(super::name_in(t, 1000).as_deref(), Some("alice"));
        assert_eq!(super::name_in(t, 7), None);
        assert_eq!(super::user_name(4_000_000_000), "uid:4000000000");
    }
}
