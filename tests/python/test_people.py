# SPDX-License-Identifier: MIT
"""python/examples/people.py on real footage: OpenCV's own pedestrian video
(vtest.avi from Debian's opencv-doc), decoded once by framebusd and scaled to
640x480 gray for the detector."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import framebus
from conftest import Daemon

PEOPLE = os.path.join(os.path.dirname(__file__), "..", "..", "python", "examples", "people.py")
VIDEO = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"  # scripts/lib.sh installs it
STREETS = f"""
[stream street]
url = {VIDEO}
loop = true
[stream street.detect]
from = street
width = 640
height = 480
format = gray8
scale = area
"""


@pytest.fixture(scope="module")
def daemon():
    assert os.path.exists(VIDEO), f"{VIDEO} is missing: scripts/lib.sh installs opencv-doc"
    d = Daemon(STREETS)
    yield d
    d.stop()


def test_people_are_found_and_each_record_names_its_frame(daemon):
    people = subprocess.Popen([sys.executable, PEOPLE, "--socket", daemon.socket,
                               "--frames", "40"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    said = people.stdout.readline()  # once it publishes both streams
    assert said.startswith("people.py: street.detect 640x480 -> street.people"), \
        said + people.stderr.read()
    bus = framebus.connect(daemon.socket, name="test_people")
    annotated = bus.subscribe("street.annotated", mode="queue")
    records = []
    for r in bus.subscribe("street.people", mode="queue"):  # until people.py ends
        records.append((r.source_seq, [h[0] for h in r.hops], json.loads(r.meta)))
    assert people.wait(timeout=30) == 0, people.stderr.read()
    assert "40 frames" in people.stdout.read()

    assert len(records) >= 30, records
    for source_seq, hops, record in records:
        assert hops == ["street", "street.detect"] and source_seq > 0
        assert (record["width"], record["height"]) == (640, 480)
        assert record["people"] == len(record["boxes"])
        for x, y, w, h, score in record["boxes"]:
            # A person standing (the detector's window is 64x128 at its
            # smallest), on the picture.
            assert h >= 100 and h >= 1.5 * w and x < 640 and y < 480 and x + w > 0 and y + h > 0
    # In 95% of this video's frames at this size the detector finds someone
    # (one frame in 8 over the whole clip), in any 10 of those in a row at
    # least 7: half is a margin for a run that skips frames.
    found = sum(1 for _, _, record in records if record["people"])
    assert found >= 0.5 * len(records), [record["people"] for _, _, record in records]

    # The annotated frames carry the same records and show the boxes in green.
    by_seq = {source_seq: record for source_seq, _, record in records}
    checked = 0
    for frame in annotated:
        record = json.loads(frame.meta)
        assert frame.array.shape == (480, 640, 3)
        if frame.source_seq in by_seq:
            assert record == by_seq[frame.source_seq]
        inside = [b for b in record["boxes"] if b[0] >= 0 and b[1] >= 0 and b[0] + b[2] <= 640]
        if inside:
            x, y, w, h, _ = inside[0]
            edge = frame.array[y, x:x + w]
            assert np.all(edge == [0, 255, 0]), "no green box edge where the box is"
            checked += 1
    assert checked > 0
    bus.close()
