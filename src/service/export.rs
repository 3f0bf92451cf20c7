//! Exporting a recording: verify it fully, then write its audio (WAV or Ogg Opus) or an
//! evidence bundle. Nothing is exported from a recording that does not verify.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::recording::export::ExportFormat;
use crate::recording::{Header, SampleFormat};
use crate::vault::KeyWrap;

use super::evidence::Verified;

/// What to export.
#[derive(Debug, Clone)]
pub enum ExportTarget {
    /// Decrypted audio to this file; the format defaults from its extension, else WAV.
    Audio {
        /// Output file.
        out: PathBuf,
        /// Output format, if given.
        format: Option<ExportFormat>,
    },
    /// An evidence bundle (audio, metadata, signed manifest, public key) into this directory.
    Evidence(PathBuf),
}

/// What was exported.
#[derive(Debug, Clone)]
pub enum Exported {
    /// An evidence bundle in this directory.
    Evidence(PathBuf),
    /// Audio.
    Audio {
        /// The recording's storage name (`wav`, `opus`).
        storage: &'static str,
        /// The format written.
        format: ExportFormat,
        /// Audio frames written.
        frames: u64,
        /// Channels.
        channels: u16,
        /// Sample rate, Hz.
        sample_rate: u32,
        /// The file written.
        out: PathBuf,
    },
}

/// Verify recording `id` with the box's keys and export it to `target`. The caller
/// writes the audit entry before (every access to audio is audited first).
pub fn export(
    cat: &Catalog,
    cfg: &Config,
    id: &str,
    target: &ExportTarget,
) -> anyhow::Result<Exported> {
    let keys = crate::vault::custody::open_existing(&cfg.custody())
        .context("loading the recording keys")?;
    let pubder = crate::vault::Signer::public_key_der(&keys.signer);
    let v = super::evidence::verify(cat, &cfg.storage.data_dir, &keys.wrap, &pubder, id);
    if !v.problems.is_empty() {
        bail!(
            "recording {id} failed verification, not exported: {}",
            v.problems.join("; ")
        );
    }
    match target {
        ExportTarget::Evidence(dir) => {
            super::evidence::export_evidence(&v, &keys.wrap, &pubder, dir)?;
            Ok(Exported::Evidence(dir.clone()))
        }
        ExportTarget::Audio { out, format } => {
            let Some((header, path)) = &v.audio else {
                bail!("recording {id}: no verified audio");
            };
            let format = format
                .or_else(|| ExportFormat::from_path(out))
                .unwrap_or(ExportFormat::Wav);
            let frames = export_audio(cfg, &keys.wrap, &v, header, path, format, out)?;
            Ok(Exported::Audio {
                storage: header.sample_format.storage_name(),
                format,
                frames,
                channels: header.channels,
                sample_rate: header.sample_rate,
                out: out.clone(),
            })
        }
    }
}

/// Stream the verified recording `v` to `out` (via a new 0600 temporary file
/// `<out>.partial`, linked to `out` at the end without replacing anything, removed on failure)
/// and check that the audio read is the audio the manifest signed. Returns the frames
/// written.
fn export_audio(
    cfg: &Config,
    wrap: &dyn KeyWrap,
    v: &Verified,
    header: &Header,
    path: &Path,
    format: ExportFormat,
    out: &Path,
) -> anyhow::Result<u64> {
    use crate::recording::export::{to_ogg_opus, to_wav};
    let id = &v.id;
    let src = || -> anyhow::Result<_> {
        Ok(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ))
    };
    // O_CREAT|O_EXCL|O_NOFOLLOW, 0600: a planted `<out>.partial` (a symbolic link to a
    // file the attacker wants overwritten) makes the export fail instead.
    let e = crate::recording::files::write_new_private(out, |tmp, f| -> anyhow::Result<_> {
        let dst = std::io::BufWriter::new(f);
        let (e, f) = match format {
            ExportFormat::Wav => {
                to_wav(src()?, wrap, v.interrupted, dst).map(|(e, w)| (e, w.into_inner()))
            }
            ExportFormat::Opus => to_ogg_opus(
                src()?,
                wrap,
                v.interrupted,
                &cfg.storage.opus.settings(),
                super::evidence::ogg_serial(id),
                &[
                    format!("BRANCHREC_RECORDING_ID={id}"),
                    format!("BRANCHREC_STORAGE={}", header.sample_format.storage_name()),
                ],
                dst,
            )
            .map(|(e, w)| (e, w.into_inner())),
        }?;
        let f = f.map_err(|e| anyhow::anyhow!("flushing {}: {}", tmp.display(), e.error()))?;
        f.sync_all()?;
        let signed: Option<serde_json::Value> = v
            .manifest
            .as_ref()
            .and_then(|(m, _)| serde_json::from_slice(m).ok());
        let key = match header.sample_format {
            SampleFormat::S16Le => "/audio/pcm_sha256",
            SampleFormat::Opus => "/audio/opus_packets_sha256",
        };
        if signed.as_ref().and_then(|m| m.pointer(key))
            != Some(&serde_json::Value::from(hex::encode(e.audio_sha256)))
        {
            bail!(
                "recording {id} changed after verification: audio hash differs from the manifest"
            );
        }
        Ok(e)
    })?;
    Ok(e.frames)
}
