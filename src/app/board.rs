//! The front-panel shell: samples the hold button, feeds the sans-IO
//! [`Button`](crate::board::button::Button) and [`Leds`](crate::board::leds::Leds)
//! machines, places the button's legal hold, drives the LED lines, and keeps the status
//! the control socket serves (`{"cmd":"board"}`, shown by `branchrec status`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::app::uplink::UplinkShared;
use crate::app::Shared;
use crate::board::button::{Button, ButtonEvent};
use crate::board::leds::{Leds, Pattern, Patterns, Snapshot, UplinkView};
use crate::board::{Board, BoardShared, BoardStatus, HoldStatus, LedStatus, PressStatus};
use crate::clock::MonoClock;
use crate::lifecycle::holds::HoldTarget;
use crate::service::holds::PlacedHold;
use crate::time::{Mono, UnixMs};

/// Operator recorded for holds placed with the button.
pub const BUTTON_OPERATOR: &str = "button";

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Whole milliseconds (for the status and the logs).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn pattern_name(p: Pattern) -> &'static str {
    match p {
        Pattern::Off => "off",
        Pattern::On => "on",
        Pattern::Blink => "blink",
        Pattern::FastBlink => "fast_blink",
    }
}

/// Drive the board until the task is aborted.
pub async fn run(
    shared: Arc<Shared>,
    mut board: Board,
    bs: Arc<BoardShared>,
    uplink: Option<Arc<UplinkShared>>,
    signer: Option<Arc<crate::vault::HeadSigner>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let bcfg = shared.cfg.board.clone();
    tracing::info!(
        kind = %board.info.kind,
        board = %board.info.board,
        pins = ?board.info.pins_file,
        "front panel: {} board{}",
        board.info.kind,
        if board.info.kind == "sim" {
            " (simulated: LED changes are logged; press with `branchrec board press`)"
        } else {
            ""
        }
    );
    let clock = MonoClock::new();
    let mono = move || clock.now();
    let mut leds = Leds::new(bcfg.led_config());
    let mut button = Button::new(bcfg.button_config());
    let (snap_tx, mut snap_rx) = watch::channel(Snapshot::default());
    let collector = tokio::spawn(collect(shared.clone(), uplink, snap_tx));
    let (hold_tx, mut hold_rx) = mpsc::unbounded_channel::<Result<PlacedHold, String>>();
    let mut tick = tokio::time::interval(Duration::from_millis(bcfg.poll_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events = Vec::new();
    let mut last_patterns: Option<Patterns> = None;
    let mut last_levels = None;
    let mut last_press: Option<(Mono, PressStatus)> = None;
    let mut last_hold: Option<HoldStatus> = None;
    let mut hold_in_flight = false;
    let mut io_error: Option<String> = None;
    let mut last_status = Mono::ZERO;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => {
                // Stopping: nothing is recorded any more. FAULT alone stays lit (on boards
                // whose lines keep their level once released).
                let off = crate::board::leds::Levels { fault: true, ..Default::default() };
                if let Err(e) = board.io.set(off) {
                    tracing::warn!(error = %e, "front panel: could not set the stopped state");
                }
                tracing::info!("front panel: stopped (FAULT on, other LEDs off)");
                collector.abort();
                return;
            }
        }
        let now = mono();
        let mut changed = false;
        if snap_rx.has_changed().unwrap_or(false) {
            leds.update(now, snap_rx.borrow_and_update().clone());
        }
        // Button.
        match board.io.pressed() {
            Ok(p) => button.sample(now, p, &mut events),
            Err(e) => note_io_error(&mut io_error, e),
        }
        for ev in events.drain(..) {
            changed = true;
            let wall = |at: Mono| {
                chrono::Utc::now().timestamp_millis()
                    - millis(now.saturating_duration_since(at)) as i64
            };
            match ev {
                ButtonEvent::Pressed { at } => {
                    tracing::info!("hold button pressed");
                    last_press = Some((
                        at,
                        PressStatus {
                            at: rfc3339(wall(at)),
                            held_ms: 0,
                            action: "none".into(),
                        },
                    ));
                }
                ButtonEvent::Released { held, .. } => {
                    let held_ms = millis(held);
                    tracing::info!(held_ms, "hold button released");
                    if let Some((_, p)) = &mut last_press {
                        p.held_ms = held_ms;
                    }
                }
                ButtonEvent::Suppressed { at, next_allowed } => {
                    tracing::warn!(
                        wait_s = next_allowed.saturating_duration_since(at).as_secs(),
                        "hold button: long press ignored, too soon after the last hold ([board] min_hold_interval_s)"
                    );
                    set_action(&mut last_press, "suppressed");
                }
                ButtonEvent::LongPress { .. } if hold_in_flight => {
                    tracing::warn!(
                        "hold button: long press ignored, the last hold is still being committed"
                    );
                    set_action(&mut last_press, "busy");
                }
                ButtonEvent::LongPress { .. } => {
                    set_action(&mut last_press, "hold");
                    hold_in_flight = true;
                    leds.hold_pending();
                    let now_wall = shared.clock.now_ms();
                    last_hold = Some(HoldStatus {
                        state: "pending".into(),
                        at: rfc3339(now_wall),
                        ..Default::default()
                    });
                    spawn_hold(&shared, signer.clone(), now_wall, hold_tx.clone());
                }
            }
        }
        if let Some((at, p)) = &mut last_press {
            if button.is_pressed() {
                p.held_ms = millis(now.saturating_duration_since(*at));
            }
        }
        // Hold results.
        while let Ok(r) = hold_rx.try_recv() {
            changed = true;
            hold_in_flight = false;
            let h = last_hold.get_or_insert_with(Default::default);
            match r {
                Ok(placed) => {
                    tracing::warn!(
                        hold = placed.id,
                        recordings = placed.recordings,
                        "LEGAL HOLD placed with the hold button (durable)"
                    );
                    leds.hold_durable(mono());
                    h.state = "durable".into();
                    h.hold_id = Some(placed.id);
                    h.recordings = Some(placed.recordings);
                }
                Err(e) => {
                    tracing::error!(error = %e, "hold button: the legal hold could NOT be placed");
                    leds.hold_failed(mono());
                    h.state = "failed".into();
                    h.error = Some(e);
                }
            }
        }
        // LEDs.
        let now = mono();
        let patterns = leds.patterns(now);
        if last_patterns != Some(patterns) {
            changed = true;
            tracing::info!(
                rec = pattern_name(patterns.rec),
                sync = pattern_name(patterns.sync),
                fault = pattern_name(patterns.fault),
                hold = pattern_name(patterns.hold),
                faults = ?leds.faults(now),
                "LEDs"
            );
            last_patterns = Some(patterns);
        }
        let levels = patterns.levels(now);
        if last_levels != Some(levels) {
            match board.io.set(levels) {
                Ok(()) => last_levels = Some(levels),
                Err(e) => note_io_error(&mut io_error, e),
            }
        }
        if changed || now.saturating_duration_since(last_status) >= Duration::from_millis(100) {
            last_status = now;
            let led = |p: Pattern| LedStatus {
                pattern: pattern_name(p).into(),
                lit: p.level(now),
            };
            let st = BoardStatus {
                info: board.info.clone(),
                leds: [
                    ("rec".to_string(), led(patterns.rec)),
                    ("sync".to_string(), led(patterns.sync)),
                    ("fault".to_string(), led(patterns.fault)),
                    ("hold".to_string(), led(patterns.hold)),
                ]
                .into_iter()
                .collect(),
                faults: leds.faults(now).iter().map(|s| s.to_string()).collect(),
                button_pressed: button.is_pressed(),
                last_press: last_press.as_ref().map(|(_, p)| p.clone()),
                last_hold: last_hold.clone(),
                io_error: io_error.clone(),
            };
            *bs.status.lock().unwrap_or_else(|e| e.into_inner()) = Some(st);
        }
        if collector.is_finished() {
            tracing::error!("front panel: the state collector stopped");
            return;
        }
    }
}

fn set_action(p: &mut Option<(Mono, PressStatus)>, action: &str) {
    if let Some((_, p)) = p {
        p.action = action.into();
    }
}

fn note_io_error(slot: &mut Option<String>, e: String) {
    if slot.as_deref() != Some(e.as_str()) {
        tracing::error!(error = %e, "front panel: GPIO line error");
        *slot = Some(e);
    }
}

/// Place the button's hold off the runtime: calls in progress and those ended in the last
/// `hold_window_min` minutes, through the same code path as `branchrec hold add`.
fn spawn_hold(
    shared: &Arc<Shared>,
    signer: Option<Arc<crate::vault::HeadSigner>>,
    now_ms: i64,
    tx: mpsc::UnboundedSender<Result<PlacedHold, String>>,
) {
    let cfg = shared.cfg.clone();
    let access = shared.catalog_access.clone();
    tokio::task::spawn_blocking(move || {
        let window_ms = i64::try_from(cfg.board.hold_window_min)
            .unwrap_or(i64::MAX / 60_000)
            .saturating_mul(60_000);
        let target = HoldTarget::Window {
            from: UnixMs(now_ms.saturating_sub(window_ms)),
            to: UnixMs(now_ms),
        };
        let box_id = if cfg.uplink.box_id.is_empty() {
            "unnamed-box".to_string()
        } else {
            cfg.uplink.box_id.clone()
        };
        let reason = format!(
            "hold button pressed on box {box_id}: calls in progress and ended in the last {} min",
            cfg.board.hold_window_min
        );
        let res = access
            .open_existing()
            .map_err(anyhow::Error::from)
            .and_then(|mut cat| {
                crate::service::holds::place_hold(
                    &mut cat,
                    &cfg,
                    &target,
                    &reason,
                    BUTTON_OPERATOR,
                    now_ms,
                    signer.as_deref(),
                )
            })
            .map_err(|e| format!("{e:#}"));
        let _ = tx.send(res);
    });
}

/// Every second: what the LEDs need to know about the daemon.
async fn collect(
    shared: Arc<Shared>,
    uplink: Option<Arc<UplinkShared>>,
    tx: watch::Sender<Snapshot>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cat: Option<crate::catalog::Catalog> = None;
    let capture_stats = shared.cfg.storage.data_dir.join("capture-stats.json");
    let capture_on = !shared.cfg.capture.interfaces.is_empty();
    loop {
        tick.tick().await;
        let (recording, paused) = {
            let live = shared.live.lock().unwrap_or_else(|e| e.into_inner());
            let paused = live
                .values()
                .filter(|c| c.paused.load(Ordering::Relaxed))
                .count();
            (live.len(), paused)
        };
        let (passive, drops) = if capture_on {
            read_capture_stats(&capture_stats).await
        } else {
            (0, 0)
        };
        let uplink_view = match &uplink {
            None => UplinkView::Disabled,
            Some(u) => {
                let access = shared.catalog_access.clone();
                let c = cat.take();
                let res = tokio::task::spawn_blocking(move || {
                    let c = match c {
                        Some(c) => c,
                        None => access.open_read_only()?,
                    };
                    let counts = c.uplink_counts()?;
                    Ok::<_, crate::catalog::CatalogError>((c, counts))
                })
                .await;
                let (pending, uploaded) = match res {
                    Ok(Ok((c, counts))) => {
                        cat = Some(c);
                        (counts.pending, counts.uploaded)
                    }
                    _ => (0, 0),
                };
                let link_up = !u
                    .alarms()
                    .iter()
                    .any(|a| matches!(a.code.as_str(), "link" | "tls" | "auth"));
                UplinkView::Enabled {
                    link_up,
                    pending,
                    progress: u.shaper.bytes_sent().saturating_add(uploaded),
                }
            }
        };
        let snap = Snapshot {
            recording: u32::try_from(recording + passive).unwrap_or(u32::MAX),
            paused: u32::try_from(paused).unwrap_or(u32::MAX),
            uplink: uplink_view,
            key_fault: shared.keys_error.is_some(),
            disk_high: shared.gate.refusing()
                || shared.gate.used_pct() >= f64::from(shared.cfg.retention.high_watermark_pct),
            capture_drops: drops,
            assurance_alarm: !crate::app::assurance::snapshot().alarms.is_empty(),
        };
        tx.send_if_modified(|old| {
            let differs = *old != snap;
            *old = snap;
            differs
        });
    }
}

/// (calls being recorded by the passive capture, packets dropped) from
/// `<data_dir>/capture-stats.json`.
async fn read_capture_stats(path: &std::path::Path) -> (usize, u64) {
    let Ok(bytes) = tokio::fs::read(path).await else {
        return (0, 0);
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return (0, 0);
    };
    let calls = v["recording_calls"].as_u64().unwrap_or(0) as usize;
    let drops = v["interfaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["dropped"].as_u64().unwrap_or(0) + i["if_dropped"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    (calls, drops)
}
