#!/usr/bin/env python3
"""Independent SRTP peer for tests/srtp_sipp.rs (not project code).

Implements RFC 3711 key derivation, AES_CM_128_HMAC_SHA1_80 and RFC 7714
AEAD_AES_256_GCM with python3-cryptography only.

  srtp_tool.py send-pcap IP PORT PCAP SECONDS COUNT_OUT
      send the first SECONDS of the capture's UDP payloads to IP:PORT at the capture's
      pace; write the number of SRTP packets sent to COUNT_OUT.
  srtp_tool.py decrypt-pcap PCAP KEY_B64 SECONDS ALAW_OUT
      authenticate + decrypt (AES-CM + HMAC-SHA1-80) the same packets; write their
      payloads (A-law bytes), in order, to ALAW_OUT; fail if any packet does not verify.
  srtp_tool.py send-gcm IP PORT KEY_B64 MKI MKI_LEN PACKETS FIRST_SEQ ALAW_OUT
      encrypt PACKETS packets of known random A-law (seeded) with AEAD_AES_256_GCM,
      MKI value MKI on MKI_LEN bytes, sequence numbers from FIRST_SEQ (ROC follows the
      wrap), send them at 20 ms pace; the plaintext payloads go to ALAW_OUT.
"""
import base64
import hashlib
import hmac
import random
import socket
import struct
import sys
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def prf(master_key, master_salt, label, n):
    """RFC 3711 4.3.3 AES-CM PRF, r = 0; 12-byte salts padded on the right."""
    x = bytearray(master_salt + b"\0" * (14 - len(master_salt)))
    x[7] ^= label
    iv = bytes(x) + b"\0\0"
    enc = Cipher(algorithms.AES(master_key), modes.CTR(iv)).encryptor()
    return enc.update(b"\0" * n)


def udp_payloads(path, seconds):
    """(time offset, payload) of each IPv4/UDP packet of a classic pcap in the first SECONDS."""
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), "classic little-endian pcap expected"
    nano = magic == 0xA1B23C4D
    link = struct.unpack("<I", data[20:24])[0]
    assert link == 1, "Ethernet expected"
    pos, t0, out = 24, None, []
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack("<IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        t = sec + frac / (1e9 if nano else 1e6)
        if t0 is None:
            t0 = t
        if t - t0 >= seconds:
            break
        eth = 14
        etype = struct.unpack("!H", frame[12:14])[0]
        while etype in (0x8100, 0x88A8):
            etype = struct.unpack("!H", frame[eth + 2:eth + 4])[0]
            eth += 4
        if etype != 0x0800 or frame[eth + 9] != 17:
            continue
        ihl = (frame[eth] & 0x0F) * 4
        udp = eth + ihl
        ulen = struct.unpack("!H", frame[udp + 4:udp + 6])[0]
        out.append((t - t0, frame[udp + 8:udp + ulen]))
    return out


def is_rtcp(p):
    return len(p) > 1 and 192 <= p[1] <= 223


def send_paced(items, ip, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    for t, p in items:
        delay = start + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.sendto(p, (ip, port))


def cmd_send_pcap(ip, port, pcap, seconds, count_out):
    items = udp_payloads(pcap, float(seconds))
    send_paced(items, ip, int(port))
    n = sum(1 for _, p in items if not is_rtcp(p))
    open(count_out, "w").write(str(n))


def cmd_decrypt_pcap(pcap, key_b64, seconds, out):
    material = base64.b64decode(key_b64)
    mk, ms = material[:16], material[16:30]
    k_e, k_a, k_s = prf(mk, ms, 0, 16), prf(mk, ms, 1, 20), prf(mk, ms, 2, 14)
    roc, last, payloads = 0, None, []
    for _, p in udp_payloads(pcap, float(seconds)):
        if is_rtcp(p):
            continue
        cc, x = p[0] & 0x0F, p[0] & 0x10
        hdr = 12 + 4 * cc
        if x:
            hdr += 4 + 4 * struct.unpack("!H", p[hdr + 2:hdr + 4])[0]
        seq, ssrc = struct.unpack("!H", p[2:4])[0], struct.unpack("!I", p[8:12])[0]
        if last is not None and seq < last and last - seq > 32768:
            roc += 1
        last = seq
        body, tag = p[:-10], p[-10:]
        mac = hmac.new(k_a, body + struct.pack("!I", roc), hashlib.sha1).digest()[:10]
        assert hmac.compare_digest(mac, tag), "packet %d does not authenticate" % seq
        index = (roc << 16) | seq
        iv = int.from_bytes(k_s, "big") << 16
        iv ^= ssrc << 64
        iv ^= index << 16
        dec = Cipher(algorithms.AES(k_e), modes.CTR(iv.to_bytes(16, "big"))).decryptor()
        assert p[1] & 0x7F == 8, "PCMA expected"
        payloads.append(dec.update(body[hdr:]))
    open(out, "wb").write(b"".join(payloads))


def cmd_send_gcm(ip, port, key_b64, mki, mki_len, packets, first_seq, out):
    material = base64.b64decode(key_b64)
    mk, ms = material[:32], material[32:44]
    k_e, k_s = prf(mk, ms, 0, 32), prf(mk, ms, 2, 12)
    aead = AESGCM(k_e)
    rnd = random.Random(7714)
    ssrc, roc, seq, ts = 0x1234ABCD, 0, int(first_seq), 123456
    mki_bytes = int(mki).to_bytes(int(mki_len), "big")
    plain, items = [], []
    for i in range(int(packets)):
        payload = bytes(rnd.getrandbits(8) for _ in range(160))
        plain.append(payload)
        hdr = struct.pack("!BBHII", 0x80, 8 | (0x80 if i == 0 else 0), seq, ts, ssrc)
        nonce = bytearray(12)
        nonce[2:6] = struct.pack("!I", ssrc)
        nonce[6:10] = struct.pack("!I", roc)
        nonce[10:12] = struct.pack("!H", seq)
        nonce = bytes(a ^ b for a, b in zip(nonce, k_s))
        items.append((i * 0.02, hdr + aead.encrypt(nonce, payload, hdr) + mki_bytes))
        seq = (seq + 1) & 0xFFFF
        if seq == 0:
            roc += 1
        ts = (ts + 160) & 0xFFFFFFFF
    open(out, "wb").write(b"".join(plain))
    send_paced(items, ip, int(port))


if __name__ == "__main__":
    cmds = {"send-pcap": cmd_send_pcap, "decrypt-pcap": cmd_decrypt_pcap, "send-gcm": cmd_send_gcm}
    cmds[sys.argv[1]](*sys.argv[2:])
