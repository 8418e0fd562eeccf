# SPDX-License-Identifier: MIT
"""The processed-frame path end to end: framebusd, python/examples/gray.py,
framebus-record and the C collector, all real processes."""
import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import Daemon

RECORD = os.environ.get("FRAMEBUS_RECORD", "framebus-record")
COLLECTOR = os.environ.get("FRAMEBUS_COLLECTOR", "framebus-collector")
GRAY = os.path.join(os.path.dirname(__file__), "..", "..", "python", "examples", "gray.py")


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


# ffmpeg's output options that pass every decoded frame on once, at its own
# time (frames published in a burst lie microseconds apart): not at a fixed
# rate, which would drop or repeat frames, or complain.
EVERY_FRAME = ["-fps_mode", "passthrough", "-enc_time_base", "-1"]


def ffprobe(path):
    """(width, height, frames counted by decoding) of a video file."""
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                          "-show_entries", "stream=width,height,nb_read_frames", "-of",
                          "csv=p=0", path], check=True, capture_output=True, text=True,
                         timeout=60).stdout.strip()
    w, h, n = out.split(",")
    return int(w), int(h), int(n)


def jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def wait_for_stream(daemon, name, timeout=15):
    import framebus
    bus = framebus.connect(daemon.socket)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if bus.stream(name).state == "running":
                    return
            except framebus.NoSuchStream:
                pass
            time.sleep(0.05)
    finally:
        bus.close()
    raise AssertionError(f"stream {name} never ran:\n{daemon.read_log()}")


def start(args, **kw):
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


def test_gray_pipeline_recording_matches_the_collector(daemon, tmp_path):
    wait_for_stream(daemon, "cam0")
    gray = start([sys.executable, GRAY, "--socket", daemon.socket, "--policy", "block"])
    wait_for_stream(daemon, "cam0.gray")
    video = str(tmp_path / "gray.mp4")
    recorder = start([RECORD, "--socket", daemon.socket, "cam0.gray", video])
    collector = start([COLLECTOR, "--socket", daemon.socket])
    time.sleep(3)
    gray.send_signal(signal.SIGTERM)  # its stream ends; both readers finish on that
    gray_out = gray.communicate(timeout=10)[0]
    assert "frames processed, 0 dropped" in gray_out
    rec_err = recorder.communicate(timeout=20)[1]
    col_out = collector.communicate(timeout=20)[0]
    assert recorder.returncode == 0, rec_err
    assert "stopped (the stream ended)" in rec_err and "0 skipped" in rec_err
    assert "stopped (the processed stream ended)" in col_out

    lines = jsonl(str(tmp_path / "gray.jsonl"))
    width, height, frames = ffprobe(video)
    assert (width, height) == (320, 240)
    assert frames == len(lines) >= 60
    seqs = [line["seq"] for line in lines]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "the recorder lost frames"
    # The collector saw the same frames from the same results, with the
    # same source frames, up to the last one gray.py published.
    results = {}
    for line in col_out.splitlines():
        if line.startswith("result "):
            fields = dict(kv.split("=", 1) for kv in line.split()[1:4])
            results[int(fields["seq"])] = int(fields["source_seq"])
    assert seqs[-1] == max(results)
    common = [line for line in lines if line["seq"] in results]
    assert len(common) >= len(lines) - 5
    for line in common:
        assert line["source_seq"] == results[line["seq"]]
    # Each result matches its source frame: consecutive sources, one result each.
    sources = [line["source_seq"] for line in lines]
    assert sources == list(range(sources[0], sources[0] + len(sources)))
    # Each names the camera frame it came from, captured before it was published.
    for line in lines:
        assert line["origin"] == ["cam0", line["source_seq"]], line
        assert 0 < line["capture_ns"] < line["monotonic_ns"], line
    # The pixels are gray, and what gray.py measured.
    import cv2
    cap = cv2.VideoCapture(video)
    checked = 0
    for line in lines[:30]:
        ok, img = cap.read()
        assert ok
        b, g, r = (img[:, :, i].astype(int) for i in range(3))
        assert np.abs(b - g).max() <= 2 and np.abs(g - r).max() <= 2
        assert abs(img.mean() - line["meta"]["mean"]) < 3
        checked += 1
    assert checked == 30


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_a_killed_recorder_leaves_a_file_that_plays_to_its_last_fragment(daemon, tmp_path, ext):
    """SIGKILL mid-file (as a power cut would stop it): the video plays up to
    its last whole fragment, and the sidecar has a line for each frame in it
    and no other."""
    wait_for_stream(daemon, "cam0")
    video = str(tmp_path / f"cam0.{ext}")
    rec = start([RECORD, "--socket", daemon.socket, "--fragment", "0.5", "cam0", video])
    wait_for_line(rec, "recording cam0")
    time.sleep(3)
    rec.kill()
    rec.wait()
    frames = plays(video)
    assert ffprobe(video)[:2] == (320, 240)
    # 3 s at 30 fps, less at most the fragment being written (0.5 s) and
    # what the encoder held back.
    assert frames >= 45, frames
    # A line for each frame in the video, and no other.
    lines = jsonl(str(tmp_path / "cam0.jsonl"))
    assert [line["frame"] for line in lines] == list(range(frames))


def test_random_kills_leave_files_that_play_and_match_their_sidecars(daemon, tmp_path):
    """SIGKILL at random points of 20 recordings, 10 MP4 and 10 Matroska, four
    at a time: each file plays to its end and its sidecar has exactly the
    frames in it."""
    import random
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    wait_for_stream(daemon, "cam0")
    with_frames = 0
    for batch in range(5):
        recs = []
        for i, ext in enumerate(["mp4", "mkv", "mp4", "mkv"]):
            video = str(tmp_path / f"kill{batch}{i}.{ext}")
            rec = start([RECORD, "--socket", daemon.socket, "--fragment", "0.2", "cam0", video])
            recs.append((rng.uniform(0.05, 2), rec, video))
        for _, rec, _ in recs:
            wait_for_line(rec, "recording cam0")
        started = time.monotonic()
        for delay, rec, _ in sorted(recs, key=lambda r: r[0]):
            time.sleep(max(0, started + delay - time.monotonic()))
            rec.kill()
        for delay, rec, video in recs:
            rec.communicate()
            where = f"{video} killed after {delay:.2f} s (seed {seed})"
            if not os.path.exists(video):  # killed before its first fragment
                assert not os.path.exists(video[:-4] + ".jsonl"), where
                continue
            lines = jsonl(video[:-4] + ".jsonl")
            assert [line["frame"] for line in lines] == list(range(len(lines))), where
            assert plays(video, where) == len(lines) > 0, where
            with_frames += 1
    assert with_frames >= 5, f"too few kills after a fragment (seed {seed})"


def test_the_sidecar_keeps_json_as_json_and_other_meta_as_it_can(daemon, tmp_path):
    import base64
    import framebus
    metas = [b'{"name": "caf\xc3\xa9", "boxes": [[1, 2.5e1, -3, 4]]}', b'[1,\n 2]',
             "plain text, caf\u00e9".encode(), b"\x00\xff\xfebinary", b"", b'{"cut": ']
    with framebus.connect(daemon.socket) as bus:
        pub = bus.publish("py.meta", 64, 48, format="gray8", policy="block")
        video = str(tmp_path / "meta.mkv")
        rec = start([RECORD, "--socket", daemon.socket, "--frames", str(len(metas)), "py.meta",
                     video])
        wait_for_line(rec, "recording py.meta")  # subscribed: a block stream waits for it
        for meta in metas:
            with pub.frame(timeout=5) as out:
                out.array[:] = 128
                out.meta = meta
        assert rec.wait(timeout=20) == 0, rec.stderr.read()
        pub.close()
    lines = jsonl(str(tmp_path / "meta.jsonl"))
    assert lines[0]["meta"] == {"name": "caf\u00e9", "boxes": [[1, 25.0, -3, 4]]}
    assert lines[1]["meta"] == [1, 2]
    assert lines[2]["meta"] == "plain text, caf\u00e9"
    assert "meta" not in lines[3]
    assert base64.b64decode(lines[3]["meta_base64"]) == b"\x00\xff\xfebinary"
    assert lines[4]["meta"] is None
    assert lines[5]["meta"] == '{"cut": ', "not JSON: kept as text"


def test_frames_keep_their_capture_pace_when_published_in_a_burst(daemon, tmp_path):
    import framebus
    step_ns = 40_000_000
    with framebus.connect(daemon.socket) as bus:
        pub = bus.publish("py.burst", 64, 48, format="gray8", policy="block")
        video = str(tmp_path / "burst.mkv")
        rec = start([RECORD, "--socket", daemon.socket, "--frames", "10", "py.burst", video])
        wait_for_line(rec, "recording py.burst")
        captured = time.monotonic_ns() - 10 * step_ns
        for i in range(10):  # all at once, captured 40 ms apart
            with pub.frame(timeout=5) as out:
                out.array[:] = 16 * i
                out.capture_ns = captured + i * step_ns
        assert rec.wait(timeout=20) == 0, rec.stderr.read()
        pub.close()
    lines = jsonl(str(tmp_path / "burst.jsonl"))
    assert len(lines) == 10
    published = [line["monotonic_ns"] for line in lines]
    assert published[-1] - published[0] < 9 * step_ns, "the frames were published in a burst"
    steps = {b["file_pts"] - a["file_pts"] for a, b in zip(lines, lines[1:])}
    assert steps == {90000 * step_ns // 1_000_000_000}, steps
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "packet=pts_time", "-of", "csv=p=0", video], check=True,
                         capture_output=True, text=True, timeout=60).stdout.split()
    times = sorted(float(t) for t in out)
    assert [round(b - a, 3) for a, b in zip(times, times[1:])] == [0.04] * 9, times


@pytest.mark.parametrize("fmt", ["gray8", "bgr24", "nv12"])
def test_lossless_gives_back_the_very_pixels(daemon, tmp_path, fmt):
    """--lossless: the file decoded in the stream's pixel format is, frame by
    frame (by seq, through the sidecar), what a subscriber saw."""
    import framebus
    width, height, count = 96, 64, 12
    rng = np.random.default_rng(20)
    seen = {}
    video = str(tmp_path / f"{fmt}.mkv")
    with framebus.connect(daemon.socket) as bus:
        pub = bus.publish("py.exact", width, height, format=fmt, policy="block")
        sub = bus.subscribe("py.exact", mode="queue")
        rec = start([RECORD, "--socket", daemon.socket, "--lossless", "--fragment", "0.1",
                     "--frames", str(count), "py.exact", video])
        wait_for_line(rec, "recording py.exact")
        for _ in range(count):
            with pub.frame(timeout=5) as out:
                out.array[:] = rng.integers(0, 256, out.array.shape, dtype=np.uint8)
            with sub.acquire(timeout=5) as frame:
                seen[frame.seq] = np.array(frame.array).tobytes()
        assert rec.wait(timeout=20) == 0, rec.stderr.read()
        pub.close()
    pix_fmt = {"gray8": "gray"}.get(fmt, fmt)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", video, *EVERY_FRAME, "-f", "rawvideo",
                          "-pix_fmt", pix_fmt, "-"], capture_output=True, timeout=60)
    assert raw.returncode == 0 and not raw.stderr, raw.stderr
    size = len(next(iter(seen.values())))
    lines = jsonl(str(tmp_path / f"{fmt}.jsonl"))
    assert len(raw.stdout) == size * count == size * len(lines)
    for i, line in enumerate(lines):
        assert raw.stdout[i * size:(i + 1) * size] == seen[line["seq"]], f"frame {i} differs"


def test_lossless_is_refused_where_it_cannot_be(daemon, tmp_path):
    for args, message in [
        (["--lossless", "cam0", str(tmp_path / "x.mp4")], "end OUTPUT in .mkv"),
        (["--lossless", "--crf", "0", "cam0", str(tmp_path / "x.mkv")], "drop --encoder, --crf"),
    ]:
        r = subprocess.run([RECORD, "--socket", daemon.socket, *args], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)


def test_retention_deletes_old_segments_and_the_oldest_past_a_size(daemon, tmp_path):
    wait_for_stream(daemon, "cam0")
    pattern = str(tmp_path / "cam0-%H%M%S.mkv")
    old = time.time() - 3 * 86400
    for name in ("cam0-000001.mkv", "cam0-000001.jsonl", "other.mkv"):
        (tmp_path / name).write_bytes(b"x" * 1000)
        os.utime(tmp_path / name, (old, old))
    rec = subprocess.run([RECORD, "--socket", daemon.socket, "--segment", "0.5", "--keep-days",
                          "1", "--keep-size", "40K", "--duration", "4", "cam0", pattern],
                         capture_output=True, text=True, timeout=60)
    assert rec.returncode == 0, rec.stderr
    assert f"deleted {tmp_path}/cam0-000001.mkv (older than --keep-days)" in rec.stderr
    assert not (tmp_path / "cam0-000001.jsonl").exists(), "its sidecar goes with it"
    assert (tmp_path / "other.mkv").exists(), "not a segment of this pattern"
    assert "past --keep-size" in rec.stderr, rec.stderr
    videos = sorted(glob.glob(str(tmp_path / "cam0-*.mkv")), key=os.path.getmtime)
    assert videos, "the newest segment is always kept"
    for video in videos:  # each left has its sidecar; the deleted had theirs deleted
        assert os.path.exists(video[:-4] + ".jsonl"), video
    sizes = [os.path.getsize(v) + os.path.getsize(v[:-4] + ".jsonl") for v in videos]
    # All but the last written fit in 40K when it was opened; the last one grew since.
    assert sum(sizes[:-1]) <= 40 * 1024, sizes
    assert len(glob.glob(str(tmp_path / "cam0-*.jsonl"))) == len(videos)


def test_retention_needs_segments(daemon, tmp_path):
    r = subprocess.run([RECORD, "--socket", daemon.socket, "--keep-size", "1G", "cam0",
                        str(tmp_path / "x.mkv")], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "give --segment too" in r.stderr
    r = subprocess.run([RECORD, "--socket", daemon.socket, "--segment", "1", "--keep-size",
                        "lots", "cam0", str(tmp_path / "x-%S.mkv")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "bad value 'lots' for --keep-size" in r.stderr


def test_segments_give_one_playable_file_each(daemon, tmp_path):
    wait_for_stream(daemon, "cam0")
    pattern = str(tmp_path / "cam0-%H%M%S.mkv")
    rec = subprocess.run([RECORD, "--socket", daemon.socket, "--segment", "1",
                          "--duration", "3.5", "cam0", pattern],
                         capture_output=True, text=True, timeout=30)
    assert rec.returncode == 0, rec.stderr
    assert "stopped (the duration was reached)" in rec.stderr
    videos = sorted(glob.glob(str(tmp_path / "cam0-*.mkv")))
    assert len(videos) == 4, (videos, rec.stderr)
    total = 0
    for video in videos:
        width, height, frames = ffprobe(video)
        lines = jsonl(video[:-4] + ".jsonl")
        assert (width, height) == (320, 240) and frames == len(lines)
        assert 20 <= frames <= 40 or video == videos[-1]
        total += frames
    assert f"{total} frames in 4 files" in rec.stderr


def test_sigterm_mid_recording_leaves_a_playable_file(daemon, tmp_path):
    wait_for_stream(daemon, "cam0")
    video = str(tmp_path / "cam0.mp4")
    rec = start([RECORD, "--socket", daemon.socket, "cam0", video])
    time.sleep(2)
    rec.send_signal(signal.SIGTERM)
    err = rec.communicate(timeout=20)[1]
    assert rec.returncode == 0 and "stopped (terminated)" in err, err
    width, height, frames = ffprobe(video)
    assert frames == len(jsonl(str(tmp_path / "cam0.jsonl"))) >= 30


def wait_for_line(proc, text, timeout=20):
    """Read proc's stderr until a line holds text; the lines read."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no {text!r} from framebus-record: {lines}")


def test_a_daemon_restart_goes_on_in_the_same_playable_file(daemon, tmp_path):
    wait_for_stream(daemon, "cam0")
    video = str(tmp_path / "cam0.mkv")
    rec = start([RECORD, "--socket", daemon.socket, "cam0", video])
    wait_for_line(rec, "recording cam0")
    time.sleep(1.5)
    daemon.kill()
    wait_for_line(rec, "waiting for it to come back")
    before = len(jsonl(str(tmp_path / "cam0.jsonl")))
    time.sleep(0.5)
    daemon.start()
    wait_for_line(rec, "subscribed to cam0 again")
    time.sleep(1.5)
    rec.send_signal(signal.SIGTERM)
    err = rec.communicate(timeout=20)[1]
    assert rec.returncode == 0 and "1 daemon restarts" in err, err
    width, height, frames = ffprobe(video)
    records = jsonl(str(tmp_path / "cam0.jsonl"))
    assert frames == len(records) >= before + 20, (frames, before)


@pytest.mark.parametrize("with_store", [False, True], ids=["without_store", "with_store"])
def test_a_graceful_restart_is_no_end_for_the_pipeline(with_store, fd_store, tmp_path):
    # systemctl restart, with systemd's fd store or without: gray.py (a
    # Python subscriber and publisher), framebus-record and the C collector
    # all go on by themselves.
    daemon = Daemon(notify_socket=fd_store.path if with_store else None)
    try:
        restart_pipeline(daemon, fd_store if with_store else None, tmp_path)
    finally:
        daemon.stop()


def restart_pipeline(daemon, store, tmp_path):
    wait_for_stream(daemon, "cam0")
    gray = start([sys.executable, GRAY, "--socket", daemon.socket])
    wait_for_stream(daemon, "cam0.gray")
    video = str(tmp_path / "gray.mkv")
    rec = start([RECORD, "--socket", daemon.socket, "cam0.gray", video])
    collector = start([COLLECTOR, "--socket", daemon.socket])
    wait_for_line(rec, "recording cam0.gray")
    time.sleep(1.5)
    stopped_ns = time.monotonic_ns()  # the clock of the frames' monotonic_ns
    daemon.terminate()
    if store:
        daemon.start(notify_socket=store.path, passed=store.passed())
        daemon.wait_for_log("frames numbered on after")
    else:
        daemon.start()
    wait_for_line(rec, "subscribed to cam0.gray again")
    time.sleep(2)
    gray.send_signal(signal.SIGTERM)  # now its stream ends, and both readers with it
    gray.communicate(timeout=10)
    err = rec.communicate(timeout=20)[1]
    col_out, col_err = collector.communicate(timeout=20)
    assert rec.returncode == 0 and "1 daemon restarts" in err, err
    assert "stopped (the stream ended)" in err, err
    records = jsonl(str(tmp_path / "gray.jsonl"))
    width, height, frames = ffprobe(video)
    assert frames == len(records)
    before = [r["seq"] for r in records if r["monotonic_ns"] < stopped_ns]
    after = [r["seq"] for r in records if r["monotonic_ns"] > stopped_ns]
    assert len(before) >= 20 and len(after) >= 20, (len(before), len(after))
    assert col_err.count("subscribed again") == 2, col_err
    assert "stopped (the processed stream ended)" in col_out, col_out
    results = [int(line.split()[1].split("=")[1]) for line in col_out.splitlines()
               if line.startswith("result ")]
    assert results[-1] == records[-1]["seq"], "the collector stopped short of the recorder"
    assert sum(1 for seq in results if seq > before[-1]) >= 20


def test_a_vanished_daemon_still_leaves_a_playable_file(daemon, tmp_path):
    wait_for_stream(daemon, "cam0")
    video = str(tmp_path / "cam0.mkv")
    rec = start([RECORD, "--socket", daemon.socket, "cam0", video])
    time.sleep(1.5)
    daemon.kill()
    wait_for_line(rec, "waiting for it to come back")
    rec.send_signal(signal.SIGTERM)
    err = rec.communicate(timeout=20)[1]
    assert "stopped (terminated)" in err, err
    width, height, frames = ffprobe(video)
    assert frames == len(jsonl(str(tmp_path / "cam0.jsonl"))) >= 20


def test_bad_options_are_named(daemon, tmp_path):
    for args, message in [
        (["--segment", "5", "cam0", str(tmp_path / "x.mp4")], "must be a strftime pattern"),
        (["--frames", "-3", "cam0", str(tmp_path / "x.mp4")], "bad value '-3' for --frames"),
        (["--retry", "0.01", "cam0", str(tmp_path / "x.mp4")], "bad value '0.01' for --retry"),
        (["--encoder", "nope", "cam0", str(tmp_path / "x.mp4")], "no video encoder 'nope'"),
        (["nostream", str(tmp_path / "x.mp4")], "cannot subscribe to 'nostream'"),
        (["--frames", "1", "cam0", str(tmp_path / "x.foo")], "end it in .mp4 or .mkv"),
    ]:
        wait_for_stream(daemon, "cam0")
        r = subprocess.run([RECORD, "--socket", daemon.socket, *args], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0 and message in r.stderr, (args, r.stderr)


def test_a_results_stream_is_refused_with_a_reason(daemon, tmp_path):
    import framebus
    with framebus.connect(daemon.socket) as bus:
        people = bus.publish_results("cam0.people")  # noqa: F841 (kept while it runs)
        r = subprocess.run([RECORD, "--socket", daemon.socket, "cam0.people",
                            str(tmp_path / "x.mp4")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "'cam0.people' is a results stream: it has no pictures" in r.stderr, r.stderr


def plays(video, where=""):
    """Frames in video, decoded to the end without a word from FFmpeg (where:
    how the file was made, for the failure's message)."""
    probe = subprocess.run(["ffmpeg", "-v", "error", "-i", video, *EVERY_FRAME, "-f", "null",
                            "-"], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and not probe.stderr, (video, where, probe.stderr)
    return ffprobe(video)[2]


class Counter:
    """Another queue subscriber of cam0, in a thread, reading as fast as it
    can: the seqs it got and the frames it missed."""

    def __init__(self, daemon):
        import framebus
        self.bus = framebus.connect(daemon.socket, name="counter")
        self.sub = self.bus.subscribe("cam0", mode="queue")
        self.seqs, self.missed, self.done = [], 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            try:
                frame = self.sub.acquire(timeout=0.2)
            except TimeoutError:
                continue
            with frame:
                self.seqs.append(frame.seq)
                self.missed += frame.missed

    def stop(self):
        if self.done.is_set():
            return
        self.done.set()
        self.thread.join(5)
        self.bus.close()

    def check(self):
        self.stop()
        assert self.missed == 0 and len(self.seqs) >= 90, (self.missed, len(self.seqs))
        assert self.seqs == list(range(self.seqs[0], self.seqs[0] + len(self.seqs)))


def resumed_recording(rec, first, second, skipped_line):
    """Checks of a recording that stopped writing and went on in a new file:
    both play and match their sidecars, and the frames between them are the
    ones the recorder said it skipped."""
    lines = wait_for_line(rec, "writing again")
    assert f"writing again, into {second}, after " in lines[-1], lines
    skipped = int(lines[-1].split(" after ")[1].split()[0])
    time.sleep(1.5)
    rec.send_signal(signal.SIGTERM)
    err = rec.communicate(timeout=20)[1]
    assert rec.returncode == 0 and "stopped (terminated)" in err, err
    before, after = jsonl(first[:-4] + ".jsonl"), jsonl(second[:-4] + ".jsonl")
    assert plays(first) == len(before) >= 20
    assert plays(second) == len(after) >= 20
    assert skipped > 0
    assert after[0]["seq"] - before[-1]["seq"] - 1 == skipped, (skipped_line, lines[-1])


def test_a_full_disk_skips_frames_and_goes_on_in_a_new_file_when_space_is_back(daemon,
                                                                              tmp_path):
    assert os.geteuid() == 0, "this test mounts a small tmpfs: run it as root (CI does)"
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    rec = counter = None
    try:
        wait_for_stream(daemon, "cam0")
        counter = Counter(daemon)
        rec = start([RECORD, "--socket", daemon.socket, "--fragment", "0.25", "--retry", "0.5",
                     "cam0", str(disk / "cam0.mkv")])
        wait_for_line(rec, "recording cam0")
        time.sleep(1.5)
        with open(disk / "filler", "wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
        lines = wait_for_line(rec, "skipping frames")
        assert f"cannot write {disk}/cam0" in lines[-1], lines
        assert "No space left on device" in lines[-1] and "every 0.5 s" in lines[-1], lines
        time.sleep(1)
        assert set(os.listdir(disk)) == {"cam0.mkv", "cam0.jsonl", "filler"}, \
            "no file while the disk is full"
        os.unlink(disk / "filler")
        resumed_recording(rec, str(disk / "cam0.mkv"), str(disk / "cam0-1.mkv"), lines[-1])
        counter.check()
    finally:
        stop_all(rec, counter)
        subprocess.run(["umount", "-l", str(disk)], check=True)


def stop_all(rec, counter):
    if rec and rec.poll() is None:
        rec.kill()
        rec.communicate()
    if counter:
        counter.stop()


def test_a_vanished_directory_skips_frames_until_it_is_back(daemon, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    wait_for_stream(daemon, "cam0")
    rec = counter = None
    try:
        counter = Counter(daemon)
        rec = start([RECORD, "--socket", daemon.socket, "--fragment", "0.25", "--retry", "0.5",
                     "cam0", str(out / "cam0.mp4")])
        wait_for_line(rec, "recording cam0")
        time.sleep(1.5)
        # Open, the deleted files can still be read once the recorder let go.
        kept = [open(out / name, "rb") for name in ("cam0.mp4", "cam0.jsonl")]
        shutil.rmtree(out)
        lines = wait_for_line(rec, "skipping frames")
        assert f"{out}/cam0.mp4 was deleted" in lines[-1], lines
        for f in kept:
            with f, open(tmp_path / os.path.basename(f.name), "wb") as copy:
                copy.write(f.read())
        time.sleep(1)
        out.mkdir()
        resumed_recording(rec, str(tmp_path / "cam0.mp4"), str(out / "cam0-1.mp4"), lines[-1])
        counter.check()
    finally:
        stop_all(rec, counter)


def test_a_recorder_started_before_its_directory_waits_for_it(daemon, tmp_path):
    out = tmp_path / "later"
    wait_for_stream(daemon, "cam0")
    rec = start([RECORD, "--socket", daemon.socket, "--fragment", "0.25", "--retry", "0.5",
                 "cam0", str(out / "cam0.mkv")])
    try:
        lines = wait_for_line(rec, "skipping frames")
        assert f"cannot write {out}/cam0.mkv: No such file or directory" in lines[-1], lines
        out.mkdir()
        # The name was never used: the first file gets it.
        lines = wait_for_line(rec, "writing again")
        assert f"writing again, into {out}/cam0.mkv, after " in lines[-1], lines
        time.sleep(1)
        rec.send_signal(signal.SIGTERM)
        err = rec.communicate(timeout=20)[1]
        assert rec.returncode == 0, err
        assert plays(str(out / "cam0.mkv")) == len(jsonl(str(out / "cam0.jsonl"))) >= 20
    finally:
        stop_all(rec, None)
