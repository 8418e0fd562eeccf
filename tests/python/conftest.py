# SPDX-License-Identifier: MIT
"""Fixtures for the Python tests: a real framebusd per test module, and TAP
output (one line per test) for meson and scripts/test."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from systemd_peer import FdStore, start_service

FRAMEBUSD = os.environ.get("FRAMEBUSD", "framebusd")
FRAMEBUSCTL = os.environ.get("FRAMEBUSCTL", "framebusctl")

DEFAULT_STREAMS = """
[stream cam0]
url = testsrc2=size=320x240:rate=30
input_format = lavfi
format = bgr24
slots = 8
"""


class Daemon:
    """A framebusd on a private socket, stopped (and checked) at the end."""

    def __init__(self, streams=DEFAULT_STREAMS, notify_socket=None, prefix=()):
        self.prefix = list(prefix)  # e.g. ip netns exec NAME: framebusd in a namespace
        self.dir = tempfile.TemporaryDirectory(prefix="framebus-py-")
        self.socket = os.path.join(self.dir.name, "framebus.sock")
        self.config = os.path.join(self.dir.name, "framebusd.conf")
        self.log_path = os.path.join(self.dir.name, "framebusd.log")
        with open(self.config, "w") as f:
            f.write(f"[daemon]\nsocket = {self.socket}\n{streams}")
        self.log = open(self.log_path, "w")
        self.start(notify_socket=notify_socket)

    def start(self, notify_socket=None, passed=()):
        """Start framebusd (again), as systemd starts a service
        (systemd_peer.start_service); returns once it listens."""
        listening = f"listening on {self.socket}"
        before = self.read_log().count(listening)
        self.proc = start_service(self.prefix + [FRAMEBUSD, "--config", self.config], notify_socket,
                                  passed, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while self.read_log().count(listening) == before:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"framebusd did not start:\n{self.read_log()}")
            time.sleep(0.02)

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_for_log(self, text, timeout=10):
        """The log, once it says text."""
        deadline = time.monotonic() + timeout
        while text not in self.read_log():
            if time.monotonic() > deadline:
                raise AssertionError(f"framebusd never logged {text!r}:\n{self.read_log()}")
            time.sleep(0.02)
        return self.read_log()

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def terminate(self):
        """SIGTERM, as systemctl stop or restart does; it must exit cleanly."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=10) == 0, self.read_log()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.log.close()
        self.dir.cleanup()


@pytest.fixture
def fd_store():
    holder = tempfile.TemporaryDirectory(prefix="framebus-fdstore-")
    store = FdStore(holder.name)
    yield store
    store.close()
    holder.cleanup()


@pytest.fixture(scope="module")
def daemon():
    d = Daemon()
    yield d
    d.stop()


@pytest.fixture
def bus(daemon):
    import framebus
    b = framebus.connect(daemon.socket, name="pytest")
    yield b
    b.close()


@pytest.fixture
def slow_subscriber(daemon):
    """A queue subscriber of cam0 that keeps each frame 20 ms, in a thread; its
    bus."""
    import framebus
    bus = framebus.connect(daemon.socket, name="slowpoke")
    wait_running(bus, "cam0")
    sub = bus.subscribe("cam0", mode="queue")
    done = threading.Event()

    def run():
        for frame in sub:
            with frame:
                time.sleep(0.02)
            if done.is_set():
                break

    thread = threading.Thread(target=run)
    thread.start()
    yield bus
    done.set()
    thread.join(5)
    bus.close()


def in_a_ring(ptr, size):
    """Whether size bytes at ptr lie inside a ring memfd mapped into this
    process: the memory is the ring's, not a copy."""
    with open("/proc/self/maps") as f:
        for line in f:
            if "memfd:framebus-ring" in line:
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                if start <= ptr and ptr + size <= end:
                    return True
    return False


def wait_state(bus, name, state, timeout=15):
    """The stream's info once it is in state, polled until timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = bus.stream(name)
        if info.state == state:
            return info
        time.sleep(0.05)
    raise AssertionError(f"stream {name} not {state}: {bus.stream(name)}")


def wait_running(bus, name, timeout=10):
    return wait_state(bus, name, "running", timeout)


def daemon_on(url, extra="", stall_timeout="2s"):
    """A framebusd reading the camera at url as stream door, retrying fast."""
    return Daemon(f"[stream door]\nurl = {url}\nretry_min = 200ms\nretry_max = 1s\n"
                  f"stall_timeout = {stall_timeout}\n{extra}")


def wait_for(what, check, timeout=20):
    """check()'s first true value, polled until timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def http(port, path="/metrics", method="GET"):
    """(status, headers, body) of a request to 127.0.0.1:port."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def samples(text):
    """{'name{labels}': value} of a Prometheus metrics page."""
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                     if line and not line.startswith("#"))}


class Prometheus:
    """A real Prometheus server (Debian's) scraping target (HOST:PORT) once a
    second as job "framebus", its API on 127.0.0.1:port (test_metrics.py,
    test_output.py)."""

    def __init__(self, tmp_path, target, port):
        config = tmp_path / "prometheus.yml"
        config.write_text(f"""global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: framebus
    static_configs:
      - targets: ['{target}']
""")
        self.port = port
        self.proc = subprocess.Popen(["prometheus", f"--config.file={config}",
                                      f"--storage.tsdb.path={tmp_path / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)

    def query(self, q):
        """An instant query's result; None while Prometheus is not listening yet."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?query={urllib.parse.quote(q)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())["data"]["result"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{q}: {e.code} {e.read().decode()}")
        except (urllib.error.URLError, ConnectionError):
            return None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=20)


# --- TAP -----------------------------------------------------------------

_tap = {"n": 0}


def pytest_addoption(parser, pluginmanager):
    # TAP runs go without the terminal plugin (-p no:terminal), which defines
    # 'verbose': pytest's explanation of a failed assert reads it, and said
    # "no option named 'verbose'" instead of what failed.
    if pluginmanager.is_blocked("terminal"):
        parser.addoption("--verbose", action="count", default=0, dest="verbose")


def pytest_configure(config):
    if os.environ.get("FRAMEBUS_TAP"):
        sys.stdout.write("TAP version 13\n")


def pytest_runtest_logreport(report):
    if not os.environ.get("FRAMEBUS_TAP"):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _tap["n"] += 1
        name = report.nodeid.split("::")[-1]
        if report.passed:
            line = f"ok {_tap['n']} - python::{name}"
        elif report.skipped:
            line = f"ok {_tap['n']} - python::{name} # SKIP"
        else:
            line = f"not ok {_tap['n']} - python::{name}"
            for text in str(report.longrepr).splitlines()[-30:]:
                line += f"\n# {text}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def pytest_collectreport(report):
    # A module that cannot be imported (a missing dependency) stops the run:
    # say why, where meson's log shows it.
    if not os.environ.get("FRAMEBUS_TAP") or not report.failed:
        return
    _tap["n"] += 1
    line = f"not ok {_tap['n']} - python::collecting {report.nodeid}"
    for text in str(report.longrepr).splitlines()[-30:]:
        line += f"\n# {text}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def pytest_unconfigure(config):
    if os.environ.get("FRAMEBUS_TAP"):
        sys.stdout.write(f"1..{_tap['n']}\n")
