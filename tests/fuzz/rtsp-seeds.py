#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpora of fuzz-rtsp and fuzz-rtp from real cameras:
scripts/rtsp-camera.py serving an H.264 and an H.265 clip, read with
a minimal RTSP exchange over TCP (the responses and SDP as they came, then
the first RTP packets in fuzz-rtp's input format), plus packets made by hand
for the packetizations a camera may use and gst-rtsp-server does not.

    rtsp-seeds.py CLIP_H264 CLIP_H265 CORPUS_DIR"""
import os
import socket
import struct
import subprocess
import sys

CAMERA = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "rtsp-camera.py")


def read_response(f):
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += f.read(1)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, f.read(length)


def capture(clip, port, packets=40):
    cam = subprocess.Popen([sys.executable, CAMERA, str(port), "--clip", clip],
                           stdout=subprocess.PIPE, text=True)
    assert cam.stdout.readline().strip() == f"ready rtsp://127.0.0.1:{port}/cam"
    try:
        url = f"rtsp://127.0.0.1:{port}/cam"
        s = socket.create_connection(("127.0.0.1", port))
        f = s.makefile("rb")
        heads, seq = [], 0

        def ask(method, target, extra=""):
            nonlocal seq
            seq += 1
            s.sendall(f"{method} {target} RTSP/1.0\r\nCSeq: {seq}\r\n{extra}\r\n".encode())
            head, body = read_response(f)
            heads.append(head)
            return head, body

        ask("OPTIONS", url)
        _, sdp = ask("DESCRIBE", url, "Accept: application/sdp\r\n")
        head, _ = ask("SETUP", url + "/stream=0",
                      "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
        session = [h for h in head.split(b"\r\n") if h.startswith(b"Session:")][0]
        session = session.split(b":")[1].split(b";")[0].strip().decode()
        ask("PLAY", url, f"Session: {session}\r\n")
        rtp = []
        while len(rtp) < packets:
            magic, channel, n = struct.unpack(">cBH", f.read(4))
            assert magic == b"$"
            data = f.read(n)
            if channel == 0:
                rtp.append(data)
        s.close()
        return heads, sdp, rtp
    finally:
        cam.terminate()
        cam.wait()


def rtp_input(codec, packets, pt=96):
    return bytes([pt << 1 | codec]) + b"".join(struct.pack(">H", len(p)) + p for p in packets)


def header(seq, ts, marker, pt=96, ssrc=0x1234, padding=False):
    return struct.pack(">BBHII", 0xA0 if padding else 0x80, (0x80 if marker else 0) | pt, seq, ts,
                       ssrc)


def main():
    clip264, clip265, out = sys.argv[1:]
    os.makedirs(os.path.join(out, "rtsp"), exist_ok=True)
    os.makedirs(os.path.join(out, "rtp"), exist_ok=True)
    for codec, (clip, port) in enumerate([(clip264, 18901), (clip265, 18902)]):
        name = ["h264", "h265"][codec]
        heads, sdp, rtp = capture(clip, port)
        for i, head in enumerate(heads):
            with open(os.path.join(out, "rtsp", f"{name}-response-{i}"), "wb") as f:
                f.write(head)
        with open(os.path.join(out, "rtsp", f"{name}-sdp"), "wb") as f:
            f.write(sdp)
        with open(os.path.join(out, "rtp", f"{name}-camera"), "wb") as f:
            f.write(rtp_input(codec, rtp))
        with open(os.path.join(out, "rtp", f"{name}-camera-lost"), "wb") as f:
            f.write(rtp_input(codec, rtp[:5] + rtp[6:]))
    write_hand_rtp(out)
    write_hand_rtsp(out)


def write_hand_rtp(out):
    """Packets made by hand into out/rtp, for the packetizations and the
    losses a camera may have that gst-rtsp-server does not: no clips
    needed, so it can be run alone (importlib) when a seed is added."""
    def write(name, codec, packets):
        with open(os.path.join(out, "rtp", name), "wb") as f:
            f.write(rtp_input(codec, packets))

    # H.264: slices start with first_mb_in_slice 0 (the bit after the header).
    sps, pps, idr = b"\x67\x42\x00\x1e\xab", b"\x68\xce\x38\x80", b"\x65\x88" + bytes(range(2, 200))
    stap = b"\x18" + struct.pack(">H", len(sps)) + sps + struct.pack(">H", len(pps)) + pps
    fu = [b"\x7c\x85" + idr[1:80], b"\x7c\x05" + idr[80:150], b"\x7c\x45" + idr[150:]]
    hand = [header(1, 0, False) + stap] + [header(2 + i, 0, i == 2) + p for i, p in enumerate(fu)]
    hand += [header(5, 3000, False) + b"\x41\x9a\x00", header(6, 6000, True) + b"\x41\x9b\x00"]
    write("h264-stap-fu", 0, hand)
    # A P picture's middle fragment lost, the next held back, an SEI
    # recovery point (after an SEI with an emulation prevention byte)
    # ends the wait; a non-reference picture lost; a gap at a boundary
    # before an IDR; empty and padding-only payloads; a new SSRC.
    p_fu = [b"\x5c\x81\x9a\x01", b"\x5c\x01\x02", b"\x5c\x41\x03"]
    sei = b"\x06\x05\x03\x00\x00\x03\x01\x06\x01\x84\x80"
    hand = [header(1, 0, True) + stap[:1] + stap[1:] + b"\x00\x03\x65\x88\x01"]
    hand += [header(2, 3000, False) + p_fu[0], header(4, 3000, True) + p_fu[2]]
    hand += [header(5, 6000, True) + b"\x41\x9a\x05"]
    hand += [header(6, 9000, False) + sei, header(7, 9000, True) + b"\x41\x9a\x06"]
    hand += [header(8, 12000, False) + b"\x1c\x81\x9a", header(10, 12000, True) + b"\x1c\x41\x07"]
    hand += [header(11, 15000, True) + b"\x41\x9a\x08", header(13, 21000, True) + idr[:40]]
    hand += [header(14, 24000, False), header(15, 24000, False, padding=True) + b"\x00\x00\x03"]
    hand += [header(16, 24000, True) + b"\x41\x9a\x09"]
    hand += [header(900, 777, False, ssrc=0x5678) + b"\x7c\x05\x0a",
             header(901, 777, True, ssrc=0x5678) + b"\x7c\x45\x0b",
             header(902, 4377, True, ssrc=0x5678) + idr[:30]]
    write("h264-losses", 0, hand)
    vps, sps5, pps5 = b"\x40\x01\x0c", b"\x42\x01\x01", b"\x44\x01\xc1"
    ap = b"\x60\x01" + b"".join(struct.pack(">H", len(n)) + n for n in (vps, sps5, pps5))
    idr5 = b"\x26\x01\xaf" + bytes(range(3, 200))
    fu5 = [b"\x62\x01\x93" + idr5[2:90], b"\x62\x01\x53" + idr5[90:]]
    hand = [header(1, 0, False) + ap, header(2, 0, False) + fu5[0], header(3, 0, True) + fu5[1]]
    write("h265-ap-fu", 1, hand)
    # H.265: a TRAIL_R lost and the next held back until a CRA; a TRAIL_N
    # lost; a recovery point SEI (prefix SEI, 39); a slice segment that
    # is not its picture's first after a gap; a CRA's RASL pictures.
    hand = [header(1, 0, True) + idr5[:20], header(3, 3000, True) + b"\x02\x01\xd0\x01"]
    hand += [header(4, 6000, True) + b"\x2a\x01\xaf\x02"]
    hand += [header(5, 9000, False) + b"\x62\x01\x80\xd0",
             header(7, 9000, True) + b"\x62\x01\x40\x03"]
    hand += [header(8, 12000, True) + b"\x02\x01\xd0\x04",
             header(10, 18000, True) + b"\x02\x01\x50\x05"]
    hand += [header(11, 21000, False) + b"\x4e\x01\x06\x01\x84\x80",
             header(12, 21000, True) + b"\x02\x01\xd0\x06", header(13, 24000, True)]
    # A loss, a CRA, its RASL pictures (held back), a trailing one.
    hand += [header(15, 27000, True) + b"\x2a\x01\xaf\x07",
             header(16, 30000, True) + b"\x12\x01\xd0\x08",
             header(17, 33000, True) + b"\x10\x01\xd0\x09",
             header(18, 36000, True) + b"\x02\x01\xd0\x0a"]
    write("h265-losses", 1, hand)


# What cameras send that gst-rtsp-server does not, made by hand.
HAND_RTSP = {
    "digest-401": b'RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\nWWW-Authenticate: Digest '
                  b'realm="cam", nonce="abc", qop="auth", opaque="x"\r\nWWW-Authenticate: Basic '
                  b'realm="cam"\r\n\r\n',
    "digest-401-sha256-md5": b'RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\nWWW-Authenticate: Digest '
                             b'realm="cam", nonce="n", algorithm=SHA-256, qop="auth"\r\n'
                             b'WWW-Authenticate: Digest realm="cam", nonce="n", algorithm=MD5, '
                             b'qop="auth"\r\n\r\n',
    "sdp-stray-bytes": b"v=0\r\ns=cam\r\nnot a line\r\nm=video 0 RTP/AVP 96\r\n"
                       b"a=rtpmap:96 H264/90000\r\na=tool:x\x00y\r\n\r\n\x00",
    "server-request": b"GET_PARAMETER rtsp://10.0.0.2/cam RTSP/1.0\r\nCSeq: 41\r\n"
                      b"Content-length: 12\r\n\r\npackets: 1\r\n",
    "folded-headers": b"RTSP/1.0 200 OK\r\nCSeq: 4\r\nTransport: RTP/AVP/TCP;unicast;\r\n"
                      b" \tinterleaved=0-1\r\nSession: 5B9A;\r\n timeout=60\r\n\r\n",
    "lf-response-then-rtp": b"RTSP/1.0 200 OK\nCSeq: 3\nSession: 12\n\n$\x00\x00\x06\r\n\r\nab",
}


def write_hand_rtsp(out):
    """HAND_RTSP's seeds into out/rtsp: no clips needed, so it can be run
    alone (importlib) when a seed is added."""
    for name, data in HAND_RTSP.items():
        with open(os.path.join(out, "rtsp", name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
