# SPDX-License-Identifier: MIT
"""Results streams: records with no pixels, each naming the picture it is
about, from Python to C (framebus-collector, framebusctl) and back."""
import json
import os
import subprocess
import threading
import time

import pytest

import framebus
from conftest import FRAMEBUSCTL, wait_running

COLLECTOR = os.environ.get("FRAMEBUS_COLLECTOR", "framebus-collector")


def test_a_record_names_the_frame_it_is_about(bus):
    wait_running(bus, "cam0")
    people = bus.publish_results("cam0.people", slots=8, meta_max=256)
    assert (people.format, people.width, people.height, people.shape) == ("results", 0, 0, (0,))
    reader = framebus.connect(bus.path, name="reader")
    records = reader.subscribe("cam0.people", mode="queue")
    assert records.format == "results" and records.shape == (0,)
    info = reader.stream("cam0.people")
    assert (info.format, info.width, info.height, info.meta_max) == ("results", 0, 0, 256)

    cam = bus.subscribe("cam0", mode="queue")
    sent = []
    for i in range(5):
        with cam.acquire(timeout=5) as frame:
            boxes = {"boxes": [[i, 2, 30, 60]]}
            seq = people.send(json.dumps(boxes), made_from=frame)
            sent.append((seq, frame.seq, frame.capture_ns, boxes))
    for seq, cam_seq, capture_ns, boxes in sent:
        with records.acquire(timeout=5) as r:
            assert r.seq == seq
            assert r.source_seq == cam_seq
            assert r.origin == ("cam0", cam_seq)
            assert r.capture_ns == capture_ns and capture_ns
            assert json.loads(r.meta) == boxes
            assert r.array.shape == (0,)
    reader.close()
    people.close()


def test_send_refuses_what_is_not_a_record(bus):
    people = bus.publish_results("cam0.refusals", meta_max=8)
    with pytest.raises(ValueError, match="does not fit: 'cam0.refusals' carries at most 8"):
        people.send(b"123456789")
    with pytest.raises(TypeError, match="meta must be bytes-like or str"):
        people.send(42)
    assert people.stats["published"] == 0
    assert people.send(b"12345678") == 1, "a refused record left no slot taken"
    with pytest.raises(ValueError, match="meta_max must be 1"):
        bus.publish_results("cam0.nothing", meta_max=0)
    with pytest.raises(ValueError, match="publish_results"):
        bus.publish("cam0.odd", 0, 0, format="results")
    pictures = bus.publish("cam0.pictures", 16, 16, format="gray8")
    with pytest.raises(TypeError, match="send\\(\\) is for results streams"):
        pictures.send(b"x")
    pictures.close()
    people.close()


def test_a_queue_subscriber_of_a_block_stream_loses_no_record(bus):
    results = bus.publish_results("counts", slots=4, policy="block", meta_max=32)
    reader = framebus.connect(bus.path, name="slow_reader")
    sub = reader.subscribe("counts", mode="queue")
    got = []

    def read():
        for r in sub:
            got.append((r.seq, r.missed, bytes(r.meta)))
            if len(got) % 10 == 0:
                time.sleep(0.01)  # fall behind now and then: the producer waits
            if len(got) == 300:
                break

    thread = threading.Thread(target=read)
    thread.start()
    for i in range(300):
        results.send(b"%d" % i, timeout=5)
    thread.join(10)
    assert [seq for seq, _, _ in got] == list(range(1, 301))
    assert all(missed == 0 for _, missed, _ in got)
    assert [meta for _, _, meta in got] == [b"%d" % i for i in range(300)]
    assert results.stats["dropped"] == 0
    reader.close()
    results.close()


def test_records_go_from_python_to_c_and_back(daemon, bus):
    """Python publishes cam0.boxes about cam0's frames; framebus-collector (C)
    reads them and publishes its own records about them (cam0.latency);
    Python reads those and follows source_seq back to the camera frame."""
    wait_running(bus, "cam0")
    boxes = bus.publish_results("cam0.boxes")
    collector = subprocess.Popen(
        [COLLECTOR, "--socket", daemon.socket, "--processed", "cam0.boxes",
         "--publish", "cam0.latency", "--frames", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = collector.stderr.readline()  # once it has published and subscribed
    assert said == "collector: matching cam0.boxes to cam0\n", said + collector.stderr.read()
    latency = bus.subscribe("cam0.latency", mode="queue")
    cam = bus.subscribe("cam0", mode="queue")
    sent = {}
    while collector.poll() is None and len(sent) < 60:
        with cam.acquire(timeout=5) as frame:
            seq = boxes.send('{"boxes": []}', made_from=frame)
            sent[seq] = frame.seq
    out = collector.communicate(timeout=10)[0]
    assert "collector: stopped (the frame count was reached): 30 results" in out, out
    printed = [line for line in out.splitlines() if line.startswith("result seq=")]
    assert printed, out
    for line in printed:
        fields = dict(part.split("=", 1) for part in line.split(" ")[1:3])
        assert sent[int(fields["seq"])] == int(fields["source_seq"]), line
        assert line.endswith(' meta={"boxes": []}'), line
    records = []
    for r in latency:  # to its end: the collector left
        records.append((r.source_seq, r.origin, r.hops, json.loads(r.meta)))
    assert records, "the collector published no record"
    for source_seq, origin, hops, record in records:
        assert record["seq"] == source_seq
        assert origin == ("cam0", sent[source_seq])
        assert [h[0] for h in hops] == ["cam0", "cam0.boxes"]
        assert record["capture_to_result_us"] > 0
    boxes.close()


def test_framebusctl_shows_a_results_stream_and_its_records(daemon, bus):
    results = bus.publish_results("alerts", meta_max=64)
    ctl = [FRAMEBUSCTL, "--socket", daemon.socket]
    status = subprocess.run(ctl + ["status"], capture_output=True, text=True, check=True).stdout
    assert "records    results of up to 64 bytes, 16 slots, drop" in status, status
    listing = json.loads(subprocess.run(ctl + ["status", "--json"], capture_output=True,
                                        text=True, check=True).stdout)
    alerts = next(s for s in listing["streams"] if s["name"] == "alerts")
    assert (alerts["format"], alerts["width"], alerts["meta_max"]) == ("results", 0, 64)
    watch = subprocess.Popen(ctl + ["watch", "alerts", "--queue", "--seconds", "3"],
                             stdout=subprocess.PIPE, text=True)
    assert watch.stdout.readline() == "watching alerts: results, queue mode\n"
    results.send('{"door": "open"}')
    results.send(b"\x00\xffbin\\")
    lines = [watch.stdout.readline() for _ in range(2)]
    assert lines[0] == 'alerts #1: {"door": "open"}\n', lines
    assert lines[1] == "alerts #2: \\x00\\xffbin\\x5c\n", lines
    watch.wait(timeout=10)
    results.close()
