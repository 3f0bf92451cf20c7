#!/usr/bin/env python3
"""A real SIP stack (PJSIP, through the pjsua2 Python binding from the `pjsua2-python`
wheel) as a SIPREC recording client (SRC), driven by tests/siprec_realstack.rs.

One recording session against the SRS at --srs:
  1. INVITE with two audio streams (a=label:1 / a=label:2) and a multipart/mixed body
     (SDP + application/rs-metadata+xml, RFC 7865: Alice sends stream 1, Bob stream 2),
     Require: siprec, Contact ;+sip.src, session timer (Session-Expires 90, PJSIP refresher
     logic). Burst 1: <a1> on stream 1, <b1> on stream 2.
  2. Pause: re-INVITE with both streams a=inactive (PJSUA_CALL_SET_MEDIA_DIR).
  3. Resume: re-INVITE with both streams sendonly. Burst 2: <a2>, <b2>.
  4. Transfer: re-INVITE carrying a complete metadata snapshot in which Charlie replaced
     Bob (Bob's participant gone, Charlie sends stream 2). Burst 3: <a3>, <c3>.
  5. Session-timer refresh: UPDATE (PJSIP adds Session-Expires to it).
  6. BYE.
Audio: 8 kHz mono s16le raw files played by AudioMediaPlayer into each stream's
AudioMedia (PCMU only, no VAD, null sound device): what PJSIP encodes is exactly the
G.711 of these samples. Every wait is bounded. Writes --result (JSON: marks in ms since
the script's start, the SIP messages PJSIP logged) and exits 0 only if every step
happened.
"""

import argparse
import json
import os
import sys
import time
import wave

import pjsua2 as pj

T0 = time.monotonic()


def now_ms():
    return int((time.monotonic() - T0) * 1000)


def metadata(version, second):
    """A complete RFC 7865 snapshot: Alice on stream 1 and `second` (id, aor, name) on 2."""
    pid, aor, name = second
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="UmVhbFN0YWNrU2Vzcw==">
    <sipSessionID>realstack-{version}</sipSessionID>
  </session>
  <participant participant_id="QWxpY2VBbGljZUE=">
    <nameID aor="sip:alice@realstack.example"><name>Alice</name></nameID>
  </participant>
  <participantsessionassoc participant_id="QWxpY2VBbGljZUE=" session_id="UmVhbFN0YWNrU2Vzcw==">
    <associate-time>2026-01-01T10:00:00Z</associate-time>
  </participantsessionassoc>
  <participant participant_id="{pid}">
    <nameID aor="{aor}"><name>{name}</name></nameID>
  </participant>
  <participantsessionassoc participant_id="{pid}" session_id="UmVhbFN0YWNrU2Vzcw==">
    <associate-time>{'2026-01-01T10:00:00Z' if version == 1 else '2026-01-01T10:00:09Z'}</associate-time>
  </participantsessionassoc>
  <stream stream_id="U3RyZWFtT25lMQ==" session_id="UmVhbFN0YWNrU2Vzcw=="><label>1</label></stream>
  <stream stream_id="U3RyZWFtVHdvMg==" session_id="UmVhbFN0YWNrU2Vzcw=="><label>2</label></stream>
  <participantstreamassoc participant_id="QWxpY2VBbGljZUE=">
    <send>U3RyZWFtT25lMQ==</send><recv>U3RyZWFtVHdvMg==</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="{pid}">
    <send>U3RyZWFtVHdvMg==</send><recv>U3RyZWFtT25lMQ==</recv>
  </participantstreamassoc>
</recording>
"""


BOB = ("Qm9iQm9iQm9iQm8=", "sip:bob@realstack.example", "Bob")
CHARLIE = ("Q2hhcmxpZUNoYXI=", "sip:charlie@realstack.example", "Charlie")


def tx_option(meta):
    o = pj.SipTxOption()
    h = pj.SipHeader()
    h.hName = "Require"
    h.hValue = "siprec"
    o.headers.append(h)
    ct = pj.SipMediaType()
    ct.type = "multipart"
    ct.subType = "mixed"
    o.multipartContentType = ct
    part = pj.SipMultipartPart()
    d = pj.SipHeader()
    d.hName = "Content-Disposition"
    d.hValue = "recording-session"
    part.headers.append(d)
    pct = pj.SipMediaType()
    pct.type = "application"
    pct.subType = "rs-metadata+xml"
    part.contentType = pct
    part.body = meta
    o.multipartParts.append(part)
    return o


class Call(pj.Call):
    def __init__(self, acc):
        super().__init__(acc)
        self.state = None
        self.media_ok = False
        self.answers = []

    def onCallState(self, prm):
        self.state = self.getInfo().state

    def onCallMediaState(self, prm):
        info = self.getInfo()
        self.media_ok = sum(
            1 for m in info.media if m.type == pj.PJMEDIA_TYPE_AUDIO
        ) == 2

    def onCallSdpCreated(self, prm):
        # Real SRCs label their streams (RFC 7866 §7.1.1); PJSIP does not: add a=label.
        lines = prm.sdp.wholeSdp.split("\r\n")
        out, n = [], 0
        for line in lines:
            out.append(line)
            if line.startswith("m=audio"):
                n += 1
                out.append(f"a=label:{n}")
        prm.sdp.wholeSdp = "\r\n".join(out)

    def onCallTsxState(self, prm):
        e = prm.e
        if e.type == pj.PJSIP_EVENT_TSX_STATE and e.body.tsxState.type == pj.PJSIP_EVENT_RX_MSG:
            self.answers.append(e.body.tsxState.src.rdata.wholeMsg)


def pump(ep, seconds, until=None):
    """Handle SIP events for up to `seconds` (or until `until()` holds)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ep.libHandleEvents(10)
        if until is not None and until():
            return True
    return until is None


def wav_of(raw, path):
    with open(raw, "rb") as f:
        data = f.read()
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(data)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--srs", required=True, help="host:port of the SRS")
    ap.add_argument("--sip-port", type=int, required=True)
    ap.add_argument("--rtp-port", type=int, required=True)
    ap.add_argument("--audio", nargs=6, required=True, metavar=("A1", "B1", "A2", "B2", "A3", "C3"))
    ap.add_argument("--burst-ms", type=int, default=1500)
    ap.add_argument("--gap-ms", type=int, default=1500)
    ap.add_argument("--result", required=True)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    marks = {}
    result = {"marks": marks, "ok": False, "error": None}

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "pjsua2-src (branchrec realstack test)"
    cfg.logConfig.level = 5
    cfg.logConfig.consoleLevel = 1
    cfg.logConfig.msgLogging = 1
    cfg.logConfig.filename = a.log
    cfg.medConfig.clockRate = 8000
    cfg.medConfig.sndClockRate = 8000
    cfg.medConfig.channelCount = 1
    cfg.medConfig.noVad = True
    cfg.medConfig.ecTailLen = 0
    cfg.medConfig.quality = 10
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = a.sip_port
    tcfg.boundAddress = "127.0.0.1"
    tcfg.publicAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.audDevManager().setNullDev()
    ep.libStart()
    for c in ep.codecEnum2():
        ep.codecSetPriority(c.codecId, 255 if c.codecId.startswith("PCMU/8000") else 0)

    acfg = pj.AccountConfig()
    acfg.idUri = "sip:src@127.0.0.1:%d" % a.sip_port
    acfg.sipConfig.contactParams = ";+sip.src"
    acfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_ALWAYS
    acfg.callConfig.timerSessExpiresSec = 90
    acfg.callConfig.timerMinSESec = 90
    acfg.mediaConfig.transportConfig.port = a.rtp_port
    acfg.mediaConfig.transportConfig.portRange = 20
    acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    acfg.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
    acc = pj.Account()
    acc.create(acfg)

    wavs = [wav_of(r, os.path.join(os.path.dirname(a.result), f"burst{i}.wav")) for i, r in enumerate(a.audio)]
    players = []

    def play(call, i, stream):
        # The previous burst's player (at its end, silent) leaves the stream first: each
        # stream carries exactly one file at a time.
        for k, (old, st) in enumerate(players):
            if st == stream and old is not None:
                try:
                    old.stopTransmit(call.getAudioMedia(stream))
                except pj.Error:
                    pass
                players[k] = (None, st)
        p = pj.AudioMediaPlayer()
        p.createPlayer(wavs[i], pj.PJMEDIA_FILE_NO_LOOP)
        p.startTransmit(call.getAudioMedia(stream))
        players.append((p, stream))

    def setting(direction):
        s = pj.CallSetting(True)
        s.audioCount = 2
        s.videoCount = 0
        s.flag |= pj.PJSUA_CALL_SET_MEDIA_DIR
        s.mediaDir = pj.IntVector([direction, direction]) if hasattr(pj, "IntVector") else [direction, direction]
        return s

    def reinvite(call, direction, meta=None, what=""):
        prm = pj.CallOpParam(True)
        prm.opt = setting(direction)
        if meta is not None:
            prm.txOption = tx_option(meta)
        n = len(call.answers)
        call.reinvite(prm)
        ok = pump(ep, 10, lambda: any(" 200 " in m.split("\r\n", 1)[0] for m in call.answers[n:]))
        if not ok:
            raise RuntimeError(f"no 200 to the {what} re-INVITE")

    call = Call(acc)
    try:
        prm = pj.CallOpParam(True)
        prm.opt = setting(pj.PJMEDIA_DIR_ENCODING)
        prm.txOption = tx_option(metadata(1, BOB))
        marks["invite"] = now_ms()
        call.makeCall("sip:srs@%s" % a.srs, prm)
        if not pump(ep, 15, lambda: call.state == pj.PJSIP_INV_STATE_CONFIRMED and call.media_ok):
            raise RuntimeError(f"call not confirmed with 2 audio streams (state {call.state})")
        marks["confirmed"] = now_ms()
        play(call, 0, 0)
        play(call, 1, 1)
        marks["burst1"] = now_ms()
        pump(ep, (a.burst_ms + a.gap_ms) / 1000)

        marks["pause"] = now_ms()
        reinvite(call, pj.PJMEDIA_DIR_NONE, what="pause")
        marks["paused"] = now_ms()
        pump(ep, 1.0)

        marks["resume"] = now_ms()
        reinvite(call, pj.PJMEDIA_DIR_ENCODING, what="resume")
        marks["resumed"] = now_ms()
        play(call, 2, 0)
        play(call, 3, 1)
        marks["burst2"] = now_ms()
        pump(ep, (a.burst_ms + a.gap_ms) / 1000)

        marks["transfer"] = now_ms()
        reinvite(call, pj.PJMEDIA_DIR_ENCODING, metadata(3, CHARLIE), what="transfer")
        marks["transferred"] = now_ms()
        play(call, 4, 0)
        play(call, 5, 1)
        marks["burst3"] = now_ms()
        pump(ep, (a.burst_ms + a.gap_ms) / 1000)

        marks["update"] = now_ms()
        n = len(call.answers)
        uprm = pj.CallOpParam(True)
        uprm.opt = setting(pj.PJMEDIA_DIR_ENCODING)
        call.update(uprm)
        if not pump(ep, 10, lambda: any(" 200 " in m.split("\r\n", 1)[0] for m in call.answers[n:])):
            raise RuntimeError("no 200 to the UPDATE")
        marks["updated"] = now_ms()
        pump(ep, 0.3)

        marks["bye"] = now_ms()
        call.hangup(pj.CallOpParam(True))
        if not pump(ep, 10, lambda: call.state == pj.PJSIP_INV_STATE_DISCONNECTED):
            raise RuntimeError("BYE not answered")
        marks["bye_ok"] = now_ms()
        result["ok"] = True
    except Exception as e:  # reported to the test, which fails
        result["error"] = f"{type(e).__name__}: {e}"
    result["responses"] = call.answers
    with open(a.result, "w") as f:
        json.dump(result, f, indent=1)
    players.clear()
    del call
    ep.libDestroy()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
