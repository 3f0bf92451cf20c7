#!/usr/bin/env python3
"""A SIPREC client (SRC) over TLS, independent of branchrec: Python's ssl stdlib.

Used by tests/sip_tls.rs. Two modes:

  call   INVITE with a real vendor SIPREC body (a file of ../shared/testdata/siprec, its
         `#` header stripped), read the 200 OK, ACK, run `branchrec-loadgen rtp` to the
         answered ports, wait, BYE, read its 200. Prints one JSON object: statuses, the
         200's Contact/Via, the answered ports, ACK/BYE times (ms, monotonic).
  probe  Connect and send an OPTIONS; report whether the handshake failed, the
         connection was closed, or a SIP answer came back (a refused client must never
         get one).

Every wait is bounded (socket timeouts); exit status 0 unless the script itself broke.
"""

import argparse
import json
import re
import socket
import ssl
import subprocess
import sys
import time
import uuid

END_HEADER = "# ---- END HEADER (original bytes follow verbatim) ----"


def vendor_body(path, ip):
    text = open(path, encoding="utf-8").read()
    if END_HEADER in text:
        text = text.split(END_HEADER, 1)[1].lstrip("\n")
    # Only the SBC's addresses change (as the SIPp scenarios do); the rest is verbatim.
    text = re.sub(r"(c=IN IP4 )[0-9.]+", r"\g<1>" + ip, text)
    text = re.sub(r"(o=.* IN IP4 )[0-9.]+", r"\g<1>" + ip, text)
    m = re.match(r"--([^\r\n]+?)\s*\r?\n", text)
    if not m:
        raise SystemExit("body does not start with a MIME boundary: " + path)
    return text.encode(), m.group(1)


def context(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(args.ca)
    ctx.check_hostname = bool(args.server_name)
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    if args.tls == "1.2":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif args.tls == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class Reader:
    """Content-Length framing of SIP messages on a stream."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def message(self, deadline):
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end >= 0:
                head = self.buf[:head_end].decode("utf-8", "replace")
                m = re.search(r"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
                n = int(m.group(1)) if m else 0
                total = head_end + 4 + n
                if len(self.buf) >= total:
                    body = self.buf[head_end + 4:total]
                    self.buf = self.buf[total:]
                    return head, body
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete SIP message in time")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed by the recorder")
            self.buf += data


def header(head, name):
    m = re.search(r"(?im)^" + re.escape(name) + r"\s*:\s*(.*)$", head)
    return m.group(1).strip() if m else None


def status_of(head):
    m = re.match(r"SIP/2.0 (\d{3})", head)
    return int(m.group(1)) if m else None


def final_response(reader, cseq_method, seconds):
    deadline = time.monotonic() + seconds
    seen = []
    while True:
        head, body = reader.message(deadline)
        st = status_of(head)
        if st is None:
            continue  # a request from the recorder: not expected here
        if cseq_method not in (header(head, "CSeq") or ""):
            continue
        seen.append(st)
        if st >= 200:
            return st, head, body, seen


def connect(args):
    raw = socket.create_connection((args.host, args.port), timeout=5)
    ctx = context(args)
    tls = ctx.wrap_socket(raw, server_hostname=args.server_name or None)
    return tls


def run_call(args):
    body, boundary = vendor_body(args.body, args.local_ip)
    tls = connect(args)
    local = tls.getsockname()
    reader = Reader(tls)
    call_id = uuid.uuid4().hex + "@tls-test"
    scheme = args.ruri_scheme
    ruri = f"{scheme}:srs@{args.host}:{args.port}"
    via_host = f"{local[0]}:{local[1]}"
    contact = f"<{scheme}:acmeSrc@{via_host};transport=tls>;+sip.src" if scheme == "sip" \
        else f"<sips:acmeSrc@{via_host}>;+sip.src"
    from_tag = uuid.uuid4().hex[:10]

    def request(method, uri, cseq, extra="", payload=b"", to_tag=None):
        to = f"<{scheme}:srs@{args.host}:{args.port}>" + (f";tag={to_tag}" if to_tag else "")
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/TLS {via_host};rport;branch={branch}",
            "Max-Forwards: 70",
            f"From: <{scheme}:acmeSrc@{via_host}>;tag={from_tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: {contact}",
        ]
        if extra:
            lines.append(extra.rstrip("\r\n"))
        lines.append(f"Content-Length: {len(payload)}")
        msg = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
        tls.sendall(msg)

    request(
        "INVITE", ruri, 1,
        "Require: siprec\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: multipart/mixed;boundary={boundary}",
        body,
    )
    st, head, answer, seen = final_response(reader, "INVITE", 15)
    out = {
        "tls_version": tls.version(),
        "invite_statuses": seen,
        "status": st,
        "contact": header(head, "Contact"),
        "via": header(head, "Via"),
    }
    if st != 200:
        print(json.dumps(out))
        return
    to_hdr = header(head, "To") or ""
    to_tag = re.search(r";\s*tag=([^;\s]+)", to_hdr)
    to_tag = to_tag.group(1) if to_tag else None
    sdp = answer.decode("utf-8", "replace")
    ip = re.search(r"c=IN IP4 ([0-9.]+)", sdp).group(1)
    ports = [int(p) for p in re.findall(r"m=audio (\d+) ", sdp)]
    out["answer_ip"], out["answer_ports"] = ip, ports
    # In-dialog requests go to the Contact the recorder gave (over this same connection).
    target = re.search(r"<([^>]+)>", out["contact"] or "").group(1)
    request("ACK", target, 1, to_tag=to_tag)
    out["t_ack_ms"] = time.monotonic() * 1000
    lg = subprocess.Popen(
        [args.loadgen, "rtp",
         "--stream", f"{ip}:{ports[0]},{args.audio_a},pcmu,0x0A0A0A0A,1000,160000",
         "--stream", f"{ip}:{ports[1]},{args.audio_b},pcmu,0x0B0B0B0B,5000,480000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(args.media_ms / 1000.0)
    out["t_bye_ms"] = time.monotonic() * 1000
    request("BYE", target, 2, to_tag=to_tag)
    st, head, _, _ = final_response(reader, "BYE", 10)
    out["bye_status"] = st
    try:
        _, err = lg.communicate(timeout=20)
        out["loadgen_exit"] = lg.returncode
        out["loadgen_stderr"] = err.decode("utf-8", "replace")[-500:]
    except subprocess.TimeoutExpired:
        lg.kill()
        out["loadgen_exit"] = "timeout"
    tls.close()
    print(json.dumps(out))


def run_probe(args):
    out = {"handshake": None, "answer": None, "error": None}
    try:
        tls = connect(args)
    except (ssl.SSLError, OSError) as e:
        out["handshake"] = "failed"
        out["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(out))
        return
    out["handshake"] = "completed"
    out["tls_version"] = tls.version()
    local = tls.getsockname()
    msg = (
        f"OPTIONS sip:srs@{args.host}:{args.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {local[0]}:{local[1]};rport;branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:srs@127.0.0.1>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    try:
        tls.sendall(msg)
        head, _ = Reader(tls).message(time.monotonic() + args.wait_s)
        out["answer"] = status_of(head)
    except (ssl.SSLError, OSError, ConnectionError, TimeoutError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("mode", choices=["call", "probe"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True, help="CA that issued the recorder's certificate")
    p.add_argument("--server-name", default="", help="check the recorder's certificate for it")
    p.add_argument("--cert", help="client certificate chain (PEM)")
    p.add_argument("--key", help="client key (PEM)")
    p.add_argument("--tls", choices=["any", "1.2", "1.3"], default="any")
    p.add_argument("--body", help="vendor SIPREC body file (call mode)")
    p.add_argument("--local-ip", default="127.0.0.1")
    p.add_argument("--ruri-scheme", choices=["sip", "sips"], default="sips")
    p.add_argument("--loadgen")
    p.add_argument("--audio-a")
    p.add_argument("--audio-b")
    p.add_argument("--media-ms", type=int, default=2600)
    p.add_argument("--wait-s", type=float, default=3.0)
    args = p.parse_args()
    if args.mode == "call":
        run_call(args)
    else:
        run_probe(args)


if __name__ == "__main__":
    sys.exit(main())
