//! The SIP shell: listeners, the [`Srs`] core, and the bookkeeping of running calls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::app::call::{CallCmd, CallHandle, CallSetup, PreparedCall, SetupError};
use crate::app::store::{free_mb, CatalogCmd};
use crate::app::systemd::{self, Notifier, Probe, Watchdog};
use crate::app::tls::{SourceDenyLog, TlsServer};
use crate::app::Shared;
use crate::catalog::{
    ChannelRow, DataMode, MappingSource, MetadataVersion as CatMetadata, NewRecording,
    ParticipantRow, Source,
};
use crate::config::ListenTransport;
use crate::sip::access::{AccessCounters, SourceAllowlist};
use crate::sip::limits::{ConnRefusal, SourceLimiter};
use crate::sip::{
    DialogId, Endpoint, EndpointConfig, Peer, Refusal, StreamFramer, Transport, Unavailable,
};
use crate::siprec::cisco_bib::{Pairer, Placement, DEFAULT_PAIR_TIMEOUT};
use crate::siprec::metadata::RecordingMetadata;
use crate::siprec::srs::{MetadataVersion, Offer, Srs, SrsConfig, SrsEvent};
use crate::siprec::ChannelAssignment;

/// Input to the SIP loop from socket tasks and call set-up tasks.
enum Inbound {
    Datagram(Peer, Vec<u8>),
    TcpOpened(u64, mpsc::Sender<Vec<u8>>),
    /// The authenticated client identities of a TLS connection (before its first message).
    TlsIdentity(u64, String),
    TcpClosed(u64),
    Prepared(DialogId, Result<PreparedCall, SetupError>),
}

/// How often `STATUS=` is refreshed (when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Biggest SIP datagram we accept.
const MAX_DATAGRAM: usize = 65_535;

/// What the socket tasks share: the source allowlist of the plain listeners, counters,
/// the rate-limited refusal log and the connection-id counter of TCP and TLS.
struct Gate {
    allowed: SourceAllowlist,
    counters: Arc<AccessCounters>,
    deny_log: SourceDenyLog,
    next_conn: std::sync::atomic::AtomicU64,
    /// Per-source limits (rate, unconfirmed sessions, TCP connections): the core decides.
    limiter: Arc<std::sync::Mutex<SourceLimiter>>,
    /// Its clock.
    clock: crate::clock::MonoClock,
    /// Timeouts and queue bound of TCP/TLS connections.
    conn: ConnLimits,
}

/// Timeouts and the send-queue bound of one TCP/TLS connection (`[sip.limits]`).
#[derive(Clone, Copy)]
struct ConnLimits {
    idle: Duration,
    message: Duration,
    queue: usize,
}

impl Gate {
    fn conn_id(&self) -> u64 {
        self.next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, SourceLimiter> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a message from `peer` is within its source's rate (TLS peers are
    /// authenticated and not rate-limited here).
    fn within_rate(&self, peer: &Peer) -> bool {
        peer.transport == Transport::Tls
            || self
                .limiter()
                .allow_message(self.clock.now(), peer.remote.ip())
    }
}

/// Gives a plain TCP connection's slot back to the limiter when the connection ends.
struct TcpSlot(Arc<Gate>, std::net::IpAddr);

impl Drop for TcpSlot {
    fn drop(&mut self) {
        self.0.limiter().tcp_closed(self.1);
    }
}

/// Run until SIGINT/SIGTERM. `READY=1` goes to the service manager once the listeners are
/// bound (storage and keys are opened before); `STATUS=` and watchdog pings come from this
/// loop, so a wedged loop stops pinging.
pub async fn run(
    shared: Arc<Shared>,
    notifier: Arc<Notifier>,
    uplink: Option<Arc<crate::app::uplink::UplinkShared>>,
) -> anyhow::Result<()> {
    let cfg = &shared.cfg;
    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(8192);
    let mut udp: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut tcp_conns: HashMap<u64, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let limits = &cfg.sip.limits;
    let gate = Arc::new(Gate {
        // Validated with the configuration.
        allowed: SourceAllowlist::parse(&cfg.sip.allowed_sources).context("sip.allowed_sources")?,
        counters: shared.access.clone(),
        deny_log: SourceDenyLog::default(),
        next_conn: 1.into(),
        limiter: shared.limiter.clone(),
        clock: crate::clock::MonoClock::new(),
        conn: ConnLimits {
            idle: Duration::from_secs(limits.tcp_idle_timeout_s.into()),
            message: Duration::from_millis(limits.tcp_message_timeout_ms.into()),
            queue: limits.tcp_send_queue,
        },
    });
    if gate.allowed.is_open() {
        tracing::info!(
            "sip.allowed_sources is empty: the UDP/TCP listeners take SIP from any source"
        );
    }
    let mut listen: Vec<String> = cfg.sip.listen.iter().map(|l| l.to_string()).collect();
    if let Some(t) = &cfg.sip.tls {
        let server = Arc::new(crate::app::tls::load(t)?);
        tracing::info!(
            server = ?server.summary.server_identities,
            client_cas = server.summary.client_cas,
            allowed_identities = server.summary.allowed_identities,
            min_version = %t.min_version,
            "SIP over TLS: mutual authentication required"
        );
        if let Some(m) = server.summary.key_mode_too_open {
            tracing::warn!(mode = %format!("{m:03o}"), "sip.tls.key_file is readable by group/others: chmod 0400 it");
        }
        for addr in &t.listen {
            let lst = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding SIP listener tls:{addr}"))?;
            tokio::spawn(tls_acceptor(
                lst,
                server.clone(),
                gate.clone(),
                in_tx.clone(),
            ));
            listen.push(format!("tls:{addr}"));
        }
    }
    for l in &cfg.sip.listen {
        match l.transport {
            ListenTransport::Udp => {
                let s = Arc::new(
                    UdpSocket::bind(l.addr)
                        .await
                        .with_context(|| format!("binding SIP listener {l}"))?,
                );
                let local = s.local_addr()?;
                udp.insert(local, s.clone());
                tokio::spawn(udp_reader(s, local, gate.clone(), in_tx.clone()));
            }
            ListenTransport::Tcp => {
                let lst = TcpListener::bind(l.addr)
                    .await
                    .with_context(|| format!("binding SIP listener {l}"))?;
                tokio::spawn(tcp_acceptor(lst, gate.clone(), in_tx.clone()));
            }
        }
    }
    let contact_host = cfg
        .sip
        .listen
        .first()
        .map(|l| l.addr.to_string())
        .unwrap_or_default();
    let ep = Endpoint::new(EndpointConfig {
        user_agent: cfg.sip.user_agent.clone(),
        contact_host,
        tls_contact_host: cfg.sip.tls.as_ref().and_then(|t| t.contact_host.clone()),
        // RFC 7866 §6.1.1: an SRC puts `Require: siprec` on recording sessions.
        supported: vec!["siprec".into(), "timer".into()],
        session_timer: crate::sip::session_timer::TimerConfig {
            session_expires: Duration::from_secs(cfg.sip.session_expires_s.into()),
            min_se: Duration::from_secs(cfg.sip.min_se_s.into()),
        },
        // RFC 7866 §6.2: "The SRS MUST include the '+sip.srs' feature tag in the Contact URI
        // ... for all recording sessions" (1xx/2xx to INVITE, 2xx to UPDATE).
        contact_params: ";+sip.srs".into(),
        max_dialogs: cfg.sip.max_calls.saturating_mul(2).max(16),
        max_transactions: cfg.sip.max_transactions,
        response_budget_pct: Some(limits.response_budget_pct),
        seed: rand::random(),
        ..EndpointConfig::default()
    });
    let mut txn_cap = TxnCapLog::default();
    let mut srs = Srs::new(
        ep,
        SrsConfig {
            sdp_addr: cfg.sdp_address(),
            sdp_username: "branchrec".into(),
            session_id_seed: rand::random::<u32>() as u64,
            srtp_key_seed: rand::random(),
        },
    )
    .with_metadata_caps(cfg.sip.metadata_caps());
    srs.set_max_streams(cfg.sip.limits.max_streams_per_call);
    let mut calls: HashMap<DialogId, CallHandle> = HashMap::new();
    // Sessions answered without recording (a rule said `record = false`).
    let mut skipped: std::collections::HashSet<DialogId> = Default::default();
    let mut preparing: HashMap<DialogId, bool> = HashMap::new(); // value: ended meanwhile
                                                                 // Sessions admitted by the per-source limiter and not yet confirmed (or ended).
    let mut pending = PendingSessions {
        gate: gate.clone(),
        by_call: HashMap::new(),
    };
    // The peer of the datagram just handed to the core: an `Offered` event comes out of
    // the `handle_receive` of its INVITE, so events drained after it are that peer's.
    let mut last_peer: Option<Peer> = None;
    let mut tasks = tokio::task::JoinSet::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tracing::info!(listen = ?listen, data_dir = %cfg.storage.data_dir.display(), "branchrec ready");
    let snapshot = |calls: usize| systemd::Snapshot {
        calls,
        uploads_pending: uplink
            .as_ref()
            .and_then(|u| u.last_doc())
            .map(|d| d.pending),
        keys_error: shared.keys_error.clone(),
        storage_refusing: shared.gate.refusing(),
    };
    let mut status = systemd::status_line(&snapshot(0));
    notifier.ready(&status);
    // Status every 5 s (when it changed); pings at half the watchdog timeout or faster.
    let svc_every = notifier
        .watchdog_every()
        .map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY));
    let mut svc_tick = tokio::time::interval(svc_every);
    svc_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watchdog = Watchdog::default();
    let mut probe: Option<tokio::sync::oneshot::Receiver<()>> = None;

    // Cisco BiB legs: which leg belongs with which (see docs/cisco-bib.md), and recording
    // events waiting for their leg's recording to be set up.
    let mut bib: Pairer<DialogId> = Pairer::new(DEFAULT_PAIR_TIMEOUT, cfg.sip.max_calls.max(1));
    let mut bib_notes: HashMap<DialogId, Vec<(String, serde_json::Value)>> = HashMap::new();
    loop {
        let deadline = [srs.poll_timeout(), bib.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .and_then(|m| crate::clock::MonoClock::process().instant(m))
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            inb = in_rx.recv() => {
                let Some(inb) = inb else { break };
                let now = crate::clock::MonoClock::process().now();
                last_peer = None;
                match inb {
                    Inbound::Datagram(peer, data) => {
                        last_peer = Some(peer);
                        srs.handle_receive(now, peer, &data)
                    }
                    Inbound::TcpOpened(id, tx) => { tcp_conns.insert(id, tx); }
                    Inbound::TcpClosed(id) => { tcp_conns.remove(&id); srs.set_conn_identity(id, None); }
                    Inbound::TlsIdentity(id, identity) => srs.set_conn_identity(id, Some(identity)),
                    Inbound::Prepared(call, res) => {
                        let ended = preparing.remove(&call).unwrap_or(true);
                        match res {
                            Ok(prepared) => {
                                let ports = prepared.ports();
                                let id = prepared.id().to_string();
                                let sip_call_id = prepared.call_id().to_string();
                                let paused_flag = prepared.paused_flag();
                                let (tx, rx) = mpsc::unbounded_channel();
                                if ended {
                                    let _ = tx.send(CallCmd::End("ended before set-up completed".into()));
                                } else {
                                    srs.accept(now, call, &ports);
                                }
                                // Journal fields RECORDING_ID and CALL_ID on every line of the call.
                                let span = tracing::info_span!("call", recording_id = %id, call_id = %sip_call_id);
                                span.in_scope(|| tracing::info!(?ports, "recording started"));
                                // The task says which call it was when it ends, so its
                                // `max_calls` slot is freed then (an RTP timeout ends the
                                // recording long before the dialog, which may last 12 h).
                                let run = tracing::Instrument::instrument(prepared.run(rx), span);
                                tasks.spawn(async move { run.await; call });
                                if !ended {
                                    shared.live.lock().unwrap_or_else(|e| e.into_inner()).insert(
                                        id.clone(),
                                        crate::app::control::LiveCall { call_id: sip_call_id, tx: tx.clone(), paused: paused_flag },
                                    );
                                    for (kind, detail) in bib_notes.remove(&call).unwrap_or_default() {
                                        let _ = tx.send(CallCmd::EventWith(kind, detail));
                                    }
                                    calls.insert(call, CallHandle { recording_id: id, tx });
                                }
                            }
                            Err(e) => {
                                pending.done(call);
                                bib.remove(&call);
                                bib_notes.remove(&call);
                                tracing::error!(error = %e, "cannot record: answering 503");
                                let why = e.unavailable();
                                refused_seen(&shared, &why);
                                srs.reject(now, call, Refusal::CannotRecord { why, retry_after_s: shared.cfg.sip.retry_after_s });
                            }
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let now = crate::clock::MonoClock::process().now();
                srs.handle_timeout(now);
                for lonely in bib.expired(now) {
                    tracing::warn!(refci = %lonely.key.refci, side = lonely.side.as_str(), "Cisco BiB leg without its partner: recorded one-sided");
                    let detail = serde_json::json!({
                        "side": lonely.side.as_str(),
                        "missing": lonely.side.other().as_str(),
                        "refci": lonely.key.refci,
                        "farendrefci": lonely.key.farendrefci,
                        "cluster": lonely.key.cluster,
                    });
                    bib_note(&calls, &preparing, &mut bib_notes, lonely.call, BIB_ONE_SIDED, detail);
                }
            }
            _ = svc_tick.tick(), if notifier.enabled() => {
                if notifier.watchdog_every().is_some() {
                    let state = match probe.as_mut().map(|rx| rx.try_recv()) {
                        None => Probe::None,
                        Some(Ok(())) => Probe::Answered,
                        Some(Err(tokio::sync::oneshot::error::TryRecvError::Empty)) => Probe::Pending,
                        Some(Err(tokio::sync::oneshot::error::TryRecvError::Closed)) => Probe::Gone,
                    };
                    let act = watchdog.tick(state);
                    if act.ping {
                        notifier.ping();
                    }
                    if act.new_probe {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        shared.catalog.send(CatalogCmd::Barrier(tx));
                        probe = Some(rx);
                    }
                }
                let now_status = systemd::status_line(&snapshot(calls.len()));
                if now_status != status {
                    notifier.status(&now_status);
                    status = now_status;
                }
            }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(call) = done {
                    if let Some(c) = calls.remove(&call) {
                        shared.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&c.recording_id);
                        tracing::info!(recording = %c.recording_id, "recording ended before its dialog: call slot freed");
                    }
                }
            }
        }
        while let Some(t) = srs.poll_transmit() {
            send(&udp, &tcp_conns, t.peer, t.data).await;
        }
        shared.binding.set_sip(
            srs.endpoint().stats().foreign_peer_refused,
            srs.stats().metadata_refused,
        );
        txn_cap.observe(
            srs.endpoint().stats().transactions_refused,
            srs.endpoint().transaction_count(),
            cfg.sip.max_transactions,
        );
        shared.binding.set_sip_transactions(
            srs.endpoint().stats().transactions_refused,
            cfg.sip.max_transactions as u64,
        );
        while let Some(ev) = srs.poll_event() {
            if let SrsEvent::Established { call } | SrsEvent::Ended { call, .. } = &ev {
                pending.done(*call);
            }
            if let SrsEvent::Offered(offer) = &ev {
                // Per-source limit on sessions not confirmed by ACK (TLS peers are
                // authenticated: not limited here).
                let src = last_peer.filter(|p| p.transport != Transport::Tls);
                if let Some(p) = src {
                    if !pending.offered(offer.call, p.remote.ip()) {
                        tracing::warn!(peer = %p.remote, "refusing call: too many unconfirmed sessions from this source");
                        refused_seen(&shared, &Unavailable::SourceLimit);
                        let refusal = Refusal::CannotRecord {
                            why: Unavailable::SourceLimit,
                            retry_after_s: shared.cfg.sip.retry_after_s,
                        };
                        srs.reject(
                            crate::clock::MonoClock::process().now(),
                            offer.call,
                            refusal,
                        );
                        continue;
                    }
                }
            }
            // Noted after `handle_event`: only a leg being set up gets its event.
            let mut leg_note = None;
            if let SrsEvent::Offered(offer) = &ev {
                if let Some(leg) = &offer.bib {
                    let now = crate::clock::MonoClock::process().now();
                    let placement = bib.add(now, offer.call, leg);
                    let detail = serde_json::json!({
                        "side": leg.side.as_str(),
                        "channel": leg.side.channel(),
                        "refci": leg.refci,
                        "farendrefci": leg.farendrefci,
                        "cluster": leg.cluster,
                        "nearendaddr": leg.nearendaddr,
                        "farendaddr": leg.farendaddr,
                        "nearenddevice": leg.nearenddevice,
                        "placement": match &placement {
                            Placement::First => "first",
                            Placement::Joins { .. } => "joins",
                            Placement::Duplicate => "duplicate",
                        },
                    });
                    tracing::info!(refci = %leg.refci, side = leg.side.as_str(), delayed_offer = offer.delayed_offer, "Cisco built-in-bridge leg");
                    leg_note = Some((offer.call, detail));
                }
            }
            if let SrsEvent::Ended { call, .. } = &ev {
                bib.remove(call);
                bib_notes.remove(call);
            }
            let offered = match &ev {
                SrsEvent::Offered(o) => Some(o.call),
                _ => None,
            };
            handle_event(
                &shared,
                &mut srs,
                ev,
                &mut calls,
                &mut preparing,
                &mut skipped,
                &in_tx,
            );
            if let Some((call, detail)) = leg_note {
                bib_note(&calls, &preparing, &mut bib_notes, call, BIB_LEG, detail);
            }
            // Refused on the spot (keys, call limit, storage): not pending any more.
            if let Some(call) =
                offered.filter(|c| !preparing.contains_key(c) && !skipped.contains(c))
            {
                pending.done(call);
                bib.remove(&call);
                bib_notes.remove(&call);
            }
        }
    }
    notifier.stopping(&format!(
        "stopping: closing {} recording{}",
        calls.len(),
        if calls.len() == 1 { "" } else { "s" }
    ));
    for (_, c) in calls.drain() {
        let _ = c.tx.send(CallCmd::End("daemon shutting down".into()));
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::error!("recordings did not close within 10 s of shutdown");
    }
    Ok(())
}

/// Recording event of a Cisco BiB leg: its tags and how it was paired.
const BIB_LEG: &str = "bib.leg";
/// Recording event of a Cisco BiB leg whose partner never arrived (recorded one-sided).
const BIB_ONE_SIDED: &str = "bib.one_sided";

/// Give a BiB event to the leg's recording, or keep it until the recording is set up.
fn bib_note(
    calls: &HashMap<DialogId, CallHandle>,
    preparing: &HashMap<DialogId, bool>,
    notes: &mut HashMap<DialogId, Vec<(String, serde_json::Value)>>,
    call: DialogId,
    kind: &str,
    detail: serde_json::Value,
) {
    match calls.get(&call) {
        Some(c) => {
            let _ = c.tx.send(CallCmd::EventWith(kind.into(), detail));
        }
        // Not recorded (refused, not recorded by rule, set-up failed): nothing to mark.
        None if !preparing.contains_key(&call) => {}
        None => {
            let v = notes.entry(call).or_default();
            if v.len() < 4 {
                v.push((kind.into(), detail));
            }
        }
    }
}

/// A call turned away with 503: its verdict `refused` and a `calls_seen` row.
fn refused_seen(shared: &Shared, why: &Unavailable) {
    let reason = match why {
        Unavailable::NoKeys => "no_keys",
        Unavailable::CallLimit => "call_limit",
        Unavailable::Storage(_) => "storage",
        Unavailable::Setup(_) => "setup",
        Unavailable::TooManyOpenFiles => "too_many_open_files",
        Unavailable::SourceLimit => "source_limit",
    };
    crate::app::assurance::call_seen(
        &shared.catalog,
        crate::catalog::Source::Siprec,
        crate::assurance::Verdict::Refused,
        reason,
        None,
        None,
    );
}

fn handle_event(
    shared: &Arc<Shared>,
    srs: &mut Srs,
    ev: SrsEvent,
    calls: &mut HashMap<DialogId, CallHandle>,
    preparing: &mut HashMap<DialogId, bool>,
    skipped: &mut std::collections::HashSet<DialogId>,
    in_tx: &mpsc::Sender<Inbound>,
) {
    match ev {
        SrsEvent::Offered(offer) => {
            let now = crate::clock::MonoClock::process().now();
            let cfg = &shared.cfg;
            if let Some(why) = &shared.keys_error {
                tracing::error!(error = %why, "refusing call: recording keys unavailable");
                refused_seen(shared, &Unavailable::NoKeys);
                let refusal = Refusal::CannotRecord {
                    why: Unavailable::NoKeys,
                    retry_after_s: cfg.sip.retry_after_s,
                };
                srs.reject(now, offer.call, refusal);
                return;
            }
            let busy = calls.len() + preparing.len();
            if busy >= cfg.sip.max_calls {
                refused_seen(shared, &Unavailable::CallLimit);
                let refusal = Refusal::CannotRecord {
                    why: Unavailable::CallLimit,
                    retry_after_s: cfg.sip.retry_after_s,
                };
                srs.reject(now, offer.call, refusal);
                return;
            }
            if let Err(why) = admit(shared) {
                refused_seen(shared, &why);
                let refusal = Refusal::CannotRecord {
                    why,
                    retry_after_s: cfg.sip.retry_after_s,
                };
                srs.reject(now, offer.call, refusal);
                return;
            }
            let decision = decide(shared, &offer);
            if !decision.record {
                // Policy says do not record: answer 200 OK with every stream declined
                // (port 0), keep no media and no file (see docs/lifecycle.md).
                tracing::info!(rule = ?decision.rule, "call not recorded by rule");
                shared.catalog.send(CatalogCmd::Audit(
                    "rule".into(),
                    "call.not_recorded".into(),
                    offer.call_id.clone(),
                    serde_json::json!({ "rule": decision.rule, "src": offer.src, "src_identity": offer.src_identity, "direction": decision.direction.as_str() }),
                ));
                crate::app::assurance::call_seen(
                    &shared.catalog,
                    crate::catalog::Source::Siprec,
                    crate::assurance::Verdict::NotRecorded,
                    "rule",
                    decision.rule.clone(),
                    Some(decision.direction.as_str().to_string()),
                );
                skipped.insert(offer.call);
                srs.accept(now, offer.call, &[]);
                return;
            }
            tracing::info!(src = %offer.src, identity = ?offer.src_identity, "recording session offered");
            if offer.streams_over_cap > 0 {
                tracing::warn!(
                    over_cap = offer.streams_over_cap,
                    recorded = offer.recordable.len(),
                    "INVITE offers more audio streams than sip.limits.max_streams_per_call: the rest are declined (port 0)"
                );
            }
            if let Some(r) = &offer.not_siprec_reason {
                tracing::info!(reason = %r, "INVITE is not SIPREC: recording its SDP streams without metadata");
            }
            preparing.insert(offer.call, false);
            let shared = shared.clone();
            let tx = in_tx.clone();
            tokio::spawn(async move {
                let call = offer.call;
                let res = prepare(shared, *offer, decision).await;
                let _ = tx.send(Inbound::Prepared(call, res)).await;
            });
        }
        SrsEvent::Established { call } => {
            tracing::debug!(?call, "session established");
            if let Some(c) = calls.get(&call) {
                let _ = c.tx.send(CallCmd::Confirmed);
            }
        }
        SrsEvent::MediaUpdated { call, .. } | SrsEvent::Metadata { call, .. }
            if skipped.contains(&call) => {}
        SrsEvent::Ended { call, .. } if skipped.contains(&call) => {
            skipped.remove(&call);
        }
        SrsEvent::MediaUpdated {
            call,
            streams,
            sip_method,
        } => {
            if let Some(c) = calls.get(&call) {
                tracing::info!(recording = %c.recording_id, method = %sip_method, "media description updated");
                let _ = c.tx.send(CallCmd::Streams(streams));
            }
        }
        SrsEvent::Metadata {
            call,
            version,
            merged,
            channels,
        } => {
            if let Some(c) = calls.get(&call) {
                if let Some(detail) = metadata_unusable(&c.recording_id, &version) {
                    let _ =
                        c.tx.send(CallCmd::EventWith(METADATA_UNUSABLE.into(), detail));
                }
                store_metadata(
                    shared,
                    &c.recording_id,
                    &version,
                    merged.as_ref(),
                    &channels,
                );
            }
        }
        SrsEvent::Ended {
            call,
            reason,
            cause,
        } => {
            if let Some(c) = calls.remove(&call) {
                shared
                    .live
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&c.recording_id);
                // We ended the session ourselves (BYE sent): say why in the recording.
                if let Some(kind) = cause.and_then(|c| c.event_kind()) {
                    tracing::info!(recording = %c.recording_id, event = kind, "we ended the session with BYE");
                    let _ = c.tx.send(CallCmd::Event(kind.to_string()));
                }
                let _ = c.tx.send(CallCmd::End(reason));
            } else if let Some(e) = preparing.get_mut(&call) {
                *e = true;
            }
        }
    }
}

/// Whether the box can take a new call now (storage); `Err` says why not.
/// The rate-limited WARN for requests refused at the SIP transaction cap.
#[derive(Default)]
struct TxnCapLog {
    /// Refusals already logged.
    logged: u64,
    last: Option<std::time::Instant>,
}

/// At most one transaction-cap WARN this often.
const TXN_CAP_LOG_EVERY: Duration = Duration::from_secs(10);

impl TxnCapLog {
    fn observe(&mut self, refused: u64, live: usize, cap: usize) {
        if refused <= self.logged {
            return;
        }
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < TXN_CAP_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            refused = refused - self.logged,
            refused_total = refused,
            live,
            max_transactions = cap,
            "SIP transaction table full: new requests answered 503 (raise [sip] max_transactions if this is load, not a flood)"
        );
        self.logged = refused;
        self.last = Some(now);
    }
}

fn admit(shared: &Shared) -> Result<(), Unavailable> {
    let cfg = &shared.cfg;
    if shared.gate.refusing() {
        tracing::error!(
            "data disk over the high watermark with only protected recordings: refusing calls"
        );
        return Err(Unavailable::Storage(
            "storage full: only protected recordings remain".into(),
        ));
    }
    let stalled = crate::app::sink::STORAGE_HEALTH
        .stalled
        .load(std::sync::atomic::Ordering::Relaxed);
    if stalled > 0 {
        tracing::error!(
            stalled,
            "recording writes failing (disk full or I/O error): refusing calls"
        );
        shared.gate.poke();
        return Err(Unavailable::Storage(
            "storage full: recording writes are failing".into(),
        ));
    }
    match free_mb(&cfg.storage.data_dir) {
        Ok(mb) if mb < cfg.storage.min_free_mb => {
            tracing::error!(free_mb = mb, "data disk nearly full: refusing calls");
            shared.gate.poke();
            Err(Unavailable::Storage("storage full".into()))
        }
        Err(e) => {
            tracing::error!(error = %e, "data disk unusable: refusing calls");
            Err(Unavailable::Storage("storage unavailable".into()))
        }
        Ok(_) => {
            if let Ok(u) = crate::app::retention::disk_usage(&cfg.storage.data_dir) {
                if u.used_pct() >= f64::from(cfg.retention.high_watermark_pct) {
                    shared.gate.poke();
                }
            }
            Ok(())
        }
    }
}

/// Evaluate the recording rules for an offered call.
fn decide(shared: &Shared, offer: &Offer) -> crate::lifecycle::rules::RuleDecision {
    use chrono::{Datelike, TimeZone};
    let now_ms = shared.clock.now_ms();
    let local = chrono::Local
        .timestamp_millis_opt(now_ms)
        .single()
        .unwrap_or_else(chrono::Local::now);
    let participants: Vec<String> = offer
        .parsed_metadata
        .as_ref()
        .map(|m| {
            m.participants
                .iter()
                .flat_map(|p| p.aors.iter().cloned())
                .collect()
        })
        .unwrap_or_default();
    let facts = crate::lifecycle::rules::CallFacts {
        participants,
        src_addr: offer.src.clone(),
        src_from: offer.from_uri.clone(),
        local_time: local.time(),
        weekday: Some(local.weekday()),
    };
    crate::lifecycle::rules::evaluate(&shared.cfg.rules, &shared.cfg.policy, &facts)
}

async fn prepare(
    shared: Arc<Shared>,
    offer: Offer,
    decision: crate::lifecycle::rules::RuleDecision,
) -> Result<PreparedCall, SetupError> {
    let setup = CallSetup {
        call_id: offer.call_id.clone(),
        src: offer.src.clone(),
        src_identity: offer.src_identity.clone(),
        streams: offer.streams.clone(),
        recordable: offer.recordable.clone(),
        sample_rate: crate::app::call::recording_rate(
            offer
                .recordable
                .iter()
                .filter_map(|i| offer.streams.get(*i))
                .flat_map(|s| s.formats.iter())
                .map(|f| (f.encoding.as_str(), f.clock_rate)),
        ),
        format: decision.format.unwrap_or(shared.cfg.storage.format),
    };
    let sample_rate = setup.sample_rate;
    let session_id = offer.parsed_metadata.as_ref().and_then(session_id_of);
    let shared2 = shared.clone();
    let codec = offered_codecs(&offer);
    let prepared = PreparedCall::prepare(shared, &setup, |id, path| NewRecording {
        id: id.to_string(),
        source: Source::Siprec,
        call_id: offer.call_id.clone(),
        session_id: session_id.clone(),
        src_addr: offer.src.clone(),
        started_at_ms: chrono::Utc::now().timestamp_millis(),
        codec,
        sample_rate,
        channels: offer.recordable.len() as u16,
        file_path: Some(path.to_string()),
        kek_id: Some(shared2.vault.kek_id()),
        storage_format: setup.format.as_str().to_string(),
    })
    .await?;
    shared2.catalog.send(CatalogCmd::Policy(
        prepared.id().to_string(),
        crate::catalog::lifecycle::Policy {
            rule: decision.rule.clone(),
            direction: Some(decision.direction.as_str().to_string()),
            retention_ms: shared2
                .cfg
                .retention
                .retention_ms(&decision.retention_class),
            retention_class: decision.retention_class.clone(),
            min_duration_ms: decision.min_duration_ms,
            tags: decision.tags.clone(),
        },
    ));
    if let Some(v) = &offer.metadata {
        if let Some(detail) = metadata_unusable(prepared.id(), v) {
            // The recording starts with the answer: the initial document's event is at 0.
            shared2.catalog.send(CatalogCmd::Events(
                prepared.id().to_string(),
                vec![crate::catalog::EventRow {
                    at_ms: 0,
                    kind: METADATA_UNUSABLE.into(),
                    channel: None,
                    detail_json: Some(detail),
                }],
            ));
        }
        store_metadata(
            &shared2,
            prepared.id(),
            v,
            offer.parsed_metadata.as_ref(),
            &offer.channels,
        );
    } else {
        store_channels(&shared2, prepared.id(), &offer.channels);
    }
    Ok(prepared)
}

/// The recording event raised for each metadata version the recorder cannot use.
const METADATA_UNUSABLE: &str = "metadata_unusable";

/// Issue #13 item 5: a metadata part that yields nothing (does not parse, or names no
/// participant or stream) is kept raw (`metadata_versions`) and raises a visible warning:
/// a WARN log line and a `metadata_unusable` event on the recording (one per such
/// version, so `recordings show` counts them). Returns the event's details, if unusable.
fn metadata_unusable(recording_id: &str, v: &MetadataVersion) -> Option<serde_json::Value> {
    let reason = crate::siprec::metadata::unusable_reason(&v.raw)?;
    tracing::warn!(
        recording = %recording_id,
        method = %v.sip_method,
        content_type = %v.content_type,
        %reason,
        "metadata_unusable: the SIPREC metadata gives no participants; kept raw"
    );
    Some(serde_json::json!({
        "reason": reason,
        "sip_method": v.sip_method,
        "content_type": v.content_type,
    }))
}

fn offered_codecs(offer: &Offer) -> String {
    let mut names: Vec<String> = offer
        .recordable
        .iter()
        .filter_map(|i| offer.streams.get(*i))
        .filter_map(|s| {
            s.formats
                .iter()
                .find(|f| crate::media::codec::is_audio_encoding(&f.encoding))
                .map(|f| f.encoding.to_ascii_uppercase())
        })
        .collect();
    names.sort();
    names.dedup();
    names.join("+")
}

fn session_id_of(m: &RecordingMetadata) -> Option<String> {
    m.sessions.first().map(|s| s.id.clone())
}

fn store_metadata(
    shared: &Shared,
    id: &str,
    v: &MetadataVersion,
    merged: Option<&RecordingMetadata>,
    channels: &[ChannelAssignment],
) {
    let received_at = chrono::Utc::now().timestamp_millis()
        - crate::clock::MonoClock::process()
            .now()
            .saturating_duration_since(v.received_at)
            .as_millis() as i64;
    shared.catalog.send(CatalogCmd::Metadata(
        id.to_string(),
        CatMetadata {
            received_at_ms: received_at,
            sip_method: v.sip_method.clone(),
            content_type: v.content_type.clone(),
            data_mode: v
                .data_mode
                .as_deref()
                .and_then(|d| d.parse::<DataMode>().ok()),
            raw: v.raw.clone(),
        },
    ));
    if let Some(m) = merged {
        if let Some(sid) = session_id_of(m) {
            shared
                .catalog
                .send(CatalogCmd::SessionId(id.to_string(), sid));
        }
        let ps = participant_rows(m, channels, received_at);
        shared.catalog.send(CatalogCmd::ParticipantSnapshot(
            id.to_string(),
            ps,
            received_at,
        ));
    }
    store_channels(shared, id, channels);
}

/// The participants of a (merged) metadata document as catalogue rows, with the times
/// they joined and left — RFC 7865 `<associate-time>`/`<disassociate-time>` on the
/// participant or its `<participantsessionassoc>`, else the arrival of this version
/// (`received_at`, unix ms) — and the channel the channel map hears them on. The catalogue
/// keeps the earliest join and everyone a later snapshot drops (issue #13 item 3).
fn participant_rows(
    m: &RecordingMetadata,
    channels: &[ChannelAssignment],
    received_at: i64,
) -> Vec<ParticipantRow> {
    let ms = |t: Option<&String>| {
        t.and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
            .map(|t| t.timestamp_millis())
    };
    m.participants
        .iter()
        .map(|p| {
            let assocs: Vec<_> = m
                .participant_session_assocs
                .iter()
                .filter(|a| a.participant_id == p.id)
                .collect();
            let joined = ms(p.associate_time.as_ref())
                .or_else(|| assocs.iter().find_map(|a| ms(a.associate_time.as_ref())));
            let left = if m.is_active(p) {
                None
            } else {
                ms(p.disassociate_time.as_ref())
                    .or_else(|| assocs.iter().find_map(|a| ms(a.disassociate_time.as_ref())))
                    .or(Some(received_at))
            };
            ParticipantRow {
                participant_id: p.id.clone(),
                name: p.names.first().cloned(),
                aor: p.aors.first().cloned(),
                other_names: p.names.iter().skip(1).cloned().collect(),
                other_aors: p.aors.iter().skip(1).cloned().collect(),
                joined_at_ms: joined.or(Some(received_at)),
                left_at_ms: left,
                channel: channels
                    .iter()
                    .position(|c| c.participant_id.as_deref() == Some(p.id.as_str()))
                    .map(|c| c as u32),
            }
        })
        .collect()
}

fn store_channels(shared: &Shared, id: &str, channels: &[ChannelAssignment]) {
    let rows: Vec<ChannelRow> = channels
        .iter()
        .enumerate()
        .map(|(ch, c)| ChannelRow {
            channel: ch as u32,
            mline: Some(c.mline as u32),
            label: c.label.clone(),
            stream_id: c.stream_id.clone(),
            participant_id: c.participant_id.clone(),
            mapping_source: match c.source {
                crate::siprec::MappingSource::Metadata => MappingSource::Metadata,
                crate::siprec::MappingSource::MlineOrderFallback => MappingSource::MlineOrder,
            },
        })
        .collect();
    shared
        .catalog
        .send(CatalogCmd::Channels(id.to_string(), rows));
}

/// Sessions admitted by the per-source limiter, until confirmed or ended.
struct PendingSessions {
    gate: Arc<Gate>,
    by_call: HashMap<DialogId, std::net::IpAddr>,
}

impl PendingSessions {
    fn offered(&mut self, call: DialogId, ip: std::net::IpAddr) -> bool {
        if !self.gate.limiter().session_offered(ip) {
            return false;
        }
        self.by_call.insert(call, ip);
        true
    }

    fn done(&mut self, call: DialogId) {
        if let Some(ip) = self.by_call.remove(&call) {
            self.gate.limiter().session_confirmed(ip);
        }
    }
}

async fn send(
    udp: &HashMap<SocketAddr, Arc<UdpSocket>>,
    tcp: &HashMap<u64, mpsc::Sender<Vec<u8>>>,
    peer: Peer,
    data: Vec<u8>,
) {
    match peer.transport {
        Transport::Udp => {
            let sock = udp.get(&peer.local).or_else(|| udp.values().next());
            if let Some(s) = sock {
                if let Err(e) = s.send_to(&data, peer.remote).await {
                    tracing::warn!(error = %e, "SIP send failed");
                }
            }
        }
        Transport::Tcp | Transport::Tls => {
            match peer
                .conn
                .and_then(|c| tcp.get(&c))
                .map(|tx| tx.try_send(data))
            {
                Some(Ok(())) => {}
                Some(Err(mpsc::error::TrySendError::Full(_))) => {
                    // A peer that does not read its responses: bounded, not buffered.
                    tracing::warn!(peer = %peer.remote, "SIP send queue of a TCP connection full: response dropped");
                }
                _ => tracing::warn!("SIP response for a closed TCP connection dropped"),
            }
        }
    }
}

async fn udp_reader(
    s: Arc<UdpSocket>,
    local: SocketAddr,
    gate: Arc<Gate>,
    tx: mpsc::Sender<Inbound>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match s.recv_from(&mut buf).await {
            Ok((_, remote)) if !gate.allowed.allows(remote.ip()) => {
                // Not a word back: an unlisted source learns nothing about us.
                gate.counters.udp_denied();
                gate.deny_log.note(remote, "udp");
            }
            Ok((n, remote)) => {
                let peer = Peer {
                    transport: Transport::Udp,
                    remote,
                    local,
                    conn: None,
                };
                if !gate.within_rate(&peer) {
                    // Over the source's rate: dropped unanswered (counted by the core).
                    gate.deny_log.note(remote, "rate");
                    continue;
                }
                let data = buf.get(..n).map(<[u8]>::to_vec).unwrap_or_default();
                if tx.send(Inbound::Datagram(peer, data)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "SIP UDP receive error");
            }
        }
    }
}

async fn tcp_acceptor(lst: TcpListener, gate: Arc<Gate>, tx: mpsc::Sender<Inbound>) {
    let mut errors = crate::app::accept::AcceptErrors::new("SIP TCP");
    loop {
        match lst.accept().await {
            Ok((stream, remote)) if !gate.allowed.allows(remote.ip()) => {
                gate.counters.tcp_denied();
                gate.deny_log.note(remote, "tcp");
                drop(stream);
            }
            Ok((stream, remote)) => {
                if let Err(why) = gate.limiter().tcp_opened(remote.ip()) {
                    gate.deny_log.note(
                        remote,
                        match why {
                            ConnRefusal::Total => "tcp_max_connections",
                            ConnRefusal::PerSource => "tcp_max_connections_per_source",
                        },
                    );
                    drop(stream);
                    continue;
                }
                let slot = TcpSlot(gate.clone(), remote.ip());
                let id = gate.conn_id();
                let local = stream.local_addr().unwrap_or(remote);
                let (tx, gate) = (tx.clone(), gate.clone());
                tokio::spawn(async move {
                    stream_conn(stream, Transport::Tcp, id, remote, local, &gate, tx).await;
                    drop(slot);
                });
            }
            Err(e) => errors.failed(&e).await,
        }
    }
}

/// SIP over TLS: handshake (mutual authentication, allowlist) in a task per connection,
/// then the same framing and routing as TCP.
async fn tls_acceptor(
    lst: TcpListener,
    server: Arc<TlsServer>,
    gate: Arc<Gate>,
    tx: mpsc::Sender<Inbound>,
) {
    let mut errors = crate::app::accept::AcceptErrors::new("SIP TLS");
    loop {
        match lst.accept().await {
            Ok((stream, remote)) => {
                let (server, gate, tx) = (server.clone(), gate.clone(), tx.clone());
                tokio::spawn(async move {
                    let local = stream.local_addr().unwrap_or(remote);
                    let Some(acc) = server.accept(stream, remote, &gate.counters).await else {
                        return;
                    };
                    let id = gate.conn_id();
                    tracing::info!(peer = %remote, conn = id, version = %acc.version,
                        identities = ?acc.identities, "SIP over TLS connection accepted");
                    // Dialogs over TLS are bound to this identity (a reconnect of the same
                    // SRC may continue them, another SRC may not).
                    let mut ids = acc.identities.clone();
                    ids.sort();
                    if !ids.is_empty()
                        && tx
                            .send(Inbound::TlsIdentity(id, ids.join(", ")))
                            .await
                            .is_err()
                    {
                        return;
                    }
                    stream_conn(acc.stream, Transport::Tls, id, remote, local, &gate, tx).await;
                    drop(acc.slot);
                    tracing::debug!(peer = %remote, conn = id, "SIP over TLS connection closed");
                });
            }
            Err(e) => errors.failed(&e).await,
        }
    }
}

/// One TCP or TLS connection: Content-Length framing in, responses out on the same
/// connection. Closed when the peer sends nothing for `tcp_idle_timeout_s`, when a
/// message it began is not complete within `tcp_message_timeout_ms` (a Content-Length
/// larger than the body must not hold the connection for ever), or when it does not
/// frame; at most `tcp_send_queue` responses wait for a peer that does not read.
async fn stream_conn<S>(
    stream: S,
    transport: Transport,
    id: u64,
    remote: SocketAddr,
    local: SocketAddr,
    gate: &Gate,
    tx: mpsc::Sender<Inbound>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(gate.conn.queue.max(1));
    let pong = out_tx.clone();
    if tx.send(Inbound::TcpOpened(id, out_tx)).await.is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(d) = out_rx.recv().await {
            // flush: TLS holds records until flushed; a no-op for TCP.
            if wr.write_all(&d).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    let peer = Peer {
        transport,
        remote,
        local,
        conn: Some(id),
    };
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    // When the message now buffered (incomplete) began.
    let mut partial_since: Option<std::time::Instant> = None;
    'read: loop {
        let wait = match partial_since {
            Some(t) => gate
                .conn
                .message
                .saturating_sub(t.elapsed())
                .min(gate.conn.idle),
            None => gate.conn.idle,
        };
        let n = match tokio::time::timeout(wait, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_) if partial_since.is_some_and(|t| t.elapsed() >= gate.conn.message) => {
                tracing::warn!(%remote, ?transport, buffered = framer.buffered(),
                    "SIP message not complete within sip.limits.tcp_message_timeout_ms: closing connection");
                break;
            }
            Err(_) => {
                tracing::info!(%remote, ?transport, "SIP connection idle for sip.limits.tcp_idle_timeout_s: closing it");
                break;
            }
        };
        let chunk = buf.get(..n).unwrap_or_default();
        // RFC 5626 §4.4.1 keep-alive: a CRLFCRLF ping between messages gets a CRLF pong
        // (SBCs use it to check TCP/TLS connections to the recorder).
        if framer.buffered() == 0 && chunk == b"\r\n\r\n" {
            let _ = pong.try_send(b"\r\n".to_vec());
            continue;
        }
        framer.push(chunk);
        let mut framed = false;
        loop {
            // Frames go through the endpoint as bytes so a malformed one still gets its 400.
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    framed = true;
                    if !gate.within_rate(&peer) {
                        gate.deny_log.note(remote, "rate");
                        continue;
                    }
                    if tx.send(Inbound::Datagram(peer, frame)).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, ?transport, "unframeable SIP: closing connection");
                    break 'read;
                }
            }
        }
        partial_since = match (framer.buffered(), partial_since) {
            (0, _) => None,
            (_, Some(t)) if !framed => Some(t),
            _ => Some(std::time::Instant::now()),
        };
    }
    writer.abort();
    let _ = tx.send(Inbound::TcpClosed(id)).await;
}
