# SPDX-License-Identifier: MIT
"""framebus-output between two hosts: two network namespaces joined by a
veth pair (made here), a real framebusd in each.  Host A decodes a test
pattern and framebus-output sends it over SRT, RTSP (pushed to B's framebusd,
FFmpeg's RTSP listener), RTMP and MPEG-TS over UDP; host B's framebusd
ingests each as an ordinary source and its frames carry A's seq, capture time
and meta.  The link is cut for 5 s and both sides recover by themselves; bad
URLs, encoders and streams fail alone, saying why.  Where namespaces cannot be
made (not root), both hosts are on loopback, and the tests say so."""
import json
import os
import random
import socket
import struct
import subprocess
import threading
import time
import urllib.error

import numpy as np
import pytest

import framebus
from conftest import FRAMEBUSCTL, Daemon, Prometheus, http, samples, wait_for, wait_running
from netns import Hosts

OUTPUT = os.environ.get("FRAMEBUS_OUTPUT", "framebus-output")

A_STREAMS = """
[stream cam0]
url = testsrc2=size=320x240:rate=30
input_format = lavfi
format = bgr24
slots = 8
"""


@pytest.fixture(scope="module")
def hosts():
    h = Hosts()
    yield h
    h.close()


@pytest.fixture(scope="module")
def host_a(hosts):
    d = Daemon(A_STREAMS, prefix=hosts.prefix("a"))
    yield d
    d.stop()


def free_port():
    return random.randrange(20000, 40000)


class Output:
    """framebus-output on host A (hosts None: on loopback), with a
    configuration of sections."""

    def __init__(self, hosts, daemon, config, args=()):
        self.config = os.path.join(daemon.dir.name, f"output-{free_port()}.conf")
        with open(self.config, "w") as f:
            f.write(config)
        self.log_path = self.config + ".log"
        self.log = open(self.log_path, "w")
        # Outputs added on demand (framebusctl output add) go here.
        self.dir = self.config + ".d"
        os.mkdir(self.dir)
        self.proc = subprocess.Popen(
            (hosts.prefix("a") if hosts else [])
            + [OUTPUT, "--config", self.config, "--config-dir", self.dir, "--socket",
               daemon.socket, *args],
            stdout=self.log, stderr=subprocess.STDOUT)

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(timeout=15) == 0, self.read_log()
        self.log.close()


class States:
    """Every state record of output.NAME (a results stream), read in a
    thread."""

    def __init__(self, socket, name):
        self.records = []
        self.bus = framebus.connect(socket, name="pytest-states")
        wait_for(f"output.{name}", lambda: self._stream(f"output.{name}"))
        self.sub = self.bus.subscribe(f"output.{name}", mode="queue")
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _stream(self, name):
        try:
            return self.bus.stream(name)
        except framebus.NoSuchStream:
            return None

    def _run(self):
        while not self.done.is_set():
            try:
                with self.sub.acquire(timeout=0.2) as frame:
                    self.records.append(json.loads(bytes(frame.meta)))
            except TimeoutError:
                pass
            except Exception:  # the stream or the bus went: nothing more to read
                return

    def states(self):
        """The states in order, repeats folded."""
        out = []
        for r in list(self.records):
            if not out or out[-1] != r["state"]:
                out.append(r["state"])
        return out

    def last(self):
        return self.records[-1] if self.records else {}

    def close(self):
        self.done.set()
        self.thread.join(5)
        self.bus.close()


def frames_of(bus, stream, n, timeout=30):
    """n frames of stream (queue mode), as (seq, source_seq, origin,
    capture_realtime_ns, capture_ns, meta)."""
    out = []
    wait_running(bus, stream, timeout=timeout)
    sub = bus.subscribe(stream, mode="queue")
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"{stream}: {len(out)} of {n} frames"
        with sub.acquire(timeout=timeout) as f:
            out.append((f.seq, f.source_seq, f.origin, f.capture_realtime_ns, f.capture_ns,
                        bytes(f.meta)))
    sub.close()
    return out


class Captures:
    """cam0's frames on host A, seq -> capture_realtime_ns, read in a thread;
    the seqs it missed (a loaded host can leave this reader a ring behind)
    and those before its first are in unseen()."""

    def __init__(self, socket, stream="cam0"):
        self.seen = {}
        self.missed = set()
        self.first = None
        self.bus = framebus.connect(socket, name="pytest-captures")
        wait_running(self.bus, stream)
        self.sub = self.bus.subscribe(stream, mode="queue")
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            try:
                with self.sub.acquire(timeout=0.2) as f:
                    self.seen[f.seq] = f.capture_realtime_ns
                    self.missed.update(range(f.seq - f.missed, f.seq))
                    self.first = self.first or f.seq
            except TimeoutError:
                pass

    def unseen(self, seq):
        return seq in self.missed or self.first is None or seq < self.first

    def close(self):
        self.done.set()
        self.thread.join(5)
        self.bus.close()


def check_identity(frames, captures, origin="cam0"):
    """B's frames are A's: the origin, source_seq A's seq, the capture time
    A's capture time of that very frame (for at least half of them: the
    others are frames the reader on A missed)."""
    now = time.time_ns()
    matched = 0
    for seq, source_seq, (name, origin_seq), capture_realtime, capture_ns, _ in frames:
        assert name == origin and origin_seq == source_seq > 0
        # Captured on A before B had it, and not long before.
        assert 0 < now - capture_realtime < 30e9
        assert 0 < capture_ns <= time.monotonic_ns()
        if captures.unseen(source_seq):
            continue
        assert source_seq in captures.seen, (source_seq, captures.first)
        assert capture_realtime == captures.seen[source_seq]
        matched += 1
    assert matched >= len(frames) / 2, (matched, len(frames))


def test_srt_carries_each_frames_origin_seq_and_capture_time(hosts, host_a):
    port = free_port()
    host_b = Daemon(f"""
[stream remote]
url = srt://{hosts.addr['b']}:{port}?mode=listener
""", prefix=hosts.prefix("b"))
    captures = Captures(host_a.socket)
    out = Output(hosts, host_a, f"""
[output srt]
stream = cam0
url = srt://{hosts.addr['b']}:{port}
bitrate = 1M
""")
    bus = framebus.connect(host_b.socket)
    try:
        frames = frames_of(bus, "remote", 30)
        check_identity(frames, captures)
        seqs = [f[1] for f in frames]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        bus.close()
        captures.close()
        out.stop()
        host_b.stop()
    log = out.read_log()
    assert "srt: streaming srt://" in log and "sent" in log


def test_link_cut_for_5s_both_sides_recover_by_themselves(hosts, host_a):
    port = free_port()
    host_b = Daemon(f"""
[stream remote]
url = srt://{hosts.addr['b']}:{port}?mode=listener
stall_timeout = 2s
retry_max = 1s
""", prefix=hosts.prefix("b"))
    out = Output(hosts, host_a, f"""
[output srt]
stream = cam0
url = srt://{hosts.addr['b']}:{port}
stall_timeout = 2s
retry_max = 2s
""")
    states = States(host_a.socket, "srt")
    bus = framebus.connect(host_b.socket)
    try:
        before = frames_of(bus, "remote", 10)[-1][1]
        wait_for("streaming", lambda: "streaming" in states.states())
        if hosts.isolated:
            hosts.link(False)
        else:
            print("# loopback: the cut is host B's framebusd stopped for 5 s")
            host_b.proc.terminate()
            host_b.proc.wait(10)
        wait_for("retrying", lambda: "retrying" in states.states(), timeout=30)
        bus_a = framebus.connect(host_a.socket)
        published = bus_a.stream("cam0").published
        time.sleep(5)
        # The bus went on meanwhile: the output's trouble is its own.
        assert bus_a.stream("cam0").published > published + 30
        bus_a.close()
        if hosts.isolated:
            hosts.link(True)
        else:
            host_b.start()
        wait_for("streaming again",
                 lambda: states.states()[states.states().index("retrying"):].count(
                     "streaming") > 0, timeout=60)
        after = frames_of(bus, "remote", 10, timeout=60)
        # Frames flow again, later ones than before the cut, still A's.
        assert after[-1][1] > before
        assert all(f[2][0] == "cam0" for f in after)
        last = states.last()
        assert last["state"] == "streaming" and last["reconnects"] >= 1
        assert last["dropped"] > 0  # the frames of the cut, counted
    finally:
        if hosts.isolated:
            hosts.link(True)
        bus.close()
        states.close()
        out.stop()
        host_b.stop()


def test_rtsp_push_and_rtmp_reach_host_b_with_their_identity(hosts, host_a):
    rtsp, rtmp = free_port(), free_port()
    # B's framebusd is the RTSP server in record mode (FFmpeg's listener)
    # and the RTMP server.
    host_b = Daemon(f"""
[stream rtsp]
url = rtsp://{hosts.addr['b']}:{rtsp}/live
option.rtsp_flags = listen
[stream rtmp]
url = rtmp://{hosts.addr['b']}:{rtmp}/live/cam0
option.listen = 1
""", prefix=hosts.prefix("b"))
    captures = Captures(host_a.socket)
    out = Output(hosts, host_a, f"""
[output rtsp]
stream = cam0
url = rtsp://{hosts.addr['b']}:{rtsp}/live
output_option.rtsp_transport = tcp

[output rtmp]
stream = cam0
url = rtmp://{hosts.addr['b']}:{rtmp}/live/cam0
encoder = libx264
option.preset = ultrafast
""")
    bus = framebus.connect(host_b.socket)
    try:
        check_identity(frames_of(bus, "rtsp", 15), captures)
        check_identity(frames_of(bus, "rtmp", 15), captures)
    finally:
        bus.close()
        captures.close()
        out.stop()
        host_b.stop()


def test_mpegts_over_udp_carries_meta(hosts, host_a):
    """A stream published by a client on A, with meta: B's frames have it."""
    port = free_port()
    host_b = Daemon(f"""
[stream marked]
url = udp://{hosts.addr['b']}:{port}
""", prefix=hosts.prefix("b"))
    pub_bus = framebus.connect(host_a.socket)
    pub = pub_bus.publish("marked", width=320, height=240, format="gray8")
    done = threading.Event()

    def produce():
        n = 0
        while not done.is_set():
            with pub.frame() as f:
                f.array[:] = n % 256
                f.meta = json.dumps({"n": n}).encode()
            n += 1
            time.sleep(1 / 30)

    producer = threading.Thread(target=produce)
    producer.start()
    out = Output(hosts, host_a, f"""
[output ts]
stream = marked
url = udp://{hosts.addr['b']}:{port}?pkt_size=1316
""")
    bus = framebus.connect(host_b.socket)
    try:
        frames = frames_of(bus, "marked", 20)
        for seq, source_seq, origin, _, _, meta in frames:
            assert origin == ("marked", source_seq)
            # Published n from 0, seq from 1.
            assert json.loads(meta) == {"n": source_seq - 1}
    finally:
        bus.close()
        out.stop()
        done.set()
        producer.join(5)
        pub_bus.close()
        host_b.stop()


def test_hevc_carries_the_identity_too(hosts, host_a):
    """libx265 puts a UUID of its own before the payload: read behind it."""
    port = free_port()
    host_b = Daemon(f"""
[stream hevc]
url = udp://{hosts.addr['b']}:{port}
""", prefix=hosts.prefix("b"))
    captures = Captures(host_a.socket)
    out = Output(hosts, host_a, f"""
[output hevc]
stream = cam0
url = udp://{hosts.addr['b']}:{port}?pkt_size=1316
encoder = libx265
option.preset = ultrafast
""")
    bus = framebus.connect(host_b.socket)
    try:
        check_identity(frames_of(bus, "hevc", 15), captures)
    finally:
        bus.close()
        captures.close()
        out.stop()
        host_b.stop()


def test_the_bitrate_asked_for_is_what_is_sent(hosts, host_a, tmp_path):
    """The encoder counts frames at the stream's rate (libx264's zerolatency
    spreads the bitrate over frames): not at the 90 kHz time base, which
    made 4M into some 80 kb/s."""
    path = tmp_path / "out.ts"
    out = Output(hosts, host_a, f"""
[output file]
stream = cam0
url = file://{path}
format = mpegts
bitrate = 400k
""")
    states = States(host_a.socket, "file")
    try:
        wait_for("150 frames sent", lambda: states.last().get("sent", 0) >= 150, timeout=60)
    finally:
        states.close()
        out.stop()
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=bit_rate", "-of", "json",
         str(path)], check=True, capture_output=True, text=True).stdout)
    assert 200_000 < int(probe["format"]["bit_rate"]) < 800_000, probe


def test_a_stream_that_has_just_started_gets_the_bitrate_asked_for(tmp_path):
    """The output learns the stream's rate from its own frames: framebusd's
    rate over the last second of a stream younger than that is a few frames,
    which given to the encoder made it spend several times the bitrate."""
    daemon = Daemon("")
    path = tmp_path / "young.ts"
    out = Output(None, daemon, f"""
[output young]
stream = py.young
url = file://{path}
format = mpegts
bitrate = 400k
""")  # started first: it waits for the stream, and takes it as it starts
    rng = np.random.default_rng(1)
    noise = [rng.integers(0, 256, (240, 320), dtype=np.uint8) for _ in range(8)]
    try:
        with framebus.connect(daemon.socket) as bus:
            pub = bus.publish("py.young", 320, 240, format="gray8")
            start = time.monotonic()
            for i in range(150):  # 5 s at 30 fps of pictures no encoder squeezes
                time.sleep(max(0.0, start + i / 30 - time.monotonic()))
                with pub.frame() as frame:
                    frame.array[:] = noise[i % len(noise)]
            pub.close()
        out.stop()
        assert "learning the frame rate of py.young" in out.read_log()
    finally:
        out.stop()
        daemon.stop()
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=bit_rate", "-of", "json",
         str(path)], check=True, capture_output=True, text=True).stdout)
    assert 200_000 < int(probe["format"]["bit_rate"]) < 800_000, probe


def test_bad_outputs_fail_alone_saying_why(hosts, host_a):
    port = free_port()
    host_b = Daemon(f"""
[stream good]
url = udp://{hosts.addr['b']}:{port}
""", prefix=hosts.prefix("b"))
    out = Output(hosts, host_a, f"""
[output scheme]
stream = cam0
url = gopher://{hosts.addr['b']}:70/x

[output encoder]
stream = cam0
url = udp://{hosts.addr['b']}:{port + 1}
encoder = nosuchenc

[output option]
stream = cam0
url = udp://{hosts.addr['b']}:{port + 1}
option.nosuchoption = 1

[output nostream]
stream = nosuch
url = udp://{hosts.addr['b']}:{port + 1}

[output refused]
stream = cam0
url = tcp://{hosts.addr['b']}:{port + 2}

[output good]
stream = cam0
url = udp://{hosts.addr['b']}:{port}
output_option.nosuchmuxoption = 1
""")
    watched = {n: States(host_a.socket, n)
               for n in ("scheme", "encoder", "option", "nostream", "refused", "good")}
    bus = framebus.connect(host_b.socket)
    try:
        frames = frames_of(bus, "good", 10)
        assert all(f[2][0] == "cam0" for f in frames)

        def reason(name, state):
            r = watched[name].last()
            return r.get("state") == state and r["reason"]

        assert "gopher" in wait_for("scheme", lambda: reason("scheme", "failed"))
        assert "nosuchenc" in wait_for("encoder", lambda: reason("encoder", "failed"))
        assert "nosuchoption" in wait_for("option", lambda: reason("option", "failed"))
        assert "nosuch" in wait_for("nostream", lambda: reason("nostream", "waiting"))
        assert "cannot connect" in wait_for("refused", lambda: reason("refused", "retrying"))
        assert watched["good"].last()["state"] == "streaming"
        log = out.read_log()
        assert "encoder: failed" in log and "nosuchenc" in log
        # A muxer option nothing took is said, and the output goes on.
        assert "took output_option.nosuchmuxoption" in log
    finally:
        bus.close()
        for w in watched.values():
            w.close()
        out.stop()
        host_b.stop()


def test_an_output_follows_framebusd_restarting(hosts):
    port = free_port()
    a = Daemon(A_STREAMS, prefix=hosts.prefix("a"))
    host_b = Daemon(f"""
[stream remote]
url = udp://{hosts.addr['b']}:{port}
""", prefix=hosts.prefix("b"))
    out = Output(hosts, a, f"""
[output ts]
stream = cam0
url = udp://{hosts.addr['b']}:{port}
""")
    bus = framebus.connect(host_b.socket)
    try:
        before = frames_of(bus, "remote", 5)[-1]
        a.terminate()
        a.start()
        # cam0 starts again from seq 1 in the new framebusd; its frames
        # reach B again, and the output's state stream is back.
        wait_for("frames of the new framebusd",
                 lambda: frames_of(bus, "remote", 1)[0][1] < before[1], timeout=60)
        states = States(a.socket, "ts")
        wait_for("streaming", lambda: states.last().get("state") == "streaming")
        states.close()
        assert "ts: waiting" in out.read_log() and "framebusd went away" in out.read_log()
    finally:
        bus.close()
        out.stop()
        a.stop()
        host_b.stop()


def test_outputs_added_and_removed_on_demand_leave_the_others_alone(hosts, host_a):
    first, second = free_port(), free_port()
    host_b = Daemon(f"""
[stream first]
url = udp://{hosts.addr['b']}:{first}
[stream second]
url = udp://{hosts.addr['b']}:{second}
""", prefix=hosts.prefix("b"))
    out = Output(hosts, host_a, f"""
[output first]
stream = cam0
url = udp://{hosts.addr['b']}:{first}
""")
    states = States(host_a.socket, "first")
    bus = framebus.connect(host_b.socket)

    def ctl(*args):
        return subprocess.run([FRAMEBUSCTL, "--socket", host_a.socket, "output", *args,
                               "--dir", out.dir], capture_output=True, text=True, timeout=30)

    try:
        frames_of(bus, "first", 5)
        r = ctl("add", "second", "cam0", f"udp://{hosts.addr['b']}:{second}", "bitrate=1M",
                "option.preset=ultrafast")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["output"] == "second"
        assert all(f[2][0] == "cam0" for f in frames_of(bus, "second", 10))
        # Refused before anything is written, or failing alone, saying why.
        r = ctl("add", "odd", "cam0", "udp://127.0.0.1:9", "colour=red")
        assert r.returncode == 2 and "colour=red" in r.stderr
        assert not os.path.exists(os.path.join(out.dir, "odd.conf"))
        r = ctl("add", "broken", "cam0", "udp://127.0.0.1:9", "encoder=nosuchenc")
        assert r.returncode == 1 and json.loads(r.stdout)["state"] == "failed"
        assert "nosuchenc" in json.loads(r.stdout)["reason"]
        r = ctl("add", "second", "cam0", "udp://127.0.0.1:9")
        assert r.returncode == 1 and "exists" in r.stderr
        for name in ("second", "broken"):
            r = ctl("remove", name)
            assert r.returncode == 0, r.stderr
        with pytest.raises(framebus.NoSuchStream):
            bus_a = framebus.connect(host_a.socket)
            try:
                bus_a.stream("output.second")
            finally:
                bus_a.close()
        # The output from the file ran on through it all: one thread, one
        # connection, its counters never started again.
        frames_of(bus, "first", 5)
        counts = [r["frames"] for r in states.records]
        assert counts == sorted(counts) and states.last()["reconnects"] == 0
        assert states.states() == ["streaming"] or states.states()[-1] == "streaming"
        log = out.read_log()
        assert "second: removed" in log and "first: removed" not in log
    finally:
        bus.close()
        states.close()
        out.stop()
        host_b.stop()


@pytest.mark.parametrize("config,error", [
    ("[output x]\nurl = srt://127.0.0.1:9\n", "[output x] stream: missing"),
    ("[output x]\nstream = cam0\n", "[output x] url: missing"),
    ("[output x]\nstream = cam0\nurl = nowhere\n", "'nowhere' is not a URL"),
    ("[output x]\nstream = cam0\nurl = udp://h:1\nbitrate = fast\n", "bitrate"),
    ("[output x]\nstream = cam0\nurl = udp://h:1\ncolour = red\n", "colour: unknown key"),
    ("[outputs]\nstream = cam0\n", "unknown section"),
    ("", "no [output NAME] section"),
    ("[output x]\nstream = cam0\nurl = srt://127.0.0.1:9?" + "a" * 200 + "\n",
     "output.conf:3: line longer than 199 characters"),
])
def test_bad_configurations_are_refused_naming_the_line(tmp_path, config, error):
    path = tmp_path / "output.conf"
    path.write_text(config)
    r = subprocess.run([OUTPUT, "--config", str(path), "--config-dir", str(tmp_path / "none"),
                        "--socket", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and error in r.stderr, r.stderr


class TcpReceiver:
    """A receiver of MPEG-TS over TCP on loopback, read in a thread: takes a
    connection, counts its bytes; stop() resets it and listens no more."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self):
        conn = None
        while not self.done.is_set():
            try:
                if conn is None:
                    conn, _ = self.sock.accept()
                    conn.settimeout(0.2)
                data = conn.recv(65536)
                if not data:
                    conn.close()
                    conn = None
                self.received += len(data)
            except socket.timeout:
                pass
        if conn:
            # A reset, not an orderly end: the sender's next write fails.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        self.sock.close()

    def stop(self):
        self.done.set()
        self.thread.join(5)


def test_metrics_show_each_outputs_state_and_counts(tmp_path):
    """--metrics: an output to a TCP receiver on loopback streams, its sent
    frames grow, and when the receiver goes it is retrying, a reconnect
    counted; a real Prometheus scrapes the page."""
    daemon = Daemon(A_STREAMS)
    receiver = TcpReceiver()
    port, prom_port = free_port(), free_port()
    out = Output(None, daemon, f"""
[output tcp]
stream = cam0
url = tcp://user:secret@127.0.0.1:{receiver.port}?send_buffer_size=65536
retry_max = 1s
""", args=["--metrics", f"127.0.0.1:{port}"])
    prom = Prometheus(tmp_path, f"127.0.0.1:{port}", prom_port)
    labels = 'output="tcp",stream="cam0"'
    sent = f'framebus_output_frames_total{{{labels},result="sent"}}'

    def page():
        try:
            status, headers, text = http(port)
        except (urllib.error.URLError, ConnectionError):
            return None  # not listening yet
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return samples(text) | {"text": text}

    def in_state(state):
        m = page()
        return m and m.get(f'framebus_output_state{{{labels},state="{state}"}}') == 1 and m

    try:
        m = wait_for("streaming", lambda: in_state("streaming"))
        for other in ("waiting", "connecting", "retrying", "failed"):
            assert m[f'framebus_output_state{{{labels},state="{other}"}}'] == 0
        assert m[f'framebus_output_info{{{labels},url="tcp://127.0.0.1:{receiver.port}"}}'] == 1
        assert "secret" not in m["text"]
        assert m[f'framebus_output_reconnects_total{{{labels}}}'] == 0
        assert "# TYPE framebus_output_frames_total counter" in m["text"]
        lint = subprocess.run(["promtool", "check", "metrics"], input=m["text"],
                              capture_output=True, text=True, timeout=30)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        first = m[sent]
        m = wait_for("frames sent", lambda: (m := page())[sent] >= first + 30 and m)
        assert m[f'framebus_output_streaming_seconds{{{labels}}}'] > 0
        assert receiver.received > 0

        # Prometheus sees the same: the state, and frames sent per second.
        def scraped():
            r = prom.query(f'framebus_output_state{{{labels},state="streaming"}}')
            rate = prom.query(f"rate({sent}[5s])")
            return r and r[0]["value"][1] == "1" and rate and float(rate[0]["value"][1]) > 0
        wait_for("Prometheus scraping", scraped, timeout=60)
        [up] = prom.query('up{job="framebus"}')
        assert up["value"][1] == "1"

        # An output added on demand is on the page, and off it once removed;
        # the first goes on meanwhile.
        extra = 'framebus_output_state{output="extra",stream="nosuch",state="waiting"}'
        with open(os.path.join(out.dir, "extra.tmp"), "w") as f:
            f.write("[output extra]\nstream = nosuch\nurl = udp://127.0.0.1:9\n")
        os.rename(os.path.join(out.dir, "extra.tmp"), os.path.join(out.dir, "extra.conf"))
        wait_for("the added output", lambda: page().get(extra) == 1)
        os.unlink(os.path.join(out.dir, "extra.conf"))
        wait_for("the removed output gone", lambda: 'output="extra"' not in page()["text"])
        assert in_state("streaming")[f'framebus_output_reconnects_total{{{labels}}}'] == 0

        receiver.stop()
        m = wait_for("retrying", lambda: in_state("retrying"), timeout=30)
        assert m[f'framebus_output_state{{{labels},state="streaming"}}'] == 0
        assert m[f'framebus_output_reconnects_total{{{labels}}}'] == 1
        assert m[f'framebus_output_streaming_seconds{{{labels}}}'] == 0

        # Bad requests get what framebusd's metrics give.
        status, headers, text = http(port, method="POST")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        assert text == "framebus-output metrics: only GET and HEAD\n"
        assert http(port, "/nope")[0] == 404
        assert http(port, "/")[:3:2] == (200, "framebus-output: Prometheus metrics at /metrics\n")
        assert f"metrics at http://127.0.0.1:{port}/metrics" in out.read_log()
    finally:
        prom.stop()
        receiver.stop()
        out.stop()
        daemon.stop()


def test_bad_metrics_addresses_are_refused(tmp_path):
    path = tmp_path / "output.conf"
    path.write_text("[output x]\nstream = cam0\nurl = udp://127.0.0.1:9\n")

    def run(address):
        return subprocess.run([OUTPUT, "--config", str(path), "--config-dir",
                               str(tmp_path / "none"), "--socket", str(tmp_path / "none"),
                               "--metrics", address],
                              capture_output=True, text=True, timeout=10)

    for bad in ("nowhere", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "localhost:9465"):
        r = run(bad)
        assert r.returncode == 2 and f"--metrics '{bad}' is not ADDRESS:PORT" in r.stderr, \
            r.stderr
    # A port in use: said at start, exit 1 (systemd tries again; exit 2 is
    # a configuration starting again cannot mend).
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        r = run(address)
        assert r.returncode == 1, r.stderr
        assert f"--metrics {address}: cannot serve http://{address}/metrics" in r.stderr
        assert "Address already in use" in r.stderr
