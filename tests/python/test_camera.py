# SPDX-License-Identifier: MIT
"""framebusd pulling a real RTSP camera (gst-rtsp-server on 127.0.0.1,
tests/cameras/rtsp-camera.py): a camera that reboots or stalls comes back by
itself, and its subscribers go on in the same subscription."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import framebus
from conftest import Daemon, wait_running

CAMERA = os.path.join(os.path.dirname(__file__), "..", "cameras", "rtsp-camera.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Camera:
    """The RTSP camera process; start() again after stop() is a reboot."""

    def __init__(self):
        self.port = free_port()
        self.start()

    def start(self):
        self.proc = subprocess.Popen([sys.executable, CAMERA, str(self.port)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready", "the camera did not start"

    def stop(self):
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def camera():
    c = Camera()
    yield c
    c.stop()


def camera_daemon(camera):
    return Daemon(f"[stream door]\nurl = rtsp://127.0.0.1:{camera.port}/cam\n"
                  "retry_min = 200ms\nretry_max = 1s\nstall_timeout = 2s\n")


def wait_state(bus, name, state, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = bus.stream(name)
        if info.state == state:
            return info
        time.sleep(0.05)
    raise AssertionError(f"stream {name} not {state}: {bus.stream(name)}")


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
