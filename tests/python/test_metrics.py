# SPDX-License-Identifier: MIT
"""framebusd's Prometheus metrics ([daemon] metrics = ADDRESS:PORT): scraped
by a real Prometheus server (Debian's), read directly, and hit with bad and
slow requests, which hurt nothing."""
import os
import signal
import socket
import subprocess
import time

import pytest

import framebus
from conftest import DEFAULT_STREAMS, FRAMEBUSD, Daemon, Prometheus, http, samples, wait_running

PORT = 20000 + os.getpid() % 20000  # the metrics'; Prometheus listens on PORT + 1


@pytest.fixture(scope="module")
def daemon():
    d = Daemon(f"metrics = 127.0.0.1:{PORT}\n" + DEFAULT_STREAMS)
    yield d
    d.stop()


def test_metrics_name_every_stream_and_subscriber(daemon, slow_subscriber):
    time.sleep(2.5)
    status, headers, text = http(PORT, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    m = samples(text)
    assert m['framebus_stream_frames_published_total{stream="cam0"}'] > 30
    assert m['framebus_stream_state{stream="cam0",state="running"}'] == 1
    assert m["framebus_clients"] >= 1
    assert 0 < m['framebus_stream_capture_to_publish_seconds{stream="cam0"}'] < 0.2
    [key] = [k for k in m if k.startswith("framebus_subscriber_frames_total{")]
    assert 'client="slowpoke[' in key and 'stream="cam0"' in key and m[key] > 30
    labels = key[key.index("{") + 1:-1]
    # The busy histogram: cumulative, ending at the count, with the 20 ms it
    # keeps each frame between its 16.384 and 32.768 ms buckets.
    count = m[f"framebus_subscriber_busy_seconds_count{{{labels}}}"]
    assert m[f'framebus_subscriber_busy_seconds_bucket{{{labels},le="+Inf"}}'] == count > 30
    assert m[f'framebus_subscriber_busy_seconds_bucket{{{labels},le="0.016384"}}'] < count / 10
    assert m[f'framebus_subscriber_busy_seconds_bucket{{{labels},le="0.032768"}}'] > count * 0.9
    mean = m[f"framebus_subscriber_busy_seconds_sum{{{labels}}}"] / count
    assert 0.018 < mean < 0.03, mean
    assert "# TYPE framebus_subscriber_wait_seconds histogram" in text


def test_prometheus_scrapes_the_frame_rate(daemon, slow_subscriber, tmp_path):
    prom = Prometheus(tmp_path, f"127.0.0.1:{PORT}", PORT + 1)
    try:
        deadline = time.monotonic() + 30
        rate = None
        while time.monotonic() < deadline:
            time.sleep(1)
            result = prom.query('rate(framebus_stream_frames_published_total{stream="cam0"}[5s])')
            if result:
                rate = float(result[0]["value"][1])
                if 25 <= rate <= 35:
                    break
        assert rate is not None and 25 <= rate <= 35, rate
        [up] = prom.query('up{job="framebus"}')
        assert up["value"][1] == "1"
        busy = prom.query("histogram_quantile(0.5, framebus_subscriber_busy_seconds_bucket)")
        assert busy and 0.016 <= float(busy[0]["value"][1]) <= 0.033, busy
    finally:
        prom.stop()


def test_bad_and_slow_requests_hurt_nothing(daemon, slow_subscriber):
    assert http(PORT, "/metrics", "POST")[0] == 405
    assert http(PORT, "/metrics", "DELETE")[0] == 405
    assert http(PORT, "/nope")[0] == 404
    assert http(PORT, "/../../etc/passwd")[0] in (400, 404)
    assert http(PORT, "/")[0] == 200
    # Garbage for a request line, a header without end, nothing at all: the
    # connections are answered 400 or closed, each on its own.
    slow = []
    for junk in (b"\x00\xff" * 500 + b"\r\n\r\n", b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 100000,
                 b"GET /metrics HTTP/1.1\r\n", b""):
        s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
        s.sendall(junk)
        slow.append(s)
    # Meanwhile (the half requests still open) the metrics and the bus serve.
    for _ in range(3):
        assert http(PORT, "/metrics")[0] == 200
    frames = slow_subscriber.subscribe("cam0")
    assert frames.acquire(timeout=5) is not None
    frames.close()
    for s in slow:
        s.close()
    assert daemon.proc.poll() is None


def test_a_bad_address_is_named_and_a_taken_port_is_no_failure(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text(f"[daemon]\nsocket = {tmp_path}/s.sock\nmetrics = localhost:http\n")
    r = subprocess.run([FRAMEBUSD, "--config", str(conf)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0
    assert f"{conf}:3: [daemon] metrics: 'localhost:http' is not ADDRESS:PORT" in r.stderr
    # A port somebody else has: the bus runs, the log says why there are no
    # metrics, and a reload that moves them to a free port serves them.
    taken = socket.socket()
    taken.bind(("127.0.0.1", PORT + 2))
    taken.listen()
    d = Daemon(f"metrics = 127.0.0.1:{PORT + 2}\n" + DEFAULT_STREAMS)
    try:
        bus = framebus.connect(d.socket)
        wait_running(bus, "cam0")
        bus.close()
        d.wait_for_log(f"metrics: cannot serve http://127.0.0.1:{PORT + 2}/metrics")
        with open(d.config, "w") as f:
            f.write(f"[daemon]\nsocket = {d.socket}\nmetrics = 127.0.0.1:{PORT + 3}\n"
                    + DEFAULT_STREAMS)
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for_log(f"metrics: serving http://127.0.0.1:{PORT + 3}/metrics")
        deadline = time.monotonic() + 5
        while "framebus_stream_frames_published_total" not in http(PORT + 3, "/metrics")[2]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        d.stop()
        taken.close()


def test_stalls_and_frames_held_too_long_are_counted():
    lavfi = ("url = testsrc2=size=64x48:rate=50\ninput_format = lavfi\n"
             "width = 64\nheight = 48\nformat = gray8\nslots = 4\n")
    d = Daemon(f"metrics = 127.0.0.1:{PORT + 4}\n" + DEFAULT_STREAMS +
               f"[stream strict]\n{lavfi}policy = block\nblock_timeout = 500ms\n"
               f"[stream pinned]\n{lavfi}hold_timeout = 500ms\n")
    try:
        bus = framebus.connect(d.socket)
        wait_running(bus, "strict")
        wait_running(bus, "pinned")
        stuck = bus.subscribe("strict", mode="queue")  # never reads
        holder = bus.subscribe("pinned")
        frame = holder.acquire()  # and never gives it back
        d.wait_for_log("stream strict: client")
        d.wait_for_log("(hold_timeout): dropped")
        m = samples(http(PORT + 4, "/metrics")[2])
        assert m['framebus_stream_stalls_total{stream="strict"}'] == 1
        assert m['framebus_stream_stalls_total{stream="pinned"}'] == 0
        assert m['framebus_stream_hold_drops_total{stream="pinned"}'] == 1
        assert m['framebus_stream_hold_drops_total{stream="strict"}'] == 0
        del frame
        holder.close()
        stuck.close()
        bus.close()
    finally:
        d.stop()
