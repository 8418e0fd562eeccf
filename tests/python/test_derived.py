# SPDX-License-Identifier: MIT
"""Derived streams: one decode, many sizes, formats and rates.  framebusd
scales a parent's frames into a stream of their own (from = PARENT)."""
import glob
import json
import signal
import subprocess
import time

import cv2
import numpy as np
import pytest

import framebus
from conftest import FRAMEBUSCTL, Daemon, wait_for, wait_running

STREAMS = """
[stream bars]
url = testsrc2=size=320x240:rate=50
input_format = lavfi
width = 320
height = 240
format = bgr24
slots = 16
[stream bars.gray]
from = bars
width = 160
height = 120
format = gray8
scale_threads = 2
[stream bars.slow]
from = bars.gray
fps = 5
format = rgb24
[stream bars.crop]
from = bars
crop = 0,30,200,100
[stream bars.crop.small]
from = bars
crop = 40, 30, 200, 100
width = 100
height = 50
format = gray8
[stream bars.odd]
from = bars
crop = 41,31,100,50
[stream bars.outside]
from = bars
crop = 300,200,100,100
[stream bars.rgba]
from = bars
format = rgba
[stream bars.rgba.half]
from = bars.rgba
width = 160
height = 120
format = bgr24
[stream bars.gray16]
from = bars
format = gray16
[stream bars.yuyv]
from = bars
format = yuyv422
[stream bars.half]
from = bars
width = 160
height = 120
format = rgb24
"""


@pytest.fixture(scope="module")
def daemon():
    d = Daemon(STREAMS)
    yield d
    d.stop()


def source_picture(pts, vf="null", pix_fmt="yuv420p"):
    """bars' picture pts as framebusd's decoder had it (lavfi gives testsrc2's
    frames in yuv420p, numbered by pts), through FFmpeg filter vf: its own
    libswscale with scale=..."""
    raw = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=50",
         "-vf", f"select=eq(n\\,{pts}),{vf}", "-frames:v", "1", "-f", "rawvideo",
         "-pix_fmt", pix_fmt, "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8)


def test_a_derived_frame_is_its_parent_scaled(daemon):
    """bars.gray scales bars' decoded picture (yuv420p), the one the parent
    frame it names was made from, with libswscale's threads
    (scale_threads = 2): its pixels are libswscale's scaling of that
    picture (FFmpeg's scale filter, the same method); and OpenCV's
    scaling of the parent frame within rounding and the two methods'
    differences at edges."""
    bus = framebus.connect(daemon.socket)
    for name in ("bars", "bars.gray"):
        wait_running(bus, name)
    parent = bus.subscribe("bars", mode="queue", max_holds=8)
    gray = bus.subscribe("bars.gray", mode="queue")
    kept = {}  # parent frames by seq, copied
    pairs = []  # (derived pixels, the parent frame's pixels and pts)
    deadline = time.monotonic() + 10
    while len(pairs) < 20 and time.monotonic() < deadline:
        with parent.acquire(timeout=2) as f:
            kept[f.seq] = (f.array.copy(), f.pts)
        while (g := gray.try_acquire()) is not None:
            with g:
                if g.source_seq in kept:
                    assert g.array.shape == (120, 160)
                    assert g.pts == kept[g.source_seq][1], "a derived frame keeps its pts"
                    pairs.append((g.array.copy(),) + kept[g.source_seq])
    assert len(pairs) >= 20, f"only {len(pairs)} derived frames matched a parent frame"
    for pixels, bgr, pts in pairs[:5]:
        want = source_picture(pts, "scale=160:120:flags=bilinear", "gray").reshape(120, 160)
        assert np.abs(pixels.astype(int) - want).max() <= 1
        want = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (160, 120),
                          interpolation=cv2.INTER_AREA)
        diff = np.abs(pixels.astype(int) - want.astype(int))
        assert diff.mean() < 3 and np.percentile(diff, 99) < 40, (diff.mean(), diff.max())
    bus.close()


def test_a_crop_is_that_part_of_its_parent(daemon):
    bus = framebus.connect(daemon.socket)
    for name in ("bars", "bars.crop", "bars.crop.small", "bars.odd"):
        wait_running(bus, name)
    parent = bus.subscribe("bars", mode="queue", max_holds=8)
    crop = bus.subscribe("bars.crop", mode="queue")
    small = bus.subscribe("bars.crop.small", mode="queue")
    # An odd x and y cannot start in the decoder's yuv420p picture: that
    # crop is taken from the parent's frame, the very pixels too.
    odd = bus.subscribe("bars.odd", mode="queue")
    assert (crop.width, crop.height, crop.format) == (200, 100, "bgr24"), "its own size"
    assert (small.width, small.height, small.format) == (100, 50, "gray8")
    kept = {}
    checked = {"bars.crop": 0, "bars.crop.small": 0, "bars.odd": 0}
    deadline = time.monotonic() + 10
    while min(checked.values()) < 10 and time.monotonic() < deadline:
        with parent.acquire(timeout=2) as f:
            kept[f.seq] = f.array.copy()
        for sub in (crop, small, odd):
            while (g := sub.try_acquire()) is not None:
                with g:
                    if g.source_seq not in kept:
                        continue
                    if sub is crop:  # the same size: the very pixels, from x = 0
                        assert np.array_equal(g.array, kept[g.source_seq][30:130, 0:200])
                    elif sub is odd:
                        assert np.array_equal(g.array, kept[g.source_seq][31:81, 41:141])
                    else:
                        part = kept[g.source_seq][30:130, 40:240]
                        want = cv2.resize(cv2.cvtColor(part, cv2.COLOR_BGR2GRAY), (100, 50),
                                          interpolation=cv2.INTER_AREA)
                        diff = np.abs(g.array.astype(int) - want.astype(int))
                        assert diff.mean() < 3 and np.percentile(diff, 99) < 40
                    checked[sub.stream] += 1
    assert min(checked.values()) >= 10, checked
    # A crop its parent's picture cannot give: the stream says why, and
    # every other stream runs on.
    deadline = time.monotonic() + 10
    while bus.stream("bars.outside").state != "retrying" and time.monotonic() < deadline:
        time.sleep(0.05)
    info = bus.stream("bars.outside")
    assert info.state == "retrying"
    assert "crop 300,200,100,100 does not fit its parent's 320x240 bgr24" in info.detail
    assert all(bus.stream(n).state == "running" for n in ("bars", "bars.crop", "bars.gray"))
    bus.close()


def test_the_other_formats_are_the_parent_converted(daemon):
    bus = framebus.connect(daemon.socket)
    names = ("bars.rgba", "bars.gray16", "bars.yuyv", "bars.half")
    for name in ("bars",) + names:
        wait_running(bus, name)
    parent = bus.subscribe("bars", mode="queue", max_holds=8)
    subs = {name: bus.subscribe(name, mode="queue") for name in names}
    assert subs["bars.gray16"].shape == (240, 320)
    assert subs["bars.yuyv"].shape == (240, 320, 2)
    kept, f_pts, halves = {}, {}, []
    checked = dict.fromkeys(names, 0)
    deadline = time.monotonic() + 10
    while min(checked.values()) < 5 and time.monotonic() < deadline:
        with parent.acquire(timeout=2) as f:
            kept[f.seq] = f.array.copy()
            f_pts[f.seq] = f.pts
        for name, sub in subs.items():
            while (g := sub.try_acquire()) is not None:
                with g:
                    if g.source_seq not in kept:
                        continue
                    bgr = kept[g.source_seq]
                    a = g.array
                    if name == "bars.rgba":  # a reordering: exact
                        assert a.dtype == np.uint8
                        assert np.array_equal(a, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA))
                    elif name == "bars.half":  # a whole factor: each 2x2 block's mean
                        halves.append((a.copy(), f_pts[g.source_seq]))
                    elif name == "bars.gray16":
                        assert a.dtype == np.uint16 and a.max() > 255, "16 bits used"
                        want = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(int)
                        assert np.abs((a.astype(int) >> 8) - want).mean() < 3
                    else:  # chroma at half width: back to BGR within rounding
                        back = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_YUV2BGR_YUYV)
                        assert np.abs(back.astype(int) - bgr.astype(int)).mean() < 8
                    checked[name] += 1
    assert min(checked.values()) >= 5, checked
    # bars.half averages each 2x2 block of the decoder's yuv420p picture and
    # converts the mean (shrink.c): OpenCV's conversion of the same picture
    # (each chroma sample over its 2x2 pixels, as libswscale gave bars) then
    # its area scaling, within rounding, but where a block's pixels clip
    # apart (colours outside RGB at testsrc2's edges: a few pixels).
    for a, pts in halves[:3]:
        rgb = cv2.cvtColor(source_picture(pts).reshape(360, 320), cv2.COLOR_YUV2RGB_I420)
        want = cv2.resize(rgb, (160, 120), interpolation=cv2.INTER_AREA)
        diff = np.abs(a.astype(int) - want.astype(int))
        assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 1, (diff.mean(), diff.max())
    bus.close()


def test_a_derived_stream_of_a_derived_stream_shrinks_its_frames(daemon):
    """bars.rgba.half reads bars.rgba's ring (a derived parent leaves no
    pictures): a whole factor of packed RGB, each 2x2 block's mean of the
    parent frame it names, channels reordered (shrink.c)."""
    bus = framebus.connect(daemon.socket)
    for name in ("bars.rgba", "bars.rgba.half"):
        wait_running(bus, name)
    parent = bus.subscribe("bars.rgba", mode="queue", max_holds=4)
    half = bus.subscribe("bars.rgba.half", mode="queue")
    kept, checked = {}, 0
    deadline = time.monotonic() + 10
    while checked < 5 and time.monotonic() < deadline:
        with parent.acquire(timeout=2) as f:
            kept[f.seq] = (f.array.copy(), f.pts)
        while (g := half.try_acquire()) is not None:
            with g:
                if g.source_seq not in kept:
                    continue
                rgba, pts = kept[g.source_seq]
                assert g.pts == pts and g.array.shape == (120, 160, 3)
                want = cv2.resize(cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR), (160, 120),
                                  interpolation=cv2.INTER_AREA)
                assert np.abs(g.array.astype(int) - want.astype(int)).max() <= 1
                checked += 1
    assert checked >= 5
    bus.close()


def test_a_derived_rate_picks_frames_evenly(daemon):
    bus = framebus.connect(daemon.socket)
    wait_running(bus, "bars.slow", timeout=15)
    info = bus.stream("bars.slow")
    assert (info.width, info.height, info.format, info.source) == (160, 120, "rgb24",
                                                                   "from:bars.gray")
    sub = bus.subscribe("bars.slow", mode="queue")
    times = []
    start = time.monotonic()
    while time.monotonic() - start < 4:
        with sub.acquire(timeout=2) as f:
            times.append(f.monotonic_ns)
            assert f.array.shape == (120, 160, 3)
    gaps = np.diff(times) / 1e6
    rate = (len(times) - 1) / ((times[-1] - times[0]) / 1e9)
    assert 4.5 <= rate <= 5.5, rate
    assert gaps.min() >= 150, f"a burst: {sorted(gaps)[:3]} ms"  # 200 ms apart, +- a frame
    # The parent frames the fps limit left out (45 of bars.gray's 50 a
    # second), as StreamInfo and framebusctl count them; a stream that is
    # not derived has none.
    after = bus.stream("bars.slow")
    assert after.parent_skipped_rate - info.parent_skipped_rate >= 4 * 30, (info, after)
    status = subprocess.run([FRAMEBUSCTL, "--socket", daemon.socket, "status", "--json"],
                            capture_output=True, text=True, check=True).stdout
    ctl = next(s for s in json.loads(status)["streams"] if s["name"] == "bars.slow")
    listed = next(s for s in bus.streams() if s.name == "bars.slow")
    assert (after.parent_skipped_rate <= ctl["parent_skipped_rate"]
            <= listed.parent_skipped_rate), (after, ctl, listed)
    bars = bus.stream("bars")
    assert (bars.parent_skipped_busy, bars.parent_skipped_rate, bars.stalls) == (0, 0, 0)
    bus.close()


def test_a_stalled_block_derived_stream_counts_the_stall_and_the_parent_frames_it_missed():
    """A block derived stream whose queue subscriber reads nothing waits for
    it (block_timeout): StreamInfo counts that stall, and the parent frames
    the stream passed over while it waited (parent_skipped_busy)."""
    d = Daemon("""
[stream src]
url = testsrc2=size=160x120:rate=50
input_format = lavfi
width = 160
height = 120
format = bgr24
[stream src.block]
from = src
width = 80
height = 60
format = rgb24
policy = block
slots = 4
block_timeout = 300ms
""")
    try:
        bus = framebus.connect(d.socket)
        wait_running(bus, "src.block")
        before = bus.stream("src.block")
        assert (before.stalls, before.parent_skipped_busy) == (0, 0), before
        sub = bus.subscribe("src.block", mode="queue")  # and never read
        info = wait_for("the stall", lambda: (i := bus.stream("src.block")).stalls and i)
        assert info.stalls == 1, info
        info = wait_for("skipped parent frames",
                        lambda: (i := bus.stream("src.block")).parent_skipped_busy and i)
        assert info.parent_skipped_busy >= 5, info  # 300 ms of a 50 fps parent, and more
        listed = {s.name: s for s in bus.streams()}
        assert listed["src.block"].stalls == 1
        assert listed["src"].stalls == 0 and listed["src"].parent_skipped_busy == 0
        sub.close()
        bus.close()
    finally:
        d.stop()


def test_scale_threads_reach_each_stream():
    """[daemon] scale_threads is every stream's but those whose own key says
    otherwise, derived streams on request included; the log says, for each
    stream, how its pictures become its frames: libswscale with which method
    and threads, or shrink.c's whole factors."""
    d = Daemon("""scale_threads = 3
[stream bars]
url = testsrc2=size=320x240:rate=25
input_format = lavfi
width = 320
height = 240
format = bgr24
[stream bars.odd]
from = bars
width = 100
height = 80
format = rgb24
scale = area
scale_threads = 2
[stream bars.half]
from = bars
width = 160
height = 120
format = rgb24
""")
    try:
        bus = framebus.connect(d.socket)
        for name in ("bars", "bars.odd", "bars.half"):
            wait_running(bus, name)
        sub = bus.subscribe("bars", width=96, height=72, format="bgr24")
        with sub.acquire(timeout=5):
            pass
        log = d.wait_for_log("stream bars~96x72.bgr24: 320x240 yuv420p to 96x72 bgr24 with "
                             "libswscale (bilinear, scale_threads 3)")
        for line in ("stream bars: 320x240 yuv420p to 320x240 bgr24 with libswscale "
                     "(bilinear, scale_threads 3)",
                     "stream bars.odd: 320x240 yuv420p to 100x80 rgb24 with libswscale "
                     "(area, scale_threads 2)",
                     "stream bars.half: 320x240 yuv420p to 160x120 rgb24 shrunk by whole "
                     "factors (shrink.c, its own thread)"):
            assert line in log, log
        assert log.count("stream bars: 320x240 yuv420p to") == 1, "said once"
        # Each stream's thread has its name (the kernel keeps 15 bytes).
        comms = set()
        for task in glob.glob(f"/proc/{d.proc.pid}/task/*/comm"):
            with open(task) as f:
                comms.add(f.read().strip())
        assert {"bars", "bars.odd", "bars.half", "bars~96x72.bgr2"} <= comms, comms
        sub.close()
        bus.close()
    finally:
        d.stop()


def test_a_derived_stream_ends_with_its_parent_and_starts_again_with_it():
    short = """
[stream short]
url = testsrc2=size=64x48:rate=25:duration={seconds}
input_format = lavfi
width = 64
height = 48
[stream short.gray]
from = short
format = gray8
"""
    d = Daemon(short.format(seconds=1))
    try:
        bus = framebus.connect(d.socket)
        wait_running(bus, "short.gray")
        frames = list(f.seq for f in bus.subscribe("short.gray", mode="queue"))
        assert frames, "it ended before a frame"  # the iteration ends with the stream
        info = bus.stream("short.gray")
        assert (info.state, info.detail) == ("ended", "its parent 'short' ended")
        assert bus.stream("short").state == "ended"
        # A reload that changes the parent starts both again.
        with open(d.config, "w") as f:
            f.write(f"[daemon]\nsocket = {d.socket}\n" + short.format(seconds=30))
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for_log("stream short.gray: stopped (its parent runs again; subscribe again)")
        wait_running(bus, "short.gray")
        with bus.subscribe("short.gray").acquire(timeout=5) as f:
            assert f.array.shape == (48, 64)
        bus.close()
    finally:
        d.stop()


def test_a_derived_stream_on_request_is_made_shared_and_removed(daemon):
    a, b = framebus.connect(daemon.socket), framebus.connect(daemon.socket)
    wait_running(a, "bars")
    time.sleep(1.1)  # the parent's rate is known: fps above it is refused
    first = a.subscribe("bars", width=160, height=90, format="rgb24", fps=10)
    second = b.subscribe("bars", mode="queue", width=160, height=90, format="rgb24", fps=10)
    assert first.stream == second.stream == "bars~160x90.rgb24@10"
    assert (first.shape, first.format) == ((90, 160, 3), "rgb24")
    info = a.stream(first.stream)
    assert info.subscribers == 2 and info.source == "from:bars (on request)"
    with second.acquire(timeout=5) as f:
        assert f.array.shape == (90, 160, 3) and f.origin[0] == "bars" and f.source_seq
    # framebusctl lists it right after its parent and its other children.
    status = subprocess.run([FRAMEBUSCTL, "--socket", daemon.socket, "status", "--json"],
                            capture_output=True, text=True, check=True).stdout
    names = [s["name"] for s in json.loads(status)["streams"]]
    assert names == sorted(names) and "bars~160x90.rgb24@10" in names
    # Requests framebusd cannot serve say why.
    for kwargs, message in [
        ({"width": 160}, "width and height go together"),
        ({"format": "results"}, "'results' is not a pixel format"),
        ({"fps": 0}, "fps must be 0.1 to 1000"),
        ({"width": -2, "height": 90}, "width and height must be 1 to 16384, not -2x90"),
        ({"crop": (1, 2)}, "crop must be \\(x, y, width, height\\)"),
        ({"width": 161, "height": 90, "format": "nv12"}, "161x90 is not a valid size for nv12"),
        ({"fps": 500}, "fps 500 is above bars's"),
        ({"crop": (300, 200, 100, 100)}, "crop 300,200,100,100 does not fit bars's 320x240"),
    ]:
        with pytest.raises(ValueError, match=message):
            a.subscribe("bars", **kwargs)
    with pytest.raises(framebus.NoSuchStream):
        a.subscribe("nothing", width=16, height=16)
    # Gone with its last subscriber.
    first.close()
    assert a.stream("bars~160x90.rgb24@10").subscribers == 1
    b.close()
    deadline = time.monotonic() + 5
    while "bars~160x90.rgb24@10" in [s.name for s in a.streams()]:
        assert time.monotonic() < deadline, "it outlived its last subscriber"
        time.sleep(0.05)
    a.close()


def test_a_derived_stream_on_request_comes_back_after_a_daemon_restart():
    d = Daemon(STREAMS)
    try:
        bus = framebus.connect(d.socket)
        wait_running(bus, "bars")
        sub = bus.subscribe("bars", mode="queue", width=64, height=48, format="gray8")
        seen, restarted = [], False
        for frame in sub:
            seen.append((frame.seq, frame.discontinuity))
            if len(seen) == 5 and not restarted:
                d.terminate()
                d.start()
                restarted = True
            if restarted and frame.discontinuity:
                assert frame.array.shape == (48, 64)
                break
        assert sub.stream == "bars~64x48.gray8"
        assert bus.stream("bars~64x48.gray8").subscribers == 1
        bus.close()
    finally:
        d.stop()


def test_a_reload_that_restarts_the_parent_does_not_end_its_derived_stream():
    streams = """
[stream p]
url = testsrc2=size=64x48:rate={rate}
input_format = lavfi
width = 64
height = 48
[stream p.small]
from = p
width = 32
height = 24
format = gray8
"""
    d = Daemon(streams.format(rate=25))
    try:
        bus = framebus.connect(d.socket)
        wait_running(bus, "p.small")
        sub = bus.subscribe("p.small")
        sub.acquire(timeout=5).release()
        with open(d.config, "w") as f:
            f.write(f"[daemon]\nsocket = {d.socket}\n" + streams.format(rate=30))
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for_log("stream p: stopped (its configuration changed")
        # Its subscriber reads on: the derived stream takes the new parent's
        # frames into the same ring.
        deadline = time.monotonic() + 10
        while bus.stream("p").fps < 28:
            assert time.monotonic() < deadline, "the parent did not restart at 30 fps"
            time.sleep(0.2)
        for _ in range(10):
            sub.acquire(timeout=5).release()
        assert bus.stream("p.small").state == "running"
        bus.close()
    finally:
        d.stop()


def test_a_slow_derived_subscriber_never_costs_the_parent_a_frame(daemon):
    """bars.gray's queue subscriber holds each frame long; bars' own queue
    subscriber still gets every frame, and bars drops none."""
    bus = framebus.connect(daemon.socket)
    for name in ("bars", "bars.gray"):
        wait_running(bus, name)
    slow = bus.subscribe("bars.gray", mode="queue", max_holds=1)
    parent = bus.subscribe("bars", mode="queue")
    dropped = bus.stream("bars").dropped
    seqs, missed = [], 0
    held = slow.acquire(timeout=5)  # and kept: bars.gray can only drop now
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        with parent.acquire(timeout=2) as f:
            seqs.append(f.seq)
            missed += f.missed
    held.release()
    assert len(seqs) > 50 and missed == 0
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a parent frame was lost"
    assert bus.stream("bars").dropped == dropped
    assert bus.stream("bars.gray").state == "running"
    bus.close()
