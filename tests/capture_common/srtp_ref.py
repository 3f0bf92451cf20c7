#!/usr/bin/env python3
"""Independent SRTP reference (RFC 3711) for the capture tests: AES_CM_128_HMAC_SHA1_80
with Python's `cryptography` (AES-CTR, HMAC-SHA1), no branchrec code.

usage: srtp_ref.py PCAP SENDER_IP:PORT BASE64_KEY_SALT > payloads.raw
Reads a classic Ethernet/IPv4 pcap, takes every UDP datagram sent from SENDER, checks
its 80-bit tag (fails loudly on a bad one), decrypts it and writes the RTP payloads
(after header, CSRCs, extension) one after the other. Prints counts on stderr."""
import base64, hashlib, hmac, struct, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

def aes_ctr(key, iv, data):
    e = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return e.update(data) + e.finalize()

def kdf(master_key, master_salt, label, n):
    x = int.from_bytes(master_salt, 'big') ^ (label << 48)
    return aes_ctr(master_key, (x << 16).to_bytes(16, 'big'), b'\0' * n)

def frames(path):
    b = open(path, 'rb').read()
    e = '<' if b[:4] in (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1') else '>'
    off = 24
    while off + 16 <= len(b):
        _, _, cl, _ = struct.unpack(e + 'IIII', b[off:off + 16])
        yield b[off + 16:off + 16 + cl]
        off += 16 + cl

def main():
    path, sender, key = sys.argv[1], sys.argv[2], sys.argv[3]
    sip, sport = sender.rsplit(':', 1)
    ms = base64.b64decode(key)
    mk, salt = ms[:16], ms[16:30]
    ke, ka, ks = kdf(mk, salt, 0, 16), kdf(mk, salt, 1, 20), kdf(mk, salt, 2, 14)
    out = sys.stdout.buffer
    roc, last, n = 0, None, 0
    for f in frames(path):
        if len(f) < 42 or f[12:14] != b'\x08\x00' or f[23] != 17:
            continue
        ip = f[14:]
        ihl = (ip[0] & 15) * 4
        src = '.'.join(str(x) for x in ip[12:16])
        u = ip[ihl:]
        sp, _, ulen = struct.unpack('>HHH', u[:6])
        if src != sip or sp != int(sport):
            continue
        pkt = u[8:ulen]
        body, tag = pkt[:-10], pkt[-10:]
        seq = struct.unpack('>H', body[2:4])[0]
        ssrc = struct.unpack('>I', body[8:12])[0]
        if last is not None and seq < last and last - seq > 0x8000:
            roc += 1
        last = seq if last is None or ((seq - last) & 0xffff) < 0x8000 else last
        want = hmac.new(ka, body + roc.to_bytes(4, 'big'), hashlib.sha1).digest()[:10]
        if want != tag:
            sys.exit('bad SRTP tag on seq %d' % seq)
        cc = body[0] & 15
        hl = 12 + 4 * cc
        if body[0] & 0x10:
            hl += 4 + 4 * struct.unpack('>H', body[hl + 2:hl + 4])[0]
        i = (roc << 16) | seq
        iv = (int.from_bytes(ks, 'big') << 16) ^ (ssrc << 64) ^ (i << 16)
        out.write(aes_ctr(ke, iv.to_bytes(16, 'big'), body[hl:]))
        n += 1
    print('%d packets authenticated and decrypted' % n, file=sys.stderr)

main()
