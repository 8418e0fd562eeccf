# SPDX-License-Identifier: MIT
"""framebusd pulling a real RTSP camera (gst-rtsp-server on 127.0.0.1,
scripts/rtsp-camera.py): a camera that reboots or stalls comes back by
itself, and its subscribers go on in the same subscription; H.264 and H.265
cameras go through framebusd's own RTSP client (daemon/rtsp.c), which hands a
frame to the decoder as soon as its last packet came, with Basic or Digest
authentication; an RTP/JPEG camera falls back to FFmpeg."""
import hashlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import framebus
from conftest import Daemon, daemon_on, wait_for, wait_running, wait_state

CAMERA = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "rtsp-camera.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Camera:
    """The RTSP camera process (args: rtsp-camera.py's options); start()
    again after stop() is a reboot."""

    def __init__(self, *args):
        self.port = free_port()
        self.args = [str(a) for a in args]
        self.start()

    def start(self):
        self.proc = subprocess.Popen([sys.executable, CAMERA, str(self.port)] + self.args,
                                     stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline().strip()
        assert ready == f"ready rtsp://127.0.0.1:{self.port}/cam", "the camera did not start"

    def stop(self):
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """320x240 25 fps clips as cameras send them: no B-frames, a keyframe
    every second."""
    d = tmp_path_factory.mktemp("clips")
    encoders = {"h264": ["libx264", "-bf", "0", "-g", "25"],
                "h265": ["libx265", "-x265-params", "bframes=0:keyint=25:log-level=error",
                         "-tag:v", "hvc1"]}
    for codec, encoder in encoders.items():
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=320x240:rate=25", "-t", "10", "-pix_fmt", "yuv420p",
                        "-c:v"] + encoder + ["-preset", "veryfast", str(d / f"{codec}.mp4")],
                       check=True)
    return {codec: str(d / f"{codec}.mp4") for codec in encoders}


@pytest.fixture(params=["jpeg", "h264"])
def camera(request, clips):
    c = Camera() if request.param == "jpeg" else Camera("--clip", clips[request.param])
    yield c
    c.stop()


def camera_daemon(camera, url=None, extra="", stall_timeout="2s"):
    return daemon_on(url or f"rtsp://127.0.0.1:{camera.port}/cam", extra, stall_timeout)


def test_a_camera_that_reboots_comes_back_in_the_same_subscription(camera):
    daemon = camera_daemon(camera)
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)
        sub = bus.subscribe("door", mode="queue")
        for _ in range(5):
            with sub.acquire(timeout=5) as frame:
                assert frame.array.shape == (240, 320, 3)
                last = frame.seq

        camera.stop()  # the camera reboots: its server tears the session down
        info = wait_state(bus, "door", "retrying")
        assert info.detail, info
        with pytest.raises(TimeoutError):  # no StreamEnded: it is only away
            while True:
                sub.acquire(timeout=1).release()
        camera.start()
        with sub.acquire(timeout=20) as frame:
            assert frame.discontinuity and frame.seq > last
            assert frame.array.shape == (240, 320, 3)
        wait_state(bus, "door", "running")
        bus.close()
    finally:
        daemon.stop()


def test_a_camera_that_stalls_is_noticed_and_retried(camera):
    daemon = camera_daemon(camera)
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)
        sub = bus.subscribe("door", mode="queue")  # latest could skip the marked frame
        sub.acquire(timeout=5).release()

        camera.proc.send_signal(signal.SIGSTOP)  # connection open, nothing sent
        info = wait_state(bus, "door", "retrying", timeout=10)
        assert "the input stalled: nothing came for 2.0 s" in info.detail, info
        camera.proc.send_signal(signal.SIGCONT)
        while True:  # past what was published before the stall
            with sub.acquire(timeout=20) as frame:
                if frame.seq > info.published:
                    assert frame.discontinuity
                    break
        wait_state(bus, "door", "running")
        bus.close()
    finally:
        daemon.stop()


BUILTIN = "framebusd's RTSP client)"


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_h264_and_h265_cameras_are_read_by_framebusd_s_own_client(clips, codec):
    camera = Camera("--clip", clips[codec])
    daemon = camera_daemon(camera)
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)
        sub = bus.subscribe("door", mode="queue")
        for _ in range(10):
            with sub.acquire(timeout=10) as frame:
                assert frame.array.shape == (240, 320, 3)
        log = daemon.wait_for_log("opened")
        want = {"h264": r"\(h264[ ,]", "h265": r"\(hevc[ ,]"}[codec]
        assert re.search(want, log) and BUILTIN in log, log
        bus.close()
    finally:
        daemon.stop()
        camera.stop()


def test_a_frame_is_published_while_the_camera_is_silent_after_it(clips):
    """The camera sends one frame, then nothing: framebus publishes it
    without waiting for a next frame (FFmpeg's h264 parser would: its
    access unit ends only when the next one begins)."""
    camera = Camera("--clip", clips["h264"], "--frames", "1")
    daemon = camera_daemon(camera, stall_timeout="60s")
    try:
        bus = framebus.connect(daemon.socket)
        info = wait_for("the camera's one frame published",
                        lambda: bus.stream("door").published and bus.stream("door"))
        assert info.published == 1 and info.state == "running", info
        time.sleep(2)  # the camera stays silent: that was its one frame
        assert bus.stream("door").published == 1
        with bus.subscribe("door").acquire(timeout=5) as frame:  # the newest frame: that one
            assert frame.array.shape == (240, 320, 3) and frame.seq == 1
        assert BUILTIN in daemon.read_log()
        bus.close()
    finally:
        daemon.stop()
        camera.stop()


@pytest.mark.parametrize("method", ["basic", "digest"])
def test_a_camera_asking_for_a_password(clips, method):
    camera = Camera("--clip", clips["h264"], "--auth", method, "--user", "viewer:s3cret")
    right = camera_daemon(camera, url=f"rtsp://viewer:s3cret@127.0.0.1:{camera.port}/cam")
    try:
        bus = framebus.connect(right.socket)
        wait_running(bus, "door", timeout=20)
        sub = bus.subscribe("door", mode="queue")
        with sub.acquire(timeout=10) as frame:
            assert frame.array.shape == (240, 320, 3)
        # The password shows nowhere: not in status, not in the log.
        info = bus.stream("door")
        assert info.source == f"rtsp://viewer@127.0.0.1:{camera.port}/cam", info
        log = right.wait_for_log("stream door: opened")
        assert "s3cret" not in log and f"opened rtsp://viewer@127.0.0.1:{camera.port}/cam" in log
        bus.close()
    finally:
        right.stop()
    wrong = camera_daemon(camera, url=f"rtsp://viewer:wrong@127.0.0.1:{camera.port}/cam")
    try:
        bus = framebus.connect(wrong.socket)
        info = wait_state(bus, "door", "retrying")
        assert ("401 Unauthorized: wrong user or password for "
                f"rtsp://127.0.0.1:{camera.port}/cam (DESCRIBE)") in info.detail, info
        bus.close()
    finally:
        wrong.stop()
        camera.stop()


def lines_of(proc):
    """A queue of proc's output lines, read by a thread."""
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in proc.stdout],
                     daemon=True).start()
    return lines


def drain(lines):
    out = []
    while True:
        try:
            out.append(lines.get_nowait())
        except queue.Empty:
            return out


@pytest.mark.parametrize("reader", ["builtin", "ffmpeg"])
def test_a_wrong_password_is_tried_again_only_every_retry_max(clips, reader):
    """Cameras lock the account after a few failed logins (Hikvision,
    Dahua: 5-7, then 30 min): a 401 to the URL's user and password waits
    retry_max, not retry_min's doubling backoff, whichever client reads the
    camera; the daemon's other stream runs on; a reload with the right
    password tries at once."""
    camera = Camera("--clip", clips["h264"], "--auth", "digest", "--user", "viewer:s3cret",
                    "--print-requests")
    lines = lines_of(camera.proc)
    streams = ("[stream door]\nurl = rtsp://viewer:{}@127.0.0.1:" + str(camera.port) + "/cam\n"
               f"retry_min = 100ms\nretry_max = 60s\nrtsp_client = {reader}\n"
               "[stream other]\nurl = testsrc2=size=160x120:rate=25\ninput_format = lavfi\n")
    daemon = Daemon(streams.format("wrong"))
    try:
        bus = framebus.connect(daemon.socket)
        info = wait_state(bus, "door", "retrying")
        assert info.detail == {
            "builtin": "401 Unauthorized: wrong user or password for "
                       f"rtsp://127.0.0.1:{camera.port}/cam (DESCRIBE) (next try in 60.0 s)",
            "ffmpeg": "401 Unauthorized: wrong user or password (FFmpeg read it) "
                      "(next try in 60.0 s)"}[reader], info
        # 75 frames of the other stream: 3 s, in which retry_min's backoff
        # (0.1, 0.2, 0.4, 0.8, 1.6 s) would have logged in 5 times more.
        wait_running(bus, "other")
        sub = bus.subscribe("other", mode="queue")
        for _ in range(75):
            with sub.acquire(timeout=5) as frame:
                assert frame.array.shape == (120, 160, 3)
        describes = [line for line in drain(lines) if line.startswith("request DESCRIBE")]
        assert describes == ["request DESCRIBE", "request DESCRIBE with Authorization"], describes
        assert bus.stream("door").state == "retrying"

        with open(daemon.config, "w") as f:
            f.write(f"[daemon]\nsocket = {daemon.socket}\n" + streams.format("s3cret"))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_running(bus, "door", timeout=20)  # not 60 s later
        with bus.subscribe("door").acquire(timeout=10) as frame:
            assert frame.array.shape == (240, 320, 3)
        bus.close()
    finally:
        daemon.stop()
        camera.stop()


def test_an_rtp_jpeg_camera_is_read_by_ffmpeg():
    camera = Camera()
    daemon = camera_daemon(camera)
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)
        log = daemon.wait_for_log("opened")
        assert ("FFmpeg reads it, not framebusd's RTSP client: its video is JPEG, "
                "not H.264 or H.265") in log, log
        assert "(mjpeg 320x240" in log and BUILTIN not in log, log
        bus.close()
    finally:
        daemon.stop()
        camera.stop()


def test_why_ffmpeg_reads_a_camera_is_logged_once_not_at_every_reopen():
    camera = Camera()
    daemon = camera_daemon(camera)
    fallback = ("stream door: FFmpeg reads it, not framebusd's RTSP client: its video is JPEG, "
                "not H.264 or H.265")
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)
        for _ in range(2):  # the camera reboots twice: the stream opens it three times
            camera.stop()
            wait_state(bus, "door", "retrying")
            camera.start()
            wait_running(bus, "door", timeout=20)
        log = daemon.read_log()
        assert log.count("stream door: opened") == 3, log
        assert log.count(fallback) == 1, log
        bus.close()
    finally:
        daemon.stop()
        camera.stop()


def test_rtsp_client_ffmpeg_and_ffmpeg_options_choose_ffmpeg(clips):
    camera = Camera("--clip", clips["h264"])
    for extra, why in [("rtsp_client = ffmpeg\n", "rtsp_client = ffmpeg"),
                       ("option.stimeout = 5000000\n", "FFmpeg option option.stimeout is set")]:
        daemon = camera_daemon(camera, extra=extra)
        try:
            log = daemon.wait_for_log("opened", timeout=20)
            assert f"FFmpeg reads it, not framebusd's RTSP client: {why}" in log, log
            assert BUILTIN not in log, log
        finally:
            daemon.stop()
    camera.stop()


def test_bytes_that_are_no_rtsp_end_the_source_with_why_and_touch_nothing_else():
    """A "camera" answering OPTIONS with HTTP: its stream retries naming
    what came; the daemon's other stream runs on."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    stop = threading.Event()

    def answer():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer)
    thread.start()
    daemon = Daemon(f"[stream door]\nurl = rtsp://127.0.0.1:{port}/cam\nretry_min = 200ms\n"
                    "[stream other]\nurl = testsrc2=size=160x120:rate=25\ninput_format = lavfi\n")
    try:
        bus = framebus.connect(daemon.socket)
        info = wait_state(bus, "door", "retrying")
        assert "bytes that are no RTSP from the camera: 'HTTP/1.1 200 OK'" in info.detail, info
        wait_running(bus, "other")
        with bus.subscribe("other").acquire(timeout=5) as frame:
            assert frame.array.shape == (120, 160, 3)
        bus.close()
    finally:
        daemon.stop()
        stop.set()
        thread.join()
        server.close()


class Proxy:
    """Between framebusd and a camera, real bytes on real sockets, message by
    message: each request framebusd sends goes through request() (which may
    answer it itself), each RTP or RTCP packet (an interleaved frame) the
    camera sends through rtp(); the camera's responses pass."""

    def __init__(self, camera_port):
        self.camera_port = camera_port
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.stop = threading.Event()
        self.sockets = []
        self.threads = [threading.Thread(target=self.accept)]
        self.threads[0].start()

    def request(self, msg, answer, conn):
        """The request (bytes) to send the camera, or None after
        answer(bytes); conn: a dict of the connection's own ("id": its
        number from 1)."""
        return msg

    def rtp(self, channel, packet):
        """Whether to pass the camera's packet on."""
        return True

    def accept(self):
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except socket.timeout:
                continue
            camera = socket.create_connection(("127.0.0.1", self.camera_port))
            self.sockets += [client, camera]
            lock = threading.Lock()  # one whole message down at a time
            conn = {"id": len(self.sockets) // 2}
            for t in (threading.Thread(target=self.upstream, args=(client, camera, lock, conn)),
                      threading.Thread(target=self.downstream, args=(camera, client, lock))):
                t.start()
                self.threads.append(t)

    @staticmethod
    def read_message(f, first=b""):
        msg = first
        while not msg.endswith(b"\r\n\r\n"):
            byte = f.read(1)
            if not byte:
                return None
            msg += byte
        length = [int(h.split(b":")[1]) for h in msg.split(b"\r\n")
                  if h.lower().startswith(b"content-length:")]
        return msg + (f.read(length[0]) if length else b"")

    def upstream(self, client, camera, lock, conn):
        f = client.makefile("rb")
        try:
            while (msg := self.read_message(f)) is not None:
                def answer(data):
                    with lock:
                        client.sendall(data)
                msg = self.request(msg, answer, conn)
                if msg is not None:
                    camera.sendall(msg)
        except OSError:
            pass
        camera.close()

    def downstream(self, camera, client, lock):
        f = camera.makefile("rb")
        try:
            while not self.stop.is_set():
                first = f.read(1)
                if not first:
                    break
                if first == b"$":
                    head = f.read(3)
                    data = f.read(int.from_bytes(head[1:3], "big"))
                    msg = first + head + data if self.rtp(head[0], data) else b""
                else:
                    msg = self.read_message(f, first) or b""
                with lock:
                    client.sendall(msg)
        except OSError:
            pass
        client.close()

    def close(self):
        self.stop.set()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=5)
        self.server.close()


class LossyProxy(Proxy):
    """Drops one in every `every` RTP packets (interleaved channel 0) the
    camera sends, as a camera whose own sending queue overflows does: RTP
    sequence gaps."""

    def __init__(self, camera_port, every=40):
        self.every, self.n, self.dropped = every, 0, 0
        super().__init__(camera_port)

    def rtp(self, channel, packet):
        if channel != 0:
            return True
        self.n += 1
        if self.n % self.every:
            return True
        self.dropped += 1
        return False


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


class DigestProxy(Proxy):
    """Asks for Digest (qop=auth) itself, in front of a camera that asks for
    nothing, and passes on what it accepts without its Authorization: a
    camera whose nonces expire.  keepalive="stale": the first keepalive
    after PLAY finds its nonce expired (401, stale=true, a new nonce: the
    old one is stale from then on); "refuse": every keepalive is refused
    (401, not stale).  answers: (connection, method, status, stale) of every
    request, in order."""

    REALM = "cam"

    def __init__(self, camera_port, user, password, keepalive):
        self.user, self.password, self.keepalive = user, password, keepalive
        self.nonces = ["n1"]  # the current one last
        self.answers = []
        super().__init__(camera_port)

    def nonce_of(self, authorization, method):
        """The nonce of a right Digest answer for method, else None."""
        if not authorization.startswith("Digest "):
            return None
        p = dict(re.findall(r'(\w+)="?([^",]*)"?', authorization))
        ha1 = md5(f"{self.user}:{self.REALM}:{self.password}")
        ha2 = md5(f"{method}:{p.get('uri')}")
        want = md5(f"{ha1}:{p.get('nonce')}:{p.get('nc')}:{p.get('cnonce')}:auth:{ha2}")
        right = p.get("username") == self.user and p.get("qop") == "auth"
        return p.get("nonce") if right and p.get("response") == want else None

    def request(self, msg, answer, conn):
        lines = msg.decode().split("\r\n")
        method = lines[0].split(" ")[0]
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        nonce = self.nonce_of(headers.get("authorization", ""), method)
        keepalive = conn.get("playing") and method in ("GET_PARAMETER", "OPTIONS")
        if keepalive and self.keepalive == "stale" and len(self.nonces) == 1:
            self.nonces.append("n2")  # the nonce expired just now
        ok = nonce == self.nonces[-1] and not (keepalive and self.keepalive == "refuse")
        stale = nonce in self.nonces[:-1]
        self.answers.append((conn["id"], method, 200 if ok else 401, stale))
        if not ok:
            answer(f"RTSP/1.0 401 Unauthorized\r\nCSeq: {headers['cseq']}\r\n"
                   f'WWW-Authenticate: Digest realm="{self.REALM}", nonce="{self.nonces[-1]}", '
                   f'qop="auth"{", stale=true" if stale else ""}\r\n\r\n'.encode())
            return None
        conn["playing"] = conn.get("playing") or method == "PLAY"
        return "\r\n".join(line for line in lines
                           if not line.lower().startswith("authorization:")).encode()


def test_a_stale_nonce_on_a_keepalive_is_answered_with_the_new_one(clips):
    """A Digest camera whose nonce expires answers a keepalive 401 with
    stale=true and a new nonce: framebusd's client sends the keepalive again
    with it, the session does not time out, frames go on."""
    camera = Camera("--clip", clips["h264"], "--session-timeout", "4")
    proxy = DigestProxy(camera.port, "viewer", "s3cret", keepalive="stale")
    daemon = camera_daemon(camera, url=f"rtsp://viewer:s3cret@127.0.0.1:{proxy.port}/cam")
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)
        sub = bus.subscribe("door", mode="queue")
        with sub.acquire(timeout=10) as frame:
            first = frame.seq
        lines = lines_of(camera.proc)
        keepalives = [lines.get(timeout=10) for _ in range(3)]  # queue.Empty: none came
        assert keepalives == ["keepalive GET_PARAMETER"] * 3, keepalives
        while True:  # past the 6 s the keepalives took: no gap, no discontinuity
            with sub.acquire(timeout=5) as frame:
                assert not frame.discontinuity
                if frame.seq >= first + 150:
                    break
        answers = [a for a in proxy.answers if a[1] == "GET_PARAMETER"]
        assert answers[:2] == [(1, "GET_PARAMETER", 401, True),
                               (1, "GET_PARAMETER", 200, False)], proxy.answers
        assert all(a[2] == 200 for a in answers[2:]), proxy.answers
        assert bus.stream("door").state == "running"
        assert "keepalive" not in daemon.read_log()
        bus.close()
    finally:
        daemon.stop()
        proxy.close()
        camera.stop()


def test_a_refused_keepalive_is_logged_once(clips):
    """A keepalive answered 401 without stale=true: the credentials are
    refused now; framebusd's log says so once per connection, not at every
    keepalive (the session may then time out)."""
    camera = Camera("--clip", clips["h264"], "--session-timeout", "2")
    proxy = DigestProxy(camera.port, "viewer", "s3cret", keepalive="refuse")
    daemon = camera_daemon(camera, url=f"rtsp://viewer:s3cret@127.0.0.1:{proxy.port}/cam",
                           stall_timeout="30s")
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)

        def refused():
            count = {}
            for conn, method, status, _ in list(proxy.answers):
                if method == "GET_PARAMETER" and status == 401:
                    count[conn] = count.get(conn, 0) + 1
            return count
        wait_for("three keepalives refused on one connection",
                 lambda: max(refused().values(), default=0) >= 3)
        said = daemon.read_log().count(
            "stream door: the camera answered a keepalive (GET_PARAMETER) 401 Unauthorized: "
            "the session may time out")
        assert 1 <= said <= len(refused()), (said, refused(), daemon.read_log())
        bus.close()
    finally:
        daemon.stop()
        proxy.close()
        camera.stop()


def test_lost_rtp_packets_drop_their_frames_and_the_stream_goes_on(clips):
    camera = Camera("--clip", clips["h264"])
    proxy = LossyProxy(camera.port)
    daemon = camera_daemon(camera, url=f"rtsp://127.0.0.1:{proxy.port}/cam")
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)
        sub = bus.subscribe("door", mode="queue")
        for _ in range(60):
            with sub.acquire(timeout=10) as frame:
                assert frame.array.shape == (240, 320, 3)
        assert proxy.dropped > 0
        # The first is logged, then once a hundred more.
        log = daemon.wait_for_log("frames dropped: RTP packets were lost, the next frames wait "
                                  "for a keyframe (")
        assert bus.stream("door").state == "running", log
        bus.close()
    finally:
        daemon.stop()
        proxy.close()
        camera.stop()


def test_keepalives_come_before_the_session_times_out(clips):
    """The camera's sessions time out after 4 s: framebusd's client sends
    GET_PARAMETER (listed by OPTIONS) every 2 s, and frames go on."""
    camera = Camera("--clip", clips["h264"], "--session-timeout", "4")
    daemon = camera_daemon(camera)
    try:
        bus = framebus.connect(daemon.socket)
        wait_running(bus, "door", timeout=20)
        sub = bus.subscribe("door", mode="queue")
        with sub.acquire(timeout=10) as frame:
            first = frame.seq
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line.strip()) for line in camera.proc.stdout],
                         daemon=True).start()
        keepalives = [lines.get(timeout=10) for _ in range(3)]  # queue.Empty: none came
        assert keepalives == ["keepalive GET_PARAMETER"] * 3, keepalives
        while True:  # past the 6 s the keepalives took: no gap, no discontinuity
            with sub.acquire(timeout=5) as frame:
                assert not frame.discontinuity
                if frame.seq >= first + 150:
                    break
        assert bus.stream("door").state == "running"
        bus.close()
    finally:
        daemon.stop()
        camera.stop()
