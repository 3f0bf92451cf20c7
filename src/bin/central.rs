//! `branchrec-central`: the headquarters tools of the archive (docs/central.md). This
//! file parses arguments and renders; the work is `branchrec::central`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use branchrec::central::{
    export_evidence, ArchiveReader, CentralConfig, ComplianceKey, PemKey, Pkcs11Key, TrustedSigner,
};

/// Open archived recordings without their box: the compliance key (PKCS#11 token or PEM
/// file) and the S3-compatible archive are all it needs.
#[derive(Debug, Parser)]
#[command(name = "branchrec-central", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Verify a recording from the archive and export its audio as WAV.
    Export {
        /// Recording id (UUID) or the container's object key.
        recording: String,
        #[command(flatten)]
        common: Common,
        /// The WAV to write (must not exist).
        #[arg(long, required_unless_present = "evidence")]
        out: Option<PathBuf>,
        /// Write an evidence bundle (docs/evidence.md: the box's layout, verified by the
        /// same openssl commands) into this new or empty directory.
        #[arg(long, conflicts_with = "out")]
        evidence: Option<PathBuf>,
    },
    /// Print the decrypted metadata document (JSON).
    Show {
        /// Recording id (UUID) or the container's object key.
        recording: String,
        #[command(flatten)]
        common: Common,
    },
    #[command(flatten)]
    Index(branchrec::central::index::cli::IndexCommand),
    /// Commands to boxes: holds, erasure, compliance-key rotation (docs/central.md).
    #[command(flatten)]
    Commands(branchrec::central::command_cli::CommandCmd),
    /// The web compliance console and its accounts (docs/web-console.md).
    #[command(flatten)]
    Web(branchrec::central::web::cli::WebCmd),
}

#[derive(Debug, Args)]
struct Common {
    /// central.toml with an `[archive]` section (the keys of the box's `[uplink]`).
    #[arg(long, env = "BRANCHREC_CENTRAL_CONFIG")]
    archive: PathBuf,
    /// The box's enrolled manifest-signing public key (PEM, `signing-key.pem` of an
    /// evidence bundle). Without it the key named in the archived document is used, with
    /// a warning.
    #[arg(long)]
    box_key: Option<PathBuf>,
    /// Compliance private key in a PEM file (small installations; prefer an HSM).
    #[arg(long, conflicts_with = "pkcs11_module")]
    key_pem: Option<PathBuf>,
    /// PKCS#11 module of the HSM holding the compliance key.
    #[arg(long, requires_all = ["token_label", "key_label"])]
    pkcs11_module: Option<PathBuf>,
    /// Label of the token.
    #[arg(long)]
    token_label: Option<String>,
    /// Label of the EC key pair on the token.
    #[arg(long)]
    key_label: Option<String>,
    /// Environment variable holding the token's user PIN.
    #[arg(long, default_value = "BRANCHREC_PKCS11_PIN")]
    pin_env: String,
}

fn key(c: &Common) -> anyhow::Result<Box<dyn ComplianceKey>> {
    if let Some(p) = &c.key_pem {
        eprintln!(
            "WARNING: the compliance private key is a file ({}): whoever can read it opens every archived recording. Keep it in an HSM (--pkcs11-module).",
            p.display()
        );
        return Ok(Box::new(PemKey::load(p)?));
    }
    let (Some(m), Some(t), Some(k)) = (&c.pkcs11_module, &c.token_label, &c.key_label) else {
        bail!("give the compliance key: --pkcs11-module, --token-label and --key-label (or --key-pem)");
    };
    let pin = zeroize::Zeroizing::new(
        std::env::var(&c.pin_env)
            .with_context(|| format!("the token PIN is read from ${}", c.pin_env))?,
    );
    Ok(Box::new(Pkcs11Key::open(m, t, k, &pin)?))
}

fn signer(c: &Common) -> anyhow::Result<TrustedSigner> {
    use base64::Engine as _;
    let Some(p) = &c.box_key else {
        return Ok(TrustedSigner::FromDocument);
    };
    let pem = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .with_context(|| format!("{}: not a PEM public key", p.display()))?;
    Ok(TrustedSigner::Enrolled(der))
}

/// The key the manifest must verify with: the index's enrolment of the box when
/// `[index]` is configured and knows it, else `--box-key`, else the document's own key
/// (the export warns). Notes on weaker trust go to `notes`.
fn trusted_signer(
    cfg: &CentralConfig,
    c: &Common,
    box_id: &str,
    notes: &mut Vec<String>,
) -> anyhow::Result<TrustedSigner> {
    if let Some(ix) = &cfg.index {
        if let Some((der, trust)) = branchrec::central::index::cli::box_signing_key(ix, box_id)? {
            if trust != "enrolled" {
                notes.push(format!(
                    "box {box_id}'s signing key is trusted on first use by the indexer ({trust}), not confirmed by an operator (central enrol)"
                ));
            }
            return Ok(TrustedSigner::Enrolled(der));
        }
        notes.push(format!("the index does not know box {box_id}"));
    }
    signer(c)
}

fn main() -> anyhow::Result<()> {
    // The process holds data keys and decrypted audio: no core dumps, no ptrace.
    branchrec::vault::harden_process();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Export {
            recording,
            common,
            out,
            evidence,
        } => {
            let cfg = CentralConfig::load(&common.archive)?;
            let k = key(&common)?;
            let ar = ArchiveReader::open(&cfg.archive)?;
            let objkey = ar.locate(&recording)?;
            // The container is streamed for --out; the evidence bundle reads it whole.
            let rec = if evidence.is_some() {
                ar.fetch(&objkey)?
            } else {
                ar.fetch_meta(&objkey)?
            };
            let opened = rec.open(k.as_ref())?;
            let mut notes = Vec::new();
            let trusted = trusted_signer(&cfg, &common, &opened.index.box_id, &mut notes)?;
            for n in &notes {
                eprintln!("WARNING: {n}");
            }
            if let Some(dir) = evidence {
                let printed = notes.len();
                let e = export_evidence(&rec, &opened, k.as_ref(), &trusted, &dir, notes)?;
                if let Some(ix) = &cfg.index {
                    branchrec::central::index::cli::audit_export(
                        ix,
                        &e.recording_id,
                        serde_json::json!({ "object": objkey, "evidence": e.dir, "signer_sha256": e.signer_sha256 }),
                    )?;
                }
                for w in e.warnings.iter().skip(printed) {
                    eprintln!("WARNING: {w}");
                }
                println!(
                    "evidence bundle for {} from {} in {} (signing key sha256 {})",
                    e.recording_id,
                    objkey,
                    e.dir.display(),
                    e.signer_sha256
                );
                return Ok(());
            }
            let Some(out) = out else {
                bail!("give --out FILE.wav or --evidence DIR");
            };
            let (e, t) = branchrec::central::export::export_wav_streaming(
                &ar,
                &rec,
                &opened,
                k.as_ref(),
                &trusted,
                &out,
            )?;
            eprintln!(
                "export timings: container received {} ms, first audio byte written {} ms, verified and in place {} ms",
                t.download_ms, t.first_byte_ms, t.total_ms
            );
            if let Some(ix) = &cfg.index {
                branchrec::central::index::cli::audit_export(
                    ix,
                    &e.recording_id,
                    serde_json::json!({ "object": objkey, "out": e.out, "audio_sha256": e.audio_sha256 }),
                )?;
            }
            if !e.signer_enrolled {
                eprintln!(
                    "WARNING: manifest verified with the signing key the archived document names, not an enrolled one (give --box-key)"
                );
            }
            println!(
                "exported {} ({} frames, {} ch, {} Hz, audio sha256 {}) from {} to {}",
                e.recording_id,
                e.frames,
                e.channels,
                e.sample_rate,
                e.audio_sha256,
                objkey,
                e.out.display()
            );
            Ok(())
        }
        Cmd::Index(c) => branchrec::central::index::cli::run(c),
        Cmd::Commands(c) => branchrec::central::command_cli::run(c),
        Cmd::Web(c) => branchrec::central::web::cli::run(c),
        Cmd::Show { recording, common } => {
            let cfg = CentralConfig::load(&common.archive)?;
            if let Some(ix) = &cfg.index {
                // From the index (audited); no compliance key needed.
                let v = branchrec::central::index::cli::show(ix, &recording)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let k = key(&common)?;
            let ar = ArchiveReader::open(&cfg.archive)?;
            let objkey = ar.locate(&recording)?;
            let rec = ar.fetch(&objkey)?;
            let opened = rec.open(k.as_ref())?;
            let v = serde_json::json!({
                "index": opened.index,
                "document": opened.document,
                "manifest_signed": opened.manifest.is_some(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
    }
}
