# SPDX-License-Identifier: MIT
"""framebusd's own RTSP client (daemon/rtsp.c) against what cameras do that
gst-rtsp-server does not: a scripted RTSP camera in the test (a real TCP
socket on 127.0.0.1, real RTSP and RTP bytes: a real H.264 clip's NAL units
as single-NAL and FU-A packets over the RTSP connection) whose quirks each
test chooses."""
import base64
import hashlib
import re
import socket
import struct
import subprocess
import threading
import time

import pytest

import framebus
from conftest import daemon_on, wait_for, wait_running, wait_state

BUILTIN = "framebusd's RTSP client)"


@pytest.fixture(scope="module")
def access_units(tmp_path_factory):
    """A 320x240 25 fps H.264 clip as cameras send it (no B-frames, a
    keyframe every second, parameter sets before each), Annex B, split into
    access units (lists of NAL units) at its access unit delimiters."""
    path = tmp_path_factory.mktemp("clip") / "clip.h264"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=25", "-t", "2", "-pix_fmt", "yuv420p",
                    "-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-g", "25",
                    "-x264-params", "aud=1:repeat-headers=1", "-f", "h264", str(path)],
                   check=True)
    nals = [n for n in re.split(b"\x00\x00\x00\x01|\x00\x00\x01", path.read_bytes()) if n]
    units = []
    for nal in nals:
        if nal[0] & 0x1F == 9:  # an access unit delimiter: a new one
            units.append([])
        else:
            units[-1].append(nal)
    assert len(units) == 50
    return units


def rtp_packets(nals, seq, ts, ssrc=0x5C5C5C5C, mtu=1400):
    """An access unit as H.264 RTP packets (RFC 6184): a NAL unit that fits
    whole, else FU-A fragments; the marker on its last packet."""
    payloads = []
    for nal in nals:
        if len(nal) <= mtu:
            payloads.append(nal)
            continue
        indicator, kind, rest = nal[0] & 0xE0 | 28, nal[0] & 0x1F, nal[1:]
        for i in range(0, len(rest), mtu):
            start, end = i == 0, i + mtu >= len(rest)
            header = kind | (0x80 if start else 0) | (0x40 if end else 0)
            payloads.append(bytes([indicator, header]) + rest[i:i + mtu])
    return [struct.pack(">BBHII", 0x80, (0x80 if i == len(payloads) - 1 else 0) | 96,
                        (seq + i) & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + p
            for i, p in enumerate(payloads)]


def rtcp_sender_report(ts, packets, octets, ssrc=0x5C5C5C5C):
    ntp = time.time() + 2208988800
    return struct.pack(">BBHIIIIII", 0x80, 200, 6, ssrc, int(ntp), int(ntp % 1 * 2**32),
                       ts & 0xFFFFFFFF, packets, octets)


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def read_message(f):
    """(first line, headers with lowercase names, body) of the next RTSP
    message, or None at the end of the connection."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = f.read(1)
        if not byte:
            return None
        head += byte
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return lines[0], headers, f.read(int(headers.get("content-length", 0)))


class ScriptedCamera:
    """An H.264 RTSP camera serving access_units at 25 fps from the first
    for each connection, whose behaviour the test sets:
      video_frames: after that many frames, no more video, only an RTCP
          sender report every second (an encoder that died);
      challenge: the WWW-Authenticate lines of its 401 (Digest: the nonce
          "n1", realm "cam"; the MD5 answer with qop=auth checked for
          user:password; Basic accepted if the lines offer it) when user
          is set;
      request_after: after that many frames, it sends framebusd the request
          in request (bytes) and records the answer in answers;
      transport: its SETUP's Transport;
      early: that many of the first frame's packets go before PLAY's answer;
      lost: the frames (indexes) whose packets it loses (its queue overflowed).
    sent: the frames it sent (lost ones too).
    requests: the request lines it got; digests: the Authorization
    parameters it accepted; quiet_reports: the RTCP reports it sent after
    its last frame."""

    def __init__(self, units, video_frames=None, user=None, challenge="",
                 request_after=None, request=b"", transport=None, early=0, lost=()):
        self.units, self.video_frames = units, video_frames
        self.early, self.lost, self.sent = early, lost, 0
        self.user, self.challenge = user, challenge
        self.request_after, self.request = request_after, request
        self.transport = transport or "RTP/AVP/TCP;unicast;interleaved=0-1"
        self.requests, self.digests, self.answers = [], [], []
        self.quiet_reports = 0
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.stop = threading.Event()
        self.conns = []
        self.threads = [threading.Thread(target=self.accept)]
        self.threads[0].start()

    def url(self, auth=""):
        return f"rtsp://{auth}127.0.0.1:{self.port}/cam"

    def accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except socket.timeout:
                continue
            self.conns.append(conn)
            t = threading.Thread(target=self.serve, args=(conn,))
            t.start()
            self.threads.append(t)

    def authorized(self, method, headers):
        if not self.user:
            return True
        value = headers.get("authorization", "")
        if "Basic" in self.challenge and value.startswith("Basic "):
            return base64.b64decode(value[6:]).decode() == self.user
        p = dict(re.findall(r'(\w+)="?([^",]*)"?', value))
        user, password = self.user.split(":")
        ha1 = md5(f"{user}:cam:{password}")
        ha2 = md5(f"{method}:{p.get('uri')}")
        want = md5(f"{ha1}:n1:{p.get('nc')}:{p.get('cnonce')}:auth:{ha2}")
        if (value.startswith("Digest ") and p.get("username") == user and
                p.get("nonce") == "n1" and p.get("qop") == "auth" and
                p.get("response") == want):
            self.digests.append(p)
            return True
        return False

    def serve(self, conn):
        lock = threading.Lock()  # one whole message at a time
        f = conn.makefile("rb")

        def send(data):
            with lock:
                conn.sendall(data)
        try:
            while (msg := read_message(f)) is not None:
                line, headers, _ = msg
                if line.startswith("RTSP/"):  # an answer to our own request
                    self.answers.append((line, headers))
                    continue
                self.requests.append(line)
                method = line.split(" ")[0]
                cseq = headers.get("cseq", "0")
                if not self.authorized(method, headers):
                    send(f"RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\n"
                         f"{self.challenge}\r\n".encode())
                    continue
                extra, body = "", b""
                if method == "OPTIONS":
                    extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n"
                elif method == "DESCRIBE":
                    body = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=scripted\r\nt=0 0\r\n"
                            b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                            b"a=fmtp:96 packetization-mode=1\r\na=control:track1\r\n")
                    extra = (f"Content-Base: {self.url()}/\r\nContent-Type: application/sdp\r\n"
                             f"Content-Length: {len(body)}\r\n")
                elif method == "SETUP":
                    extra = f"Transport: {self.transport}\r\nSession: 7a7a;timeout=60\r\n"
                elif method == "PLAY":
                    for p in rtp_packets(self.units[0], 0, 0)[:self.early]:
                        send(b"$\x00" + struct.pack(">H", len(p)) + p)
                elif method not in ("TEARDOWN", "GET_PARAMETER"):
                    send(f"RTSP/1.0 501 Not Implemented\r\nCSeq: {cseq}\r\n\r\n".encode())
                    continue
                send(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}\r\n".encode() + body)
                if method == "PLAY":
                    t = threading.Thread(target=self.play, args=(send,))
                    t.start()
                    self.threads.append(t)
        except OSError:
            pass

    def play(self, send):
        seq = ts = packets = octets = 0
        n = 0
        next_rtcp = time.monotonic() + 1
        try:
            while not self.stop.is_set():
                if self.video_frames is None or n < self.video_frames:
                    for i, p in enumerate(rtp_packets(self.units[n % len(self.units)], seq, ts)):
                        if n not in self.lost and (n or i >= self.early):
                            send(b"$\x00" + struct.pack(">H", len(p)) + p)
                        seq, packets, octets = seq + 1, packets + 1, octets + len(p) - 12
                    n, ts = n + 1, ts + 3600
                    self.sent = n
                    if n == self.request_after:
                        send(self.request)
                if time.monotonic() >= next_rtcp:
                    sr = rtcp_sender_report(ts, packets, octets)
                    send(b"$\x01" + struct.pack(">H", len(sr)) + sr)
                    next_rtcp += 1
                    self.quiet_reports += n == self.video_frames
                time.sleep(0.04)
        except OSError:
            pass

    def close(self):
        self.stop.set()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=5)
        for c in self.conns:
            c.close()
        self.server.close()


OTHER = "[stream other]\nurl = testsrc2=size=160x120:rate=25\ninput_format = lavfi\n"


def test_video_that_stops_while_rtcp_goes_on_is_a_stall(access_units):
    """The camera's encoder dies, its RTSP server does not: RTCP sender
    reports every second, no video.  framebusd's client calls it a stall
    after stall_timeout as FFmpeg's reader would; the daemon's other stream
    runs on."""
    camera = ScriptedCamera(access_units, video_frames=10)
    daemon = daemon_on(camera.url(), extra=OTHER)
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)
        assert BUILTIN in daemon.wait_for_log("stream door: opened")
        info = wait_state(bus, "door", "retrying")
        assert "the input stalled: nothing came for 2.0 s" in info.detail, info
        assert info.published and camera.quiet_reports >= 1, (info, camera.quiet_reports)
        wait_running(bus, "other")
        with bus.subscribe("other").acquire(timeout=5) as frame:
            assert frame.array.shape == (120, 160, 3)
        bus.close()
    finally:
        daemon.stop()
        camera.close()


RFC7616 = ('WWW-Authenticate: Digest realm="cam", nonce="n1", algorithm=SHA-256, qop="auth"\r\n'
           'WWW-Authenticate: Digest realm="cam", nonce="n1", algorithm=MD5, qop="auth"\r\n')


def test_a_camera_offering_sha256_then_md5_is_answered_with_md5(access_units):
    """An RFC 7616 camera lists its SHA-256 Digest challenge first, then
    MD5: framebusd answers the MD5 one (the camera checks the answer) and
    gets frames."""
    camera = ScriptedCamera(access_units, user="viewer:s3cret", challenge=RFC7616)
    daemon = daemon_on(camera.url("viewer:s3cret@"))
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)
        with bus.subscribe("door", mode="queue").acquire(timeout=10) as frame:
            assert frame.array.shape == (240, 320, 3)
        assert [d["uri"] for d in camera.digests[:2]] == [camera.url(), camera.url()], \
            camera.digests
        bus.close()
    finally:
        daemon.stop()
        camera.close()


def test_basic_is_used_when_the_only_digest_cannot_be_answered(access_units):
    """A camera offering Digest with SHA-256 alone and Basic: framebusd
    answers Basic (it was refused, naming SHA-256); the same camera
    without Basic is retrying, naming the algorithm."""
    challenge = ('WWW-Authenticate: Digest realm="cam", nonce="n1", algorithm=SHA-256\r\n'
                 'WWW-Authenticate: Basic realm="cam"\r\n')
    camera = ScriptedCamera(access_units, user="viewer:s3cret", challenge=challenge)
    daemon = daemon_on(camera.url("viewer:s3cret@"))
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)
        with bus.subscribe("door", mode="queue").acquire(timeout=10) as frame:
            assert frame.array.shape == (240, 320, 3)
        bus.close()
    finally:
        daemon.stop()
        camera.close()
    sha256_only = challenge.split("\n")[0] + "\n"
    camera = ScriptedCamera(access_units, user="viewer:s3cret", challenge=sha256_only)
    daemon = daemon_on(camera.url("viewer:s3cret@"))
    try:
        bus = framebus.connect(daemon.socket)
        info = wait_state(bus, "door", "retrying")
        assert ("OPTIONS: 401 Unauthorized: the camera wants Digest algorithm SHA-256 "
                "(framebusd's RTSP client does MD5 only") in info.detail, info
        bus.close()
    finally:
        daemon.stop()
        camera.close()


def test_digest_client_nonces_are_not_to_be_guessed(access_units):
    """Two framebusd side by side answering the same Digest camera: their
    client nonces differ (from getrandom(); random() was never seeded, so
    every framebusd sent the same ones), and so do one's from request to
    request."""
    camera = ScriptedCamera(access_units, user="viewer:s3cret", challenge=RFC7616)
    daemons = [daemon_on(camera.url("viewer:s3cret@")) for _ in range(2)]
    try:
        for d in daemons:
            bus = framebus.connect(d.socket)
            wait_running(bus, "door", timeout=20)
            bus.close()
        firsts = [p["cnonce"] for p in camera.digests if p["nc"] == "00000001"]
        assert len(firsts) >= 2 and len(set(firsts)) == len(firsts), camera.digests
        cnonces = [p["cnonce"] for p in camera.digests]
        assert len(set(cnonces)) == len(cnonces), camera.digests
        assert all(re.fullmatch("[0-9a-f]{16}", c) for c in cnonces), cnonces
    finally:
        for d in daemons:
            d.stop()
        camera.close()


def test_a_request_from_the_camera_is_answered_and_frames_go_on(access_units):
    """Mid-stream the camera asks framebusd something (a GET_PARAMETER with
    a body, its length in a Content-length header: names are
    case-insensitive), then something it does not do: the first is
    answered 200, the second 501, each with its CSeq, and the video goes
    on in the same session."""
    request = (b"GET_PARAMETER rtsp://127.0.0.1/cam RTSP/1.0\r\nCSeq: 41\r\nSession: 7a7a\r\n"
               b"Content-Type: text/parameters\r\nContent-length: 12\r\n\r\n"
               b"packets: 1\r\n"
               b"ANNOUNCE rtsp://127.0.0.1/cam RTSP/1.0\r\nCSeq: 42\r\n\r\n")
    camera = ScriptedCamera(access_units, request_after=5, request=request)
    daemon = daemon_on(camera.url())
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)
        sub = bus.subscribe("door", mode="queue")
        while True:  # well past the request, in one session
            with sub.acquire(timeout=5) as frame:
                assert not frame.discontinuity or frame.seq == 1, frame.seq
                if frame.seq >= 30:
                    break
        answers = [(line, h.get("cseq")) for line, h in camera.answers]
        assert answers == [("RTSP/1.0 200 OK", "41"), ("RTSP/1.0 501 Not Implemented", "42")], \
            camera.answers
        info = bus.stream("door")
        assert info.state == "running" and info.retries == 0, info
        assert [r.split(" ")[0] for r in camera.requests].count("PLAY") == 1, camera.requests
        bus.close()
    finally:
        daemon.stop()
        camera.close()


def test_a_url_fragment_is_not_sent_and_transport_is_read_in_any_case(access_units):
    """The URL's #fragment stays framebusd's (RFC 3986: never sent); a
    camera answering SETUP with its Transport in lower case
    (rtp/avp/tcp) is still read by framebusd's own client."""
    camera = ScriptedCamera(access_units, transport="rtp/avp/tcp;unicast;interleaved=0-1")
    daemon = daemon_on(camera.url() + "#main")
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)
        with bus.subscribe("door", mode="queue").acquire(timeout=10) as frame:
            assert frame.array.shape == (240, 320, 3)
        log = daemon.wait_for_log("stream door: opened")
        assert BUILTIN in log, log
        methods = [r.split(" ")[0] for r in camera.requests]
        assert methods[:4] == ["OPTIONS", "DESCRIBE", "SETUP", "PLAY"], camera.requests
        assert not [r for r in camera.requests if "#" in r], camera.requests
        assert camera.requests[1] == f"DESCRIBE {camera.url()} RTSP/1.0", camera.requests
        bus.close()
    finally:
        daemon.stop()
        camera.close()


def published_after(bus, camera, frames):
    """How many frames the stream published once the camera sent its
    frames (video_frames) and framebusd went through them: the count stays
    the same for a second."""
    wait_for("the camera's frames sent", lambda: camera.sent == frames)
    last = -1
    while (now := bus.stream("door").published) != last:
        last = now
        time.sleep(1)
    return last


def test_a_lost_frame_costs_the_frames_until_the_next_keyframe(access_units):
    """The camera loses frame 5 (all its packets, a gap between two frames)
    of 30, a keyframe every 25: frames 0-4 and 25-29 are published, not
    6-24, which refer to it (the decoder would conceal what is missing:
    smears); the log says frames were dropped."""
    camera = ScriptedCamera(access_units, video_frames=30, lost={5})
    daemon = daemon_on(camera.url(), stall_timeout="60s")
    try:
        bus = framebus.connect(daemon.socket)
        assert published_after(bus, camera, 30) == 10
        assert "frames dropped: RTP packets were lost, the next frames wait for a keyframe (" \
            in daemon.read_log()
        bus.close()
    finally:
        daemon.stop()
        camera.close()


def test_packets_before_plays_answer_are_kept(access_units):
    """The camera sends the parameter sets and the keyframe's first
    fragment before its PLAY answer: framebusd keeps them, and publishes
    all 10 frames (the keyframe's rest alone would be no frame, and the
    next keyframe comes at 25); nothing is logged as dropped."""
    first = access_units[0]
    assert first[-1][0] & 0x1F == 5 and len(first[-1]) > 1400  # an IDR in FU-As
    camera = ScriptedCamera(access_units, video_frames=10, early=len(first))
    daemon = daemon_on(camera.url(), stall_timeout="60s")
    try:
        bus = framebus.connect(daemon.socket)
        assert published_after(bus, camera, 10) == 10
        assert "dropped" not in daemon.read_log()
        bus.close()
    finally:
        daemon.stop()
        camera.close()
