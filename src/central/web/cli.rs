//! `branchrec-central serve` and `branchrec-central user add|list` (docs/web-console.md).

use std::io::BufRead as _;

use anyhow::Context as _;
use clap::Subcommand;

use branchrec_core::console::{otpauth_uri, Role};

use crate::central::index::cli::{ConfigArg, KeyArgs};
use crate::central::CentralConfig;

/// The console's subcommands.
#[derive(Debug, Subcommand)]
pub enum WebCmd {
    /// Serve the web compliance console (HTTPS, `[web]` of central.toml).
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        key: KeyArgs,
        /// The central command key in a PEM file (legal holds from the console; prefer an
        /// HSM). Without a command key the console places no holds.
        #[arg(
            long,
            env = "BRANCHREC_COMMAND_KEY",
            conflicts_with = "command_pkcs11_module"
        )]
        command_key: Option<std::path::PathBuf>,
        /// PKCS#11 module of the HSM holding the command key.
        #[arg(long, requires_all = ["command_token_label", "command_key_label"])]
        command_pkcs11_module: Option<std::path::PathBuf>,
        /// Label of the command key's token.
        #[arg(long)]
        command_token_label: Option<String>,
        /// Label of the command key pair.
        #[arg(long)]
        command_key_label: Option<String>,
        /// Environment variable holding the command token's PIN.
        #[arg(long, default_value = "BRANCHREC_COMMAND_PIN")]
        command_pin_env: String,
    },
    /// Console accounts.
    #[command(subcommand)]
    User(UserCmd),
}

/// `user …`.
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a local account; prints its TOTP secret once (enrol it in an
    /// authenticator app). The password is read from $BRANCHREC_WEB_PASSWORD or the
    /// first line of standard input.
    Add {
        /// User name.
        username: String,
        /// auditor, compliance, supervisor, it or admin.
        #[arg(long)]
        role: String,
        /// Assigned site (supervisors; repeat).
        #[arg(long)]
        site: Vec<String>,
        /// Bind the account to this subject at the `[web.oidc]` provider: it signs in
        /// through SSO only (no password, no local TOTP).
        #[arg(long)]
        oidc_subject: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the accounts.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Run a console subcommand.
pub fn run(cmd: WebCmd) -> anyhow::Result<()> {
    match cmd {
        WebCmd::Serve {
            config,
            key,
            command_key,
            command_pkcs11_module,
            command_token_label,
            command_key_label,
            command_pin_env,
        } => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .try_init();
            let cfg = CentralConfig::load(&config.config)?;
            let k = key.load()?;
            let ck = crate::central::command_cli::open_command_key(
                command_key.as_deref(),
                command_pkcs11_module.as_deref(),
                command_token_label.as_deref(),
                command_key_label.as_deref(),
                &command_pin_env,
            )?;
            let app = super::App::new(cfg, k, ck)?;
            super::serve(app)
        }
        WebCmd::User(UserCmd::Add {
            username,
            role,
            site,
            oidc_subject,
            config,
            json,
        }) => {
            let (cfg, ix) = crate::central::index::cli::load(&config.config)?;
            let role = Role::parse(&role)?;
            if let Some(sub) = oidc_subject {
                let issuer = cfg
                    .web
                    .as_ref()
                    .and_then(|w| w.oidc.as_ref())
                    .map(|o| o.issuer.clone())
                    .context("--oidc-subject needs [web.oidc] issuer in the config")?;
                let mut c = crate::central::index::db::connect(&ix.database)?;
                crate::central::index::db::migrate(&mut c)?;
                super::auth::add_oidc_user(&mut c, &username, role, &site, &issuer, &sub)?;
                let key = crate::central::index::audit::AuditKey::load(&ix.audit_key)?;
                crate::central::index::audit::append(
                    &mut c,
                    &key,
                    &crate::service::identity::current_user(),
                    "user_add",
                    &username,
                    &serde_json::json!({ "role": role.as_str(), "sites": site, "oidc_issuer": issuer }),
                )?;
                println!(
                    "{}",
                    serde_json::json!({ "username": username, "role": role.as_str(), "sites": site, "oidc_issuer": issuer })
                );
                return Ok(());
            }
            let password = match std::env::var("BRANCHREC_WEB_PASSWORD") {
                Ok(p) => zeroize::Zeroizing::new(p),
                Err(_) => {
                    let mut l = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut l)
                        .context("reading the password from standard input")?;
                    zeroize::Zeroizing::new(l.trim_end_matches(['\r', '\n']).to_string())
                }
            };
            let mut c = crate::central::index::db::connect(&ix.database)?;
            crate::central::index::db::migrate(&mut c)?;
            let secret = super::auth::add_user(&mut c, &username, role, &site, &password)?;
            let key = crate::central::index::audit::AuditKey::load(&ix.audit_key)?;
            crate::central::index::audit::append(
                &mut c,
                &key,
                &crate::service::identity::current_user(),
                "user_add",
                &username,
                &serde_json::json!({ "role": role.as_str(), "sites": site }),
            )?;
            let issuer = cfg
                .web
                .as_ref()
                .map(|w| w.totp_issuer.clone())
                .unwrap_or_else(|| "branchrec".into());
            let b32 = branchrec_core::console::base32_encode(&secret);
            let uri = otpauth_uri(&issuer, &username, &secret);
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "username": username, "role": role.as_str(), "sites": site, "totp_secret": b32, "otpauth": uri })
                );
            } else {
                println!("user {username} ({}) created", role.as_str());
                println!("TOTP secret (shown once): {b32}");
                println!("{uri}");
            }
            Ok(())
        }
        WebCmd::User(UserCmd::List { config }) => {
            let (_, ix) = crate::central::index::cli::load(&config.config)?;
            let mut c = crate::central::index::db::connect(&ix.database)?;
            crate::central::index::db::migrate(&mut c)?;
            for u in super::access::users(&mut c)? {
                println!("{u}");
            }
            Ok(())
        }
    }
}
