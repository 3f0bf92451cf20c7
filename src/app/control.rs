//! Local control channel of the running daemon: a Unix socket `<data_dir>/control.sock`
//! (mode 0600, so only the daemon's user), one JSON request per line, one JSON reply per
//! line. Requests:
//!
//! - `{"cmd":"pause","call":"ID"}` — stop storing audio of a running
//!   recording (by recording id or SIP Call-ID); paused time becomes silence and a
//!   `pause`/`resume` interval in the events. Audited as `control:<user>`, the account
//!   of the connecting process from `SO_PEERCRED` (an `"actor"` field is ignored).
//! - `{"cmd":"resume","call":"ID"}`
//! - `{"cmd":"access"}` — SIP listener counters: TLS connections accepted and refused by
//!   reason, datagrams/connections dropped by `sip.allowed_sources`
//!   (`{"ok":true,"access":{…},"limits":{…}}`; `limits`: messages dropped for the
//!   per-source rate, sessions refused for unconfirmed ones, TCP connections refused).
//! - `{"cmd":"binding"}` — media and dialog binding counters: RTP from foreign sources,
//!   in-dialog requests from other peers, metadata refused above the caps
//!   (`{"ok":true,"binding":{…}}`).
//!
//! - `{"cmd":"board"}` — the front panel: board, LEDs, faults, last press and hold
//!   (reply `{"ok":true,"board":{…}}`).
//! - `{"cmd":"board.press","ms":2500}` — press the SIMULATED hold button for `ms`
//!   milliseconds (development boards only; a real button is pressed by hand).
//!
//! Replies: `{"ok":true,"recording":"…"}` or `{"ok":false,"error":"…"}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use crate::app::call::CallCmd;
use crate::app::Shared;

/// A running recording as the control channel sees it.
#[derive(Clone)]
pub struct LiveCall {
    /// SIP Call-ID.
    pub call_id: String,
    /// Commands to the call task.
    pub tx: mpsc::UnboundedSender<CallCmd>,
    /// Whether the recording is paused (kept by the call task).
    pub paused: Arc<std::sync::atomic::AtomicBool>,
}

/// Running recordings by recording id (maintained by the SIP loop).
pub type LiveCalls = Arc<Mutex<HashMap<String, LiveCall>>>;

/// Longest request line accepted.
const MAX_LINE: usize = 4096;

/// Bind the socket and serve it in a task.
pub async fn start(shared: Arc<Shared>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let path = shared.cfg.storage.control_socket();
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let lst = UnixListener::bind(&path)
        .with_context(|| format!("binding control socket {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", path.display()))?;
    }
    Ok(tokio::spawn(async move {
        let mut errors = crate::app::accept::AcceptErrors::new("control socket");
        loop {
            let stream = match lst.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    errors.failed(&e).await;
                    continue;
                }
            };
            let shared = shared.clone();
            // Who is on the other end, from the kernel (SO_PEERCRED), not from the request.
            let actor = match stream.peer_cred() {
                Ok(c) => format!("control:{}", crate::service::identity::user_name(c.uid())),
                Err(_) => "control:unknown".to_string(),
            };
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut lines = BufReader::new(rd.take_limited()).lines();
                // Bounded: a client gets at most 16 requests per connection.
                for _ in 0..16 {
                    let Ok(Some(line)) = lines.next_line().await else {
                        break;
                    };
                    let reply = handle(&shared, &line, &actor);
                    if wr.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    }))
}

trait TakeLimited: Sized {
    fn take_limited(self) -> tokio::io::Take<Self>;
}
impl<T: tokio::io::AsyncRead> TakeLimited for T {
    fn take_limited(self) -> tokio::io::Take<Self> {
        tokio::io::AsyncReadExt::take(self, (16 * MAX_LINE) as u64)
    }
}

fn handle(shared: &Shared, line: &str, actor: &str) -> serde_json::Value {
    let err = |m: &str| serde_json::json!({ "ok": false, "error": m });
    let Ok(req) = serde_json::from_str::<serde_json::Value>(line) else {
        return err("request is not JSON");
    };
    let cmd = req.get("cmd").and_then(|v| v.as_str()).unwrap_or_default();
    let call = req.get("call").and_then(|v| v.as_str()).unwrap_or_default();
    let pause = match cmd {
        "pause" => true,
        "resume" => false,
        "board" | "board.press" => return board_cmd(shared, cmd, &req),
        "access" => {
            let limits = shared
                .limiter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stats()
                .clone();
            return serde_json::json!({ "ok": true, "access": shared.access.snapshot(), "limits": limits });
        }
        "binding" => {
            let mut b = shared.binding.snapshot();
            crate::app::sink::add_media_gaps(&mut b);
            return serde_json::json!({ "ok": true, "binding": b });
        }
        "assurance" => {
            return serde_json::json!({ "ok": true, "assurance": crate::app::assurance::snapshot() });
        }
        _ => {
            return err(
                "unknown cmd (pause, resume, board, board.press, access, binding, assurance)",
            )
        }
    };
    let found = {
        let live = shared.live.lock().unwrap_or_else(|e| e.into_inner());
        live.iter()
            .find(|(id, c)| id.as_str() == call || c.call_id == call)
            .map(|(id, c)| (id.clone(), c.tx.clone()))
    };
    let Some((id, tx)) = found else {
        return err("no running recording with that id or Call-ID");
    };
    if tx
        .send(CallCmd::Pause {
            paused: pause,
            source: actor.to_string(),
        })
        .is_err()
    {
        return err("recording is closing");
    }
    shared.catalog.send(crate::app::store::CatalogCmd::Audit(
        actor.to_string(),
        if pause {
            "recording.pause"
        } else {
            "recording.resume"
        }
        .into(),
        id.clone(),
        serde_json::json!({ "via": "control socket" }),
    ));
    serde_json::json!({ "ok": true, "recording": id })
}

/// Longest simulated press (a "stuck" button in tests): one hour.
const MAX_PRESS_MS: u64 = 3_600_000;

fn board_cmd(shared: &Shared, cmd: &str, req: &serde_json::Value) -> serde_json::Value {
    let err = |m: &str| serde_json::json!({ "ok": false, "error": m });
    let Some(b) = &shared.board else {
        return err("no front panel in this process");
    };
    if cmd == "board" {
        let st = b.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
        return match st {
            Some(st) => serde_json::json!({ "ok": true, "board": st }),
            None => err("front panel starting"),
        };
    }
    let Some(ms) = req.get("ms").and_then(|v| v.as_u64()) else {
        return err("board.press needs \"ms\" (milliseconds)");
    };
    if ms == 0 || ms > MAX_PRESS_MS {
        return err("ms must be 1..=3600000");
    }
    let Some(pin) = b.sim_button.clone() else {
        return err("this box has a real hold button (cdev board): press it");
    };
    use std::sync::atomic::Ordering;
    let gen = b.press_gen.fetch_add(1, Ordering::SeqCst) + 1;
    pin.set(true);
    let board = b.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        if board.press_gen.load(Ordering::SeqCst) == gen {
            pin.set(false);
        }
    });
    tracing::info!(ms, "simulated hold button pressed");
    serde_json::json!({ "ok": true, "pressed_ms": ms })
}
