# SPDX-License-Identifier: MIT
"""Every frame's trace: when its picture was captured and decoded, and the
frames of other streams it passed on its way (docs/tracing.md).  The chain
here is the one a user builds: a decoded camera, a derived stream of it
(framebusd scales), and gray.py (a Python process) publishing its result."""
import json
import os
import subprocess
import sys
import time

import pytest

import framebus
from conftest import FRAMEBUSCTL, Daemon, wait_running

GRAY = os.path.join(os.path.dirname(__file__), "..", "..", "python", "examples", "gray.py")

STREAMS = """
[stream cam0]
url = testsrc2=size=320x240:rate=30
input_format = lavfi
format = bgr24
slots = 16
[stream cam0.small]
from = cam0
width = 160
height = 120
format = bgr24
slots = 16
"""


@pytest.fixture(scope="module")
def daemon():
    d = Daemon(STREAMS)
    yield d
    d.stop()


def test_a_decoded_frame_knows_its_capture_decode_and_publish_times(daemon):
    bus = framebus.connect(daemon.socket)
    wait_running(bus, "cam0")
    for frame in bus.subscribe("cam0", mode="queue"):
        if frame.seq < 3:
            continue
        assert frame.hops == [] and frame.origin == ("cam0", frame.seq)
        assert frame.capture_ns <= frame.decode_ns <= frame.monotonic_ns
        assert frame.monotonic_ns <= time.monotonic_ns()
        # The same instant on the wall clock, within the time between two
        # clock readings.
        skew = (frame.capture_realtime_ns - frame.capture_ns) - (time.time_ns() -
                                                                  time.monotonic_ns())
        assert abs(skew) < 5_000_000, skew
        assert frame.time_base == (1, 30)
        break
    bus.close()


def test_a_processed_frame_names_the_camera_frame_it_came_from(daemon):
    bus = framebus.connect(daemon.socket)
    wait_running(bus, "cam0.small")
    cam = bus.subscribe("cam0", mode="queue")
    gray = subprocess.Popen([sys.executable, GRAY, "--socket", daemon.socket, "--source",
                             "cam0.small", "--output", "cam0.gray"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                out = bus.subscribe("cam0.gray", mode="queue")
                break
            except (framebus.NoSuchStream, framebus.Error):
                time.sleep(0.05)
        # Every cam0 frame this test saw, by seq: (capture, publish).
        seen = {}
        checked = 0
        for frame in out:
            while True:  # cam0 is ahead of what went through two more hops
                f = cam.try_acquire()
                if f is None:
                    break
                seen[f.seq] = (f.capture_ns, f.monotonic_ns)
                f.release()
            hops = frame.hops
            assert [h[0] for h in hops] == ["cam0", "cam0.small"], hops
            (_, cam_seq, cam_published), (_, small_seq, small_published) = hops
            assert frame.origin == ("cam0", cam_seq)
            assert frame.source_seq == small_seq
            if cam_seq not in seen:
                continue
            capture, published = seen[cam_seq]
            assert frame.capture_ns == capture
            assert cam_published == published
            assert capture <= cam_published <= small_published <= frame.monotonic_ns
            checked += 1
            if checked == 10:
                break
        assert checked == 10
    finally:
        gray.terminate()
        gray.communicate(timeout=10)
        bus.close()


def test_framebusctl_trace_shows_each_frames_way_hop_by_hop(daemon, tmp_path):
    bus = framebus.connect(daemon.socket)
    wait_running(bus, "cam0.small")
    gray = subprocess.Popen([sys.executable, GRAY, "--socket", daemon.socket, "--source",
                             "cam0.small", "--output", "cam0.gray"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if [s for s in bus.streams() if s.name == "cam0.gray" and s.state == "running"]:
                break
            time.sleep(0.05)
        trace = json.loads(subprocess.run(
            [FRAMEBUSCTL, "--socket", daemon.socket, "trace", "cam0.gray", "--frames", "10",
             "--json"], check=True, capture_output=True, text=True, timeout=30).stdout)
        assert trace["stream"] == "cam0.gray" and len(trace["frames"]) == 10
        for frame in trace["frames"]:
            names = [name for name, _ in frame["points"]]
            assert names == ["capture", "decode", "cam0", "cam0.small", "cam0.gray", "here"]
            times = [ns for _, ns in frame["points"]]
            assert all(times) and times == sorted(times), frame
            assert frame["origin"][0] == "cam0"
        png = tmp_path / "trace.png"
        table = subprocess.run(
            [FRAMEBUSCTL, "--socket", daemon.socket, "trace", "cam0.gray", "--frames", "10",
             "--plot", str(png)], capture_output=True, text=True, timeout=60,
            env=dict(os.environ, FRAMEBUS_PYTHON=sys.executable))
        assert table.returncode == 0, table.stderr
        assert ">cam0.small" in table.stdout and "p99" in table.stdout, table.stdout
        import cv2
        img = cv2.imread(str(png))
        assert img is not None and img.shape[1] > 800, "no PNG plot"
        bad = subprocess.run([FRAMEBUSCTL, "--socket", daemon.socket, "trace", "cam0.gray",
                              "--frames", "0"], capture_output=True, text=True, timeout=10)
        assert bad.returncode == 2 and "--frames 0: 1 to 100000" in bad.stderr
        none = subprocess.run([FRAMEBUSCTL, "--socket", daemon.socket, "trace", "nope"],
                              capture_output=True, text=True, timeout=10)
        assert none.returncode == 1 and "nope" in none.stderr
    finally:
        gray.terminate()
        gray.communicate(timeout=10)
        bus.close()
