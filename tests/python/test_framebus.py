# SPDX-License-Identifier: MIT
"""framebus for Python against a real framebusd."""
import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import framebus
from conftest import FRAMEBUSCTL, Daemon, in_a_ring, wait_running


def test_streams_describe_the_daemons_streams(bus):
    info = wait_running(bus, "cam0")
    assert [s.name for s in bus.streams()] == ["cam0"]
    assert (info.width, info.height, info.format, info.state) == (320, 240, "bgr24", "running")
    time.sleep(1.2)  # fps is measured over the last second
    assert bus.stream("cam0").fps > 10
    with pytest.raises(framebus.NoSuchStream, match="no stream 'nope'"):
        bus.stream("nope")


def test_frames_are_zero_copy_views_into_the_ring(bus):
    sub = bus.subscribe("cam0")
    with sub.acquire(timeout=2) as frame:
        a = frame.array
        b = np.asarray(frame)
        ptr = a.__array_interface__["data"][0]
        assert a.shape == (240, 320, 3) and a.dtype == np.uint8
        assert a.strides == (960, 3, 1)
        assert not a.flags.owndata and not a.flags.writeable
        assert b.__array_interface__["data"][0] == ptr
        # The pixels lie inside the daemon's ring memfd, mapped here: no copy.
        assert in_a_ring(ptr, a.strides[0] * 240)
        assert a.std() > 10  # a test pattern, not an empty buffer
        del a, b
    sub.close()


def test_an_array_outliving_its_frame_keeps_the_slot(bus):
    sub = bus.subscribe("cam0", max_holds=2)
    frame = sub.acquire(timeout=2)
    seq = frame.seq
    a = frame.array
    before = a.copy()
    frame.release()
    assert not frame.released and sub.held == 1
    time.sleep(0.5)  # 15 frames pass through an 8-slot ring
    assert np.array_equal(a, before), "the slot was reused under a live array"
    view = a[10:20, 10:20]
    del a
    assert sub.held == 1  # a view of the array still holds it
    del view
    gc.collect()
    assert frame.released and sub.held == 0
    assert frame.seq == seq  # metadata stays readable
    for make_array in (np.asarray, lambda f: f.array):
        with pytest.raises(BufferError, match="released"):
            make_array(frame)
    sub.close()


def test_the_hold_limit_raises_instead_of_stalling(bus):
    sub = bus.subscribe("cam0", max_holds=2)
    arrays = [sub.acquire(timeout=2).array for _ in range(2)]
    with pytest.raises(framebus.HoldLimitError, match="holds 2 frames"):
        sub.acquire(timeout=2)
    arrays.pop()
    assert sub.acquire(timeout=2) is not None
    sub.close()


def test_iteration_releases_each_frame_when_taking_the_next(bus):
    sub = bus.subscribe("cam0", mode="queue")
    seqs = []
    for frame in sub:
        seqs.append(frame.seq)
        assert sub.held == 1
        if len(seqs) == 10:
            break
    assert seqs == list(range(seqs[0], seqs[0] + 10))
    sub.close()


def test_latest_mode_skips_to_the_newest_frame(bus):
    sub = bus.subscribe("cam0", mode="latest")
    sub.acquire(timeout=2).release()
    time.sleep(0.3)
    frame = sub.acquire(timeout=2)
    assert frame.missed >= 3
    assert abs(frame.timestamp - time.time()) < 1.0
    assert 0 <= time.monotonic_ns() - frame.monotonic_ns < 1e9
    sub.close()


def test_published_frames_reach_python_and_c_subscribers_exactly(bus, daemon, tmp_path):
    import cv2
    pub = bus.publish("py.gray", width=64, height=48, format="gray8", slots=8,
                      policy="block")
    sub = bus.subscribe("py.gray", mode="queue")
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (48, 64), dtype=np.uint8) for _ in range(5)]
    for i, img in enumerate(images):
        with pub.frame(timeout=2) as out:
            out.array[:] = img
            out.source_seq = 1000 + i
            out.meta = f'{{"n": {i}}}'
        assert out.seq == i + 1
    for i, img in enumerate(images):
        with sub.acquire(timeout=2) as frame:
            assert frame.seq == i + 1 and frame.source_seq == 1000 + i
            assert frame.meta == f'{{"n": {i}}}'.encode()
            assert np.array_equal(frame.array, img)
    # A C subscriber (framebusctl) sees the newest frame's pixels exactly.
    png = tmp_path / "snap.png"
    subprocess.run([FRAMEBUSCTL, "--socket", daemon.socket, "snapshot", "py.gray", str(png)],
                   check=True, timeout=10)
    snap = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(snap, images[-1])
    pub.close()
    with pytest.raises(framebus.StreamEnded):
        sub.acquire(timeout=2)


def test_a_frame_block_that_raises_is_discarded(bus):
    pub = bus.publish("py.discard", width=16, height=16, format="gray8")
    sub = bus.subscribe("py.discard", mode="queue")
    with pytest.raises(RuntimeError, match="boom"):
        with pub.frame() as out:
            out.array[:] = 7
            raise RuntimeError("boom")
    assert not out.published and out.seq is None
    with pytest.raises(TimeoutError):
        sub.acquire(timeout=0.1)
    with pub.frame() as out:
        out.array[:] = 9
    with sub.acquire(timeout=1) as frame:
        assert frame.seq == 1 and int(frame.array.max()) == 9
    pub.close()


@pytest.mark.parametrize("fmt,shape", [("bgra", (48, 64, 4)), ("nv12", (72, 64)),
                                       ("yuv420p", (72, 64)), ("rgb24", (48, 64, 3))])
def test_every_format_has_its_numpy_shape(bus, fmt, shape):
    pub = bus.publish(f"py.{fmt}", width=64, height=48, format=fmt)
    sub = bus.subscribe(f"py.{fmt}", mode="queue")
    with pub.frame() as out:
        assert out.array.shape == shape
        out.array[:] = np.arange(out.array.size, dtype=np.uint64).reshape(shape) % 251
    with sub.acquire(timeout=1) as frame:
        assert np.array_equal(frame.array, np.arange(frame.array.size).reshape(shape) % 251)
    pub.close()


def test_yuv420p_reads_as_one_opencv_image(bus):
    import cv2
    bgr = np.zeros((48, 64, 3), np.uint8)
    bgr[:, :32] = (255, 0, 0)
    bgr[:, 32:] = (0, 0, 255)
    pub = bus.publish("py.i420", width=64, height=48, format="yuv420p")
    sub = bus.subscribe("py.i420", mode="queue")
    with pub.frame() as out:
        out.array[:] = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    with sub.acquire(timeout=1) as frame:
        back = cv2.cvtColor(frame.array, cv2.COLOR_YUV2BGR_I420)
    assert np.abs(back.astype(int) - bgr).max() < 8
    pub.close()


def test_asyncio_iteration(bus):
    wait_running(bus, "cam0")

    async def main():
        sub = bus.subscribe("cam0", mode="queue")
        seqs = []
        async for frame in sub.frames_async():
            seqs.append(frame.seq)
            if len(seqs) == 5:
                break
        sub.close()
        return seqs

    seqs = asyncio.run(asyncio.wait_for(main(), 10))
    assert seqs == list(range(seqs[0], seqs[0] + 5))


async def ticker(lateness, stop):
    """A 1 ms timer on the loop, noting how late each tick came."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.001)
        lateness.append(loop.time() - t - 0.001)


def test_asyncio_iteration_never_stalls_the_loop(bus):
    wait_running(bus, "cam0")

    async def main():
        lateness, stop = [], asyncio.Event()
        tick = asyncio.create_task(ticker(lateness, stop))
        sub = bus.subscribe("cam0", mode="queue")
        seqs = []
        async for frame in sub.frames_async():  # past the pace learning: wakes ahead
            seqs.append(frame.seq)
            if len(seqs) == 40:
                break
        sub.close()
        stop.set()
        await tick
        return seqs, lateness

    seqs, lateness = asyncio.run(asyncio.wait_for(main(), 20))
    assert seqs == list(range(seqs[0], seqs[0] + 40))
    # The 1 ms timer kept ticking over the 1.3 s of 40 frames: a loop held
    # for each frame would tick about 40 times.  (How late its ticks come
    # depends on the host's load: a benchmark's business, not a test's.)
    assert len(lateness) > 300, len(lateness)


def test_asyncio_catches_a_steady_streams_frames_on_the_futex(bus, monkeypatch):
    # A stream at 30 fps that pauses 0.3 s after 24 frames, then goes on.
    # Once the iterator knows the pace it waits for each frame on the
    # ring's futex (docs/python.md, "Event loops"); a frame far later than
    # due is waited for on the pipe: the loop is not held for it.
    paces = []

    class Recorded(framebus._Pace):
        def __init__(self):
            super().__init__()
            paces.append(self)

    monkeypatch.setattr(framebus, "_Pace", Recorded)
    pub = bus.publish("py.paced", 64, 48, format="gray8", slots=8)
    sub = bus.subscribe("py.paced", mode="queue")

    def publish():
        # A steady source even under load: its wake-ups preempt other work.
        framebus._framebus._sched_slice(0.0001)
        start = time.monotonic()
        for i in range(34):
            due = start + i / 30 + (0.3 if i >= 24 else 0)
            time.sleep(max(0.0, due - time.monotonic()))
            with pub.frame() as out:
                out.source_seq = i

    async def main():
        lateness, stop = [], asyncio.Event()
        tick = asyncio.create_task(ticker(lateness, stop))
        thread = threading.Thread(target=publish)
        thread.start()
        seen, caught = [], []
        async for frame in sub.frames_async():
            seen.append(frame.source_seq)
            caught.append(paces[0].caught)  # frames caught so far
            if len(seen) == 34:
                break
        stop.set()
        await tick
        await asyncio.to_thread(thread.join)
        return seen, caught, lateness

    seen, caught, lateness = asyncio.run(asyncio.wait_for(main(), 20))
    sub.close()
    pub.close()
    assert seen == list(range(34))
    # Frames after the pace was learnt (6 frames) were caught on the futex:
    # most of them on a quiet host (18 of 18 before the pause), fewer when
    # the host is so loaded that the loop finds them waiting, but some.
    assert caught[-1] > 0, caught
    # The first frame after the pause came through the pipe.
    assert caught[24] == caught[23], caught
    # The loop ticked on through the pause (0.3 s of a 1 ms timer).
    assert len(lateness) > 100, len(lateness)


def test_asyncio_pace_keeps_the_schedule_and_adapts_its_lead():
    # The schedule frames_async() catches frames by (framebus._Pace), fed
    # publish times of a 30 fps stream in the past: nothing here waits.
    class Loop:
        def time(self):
            return 100.0

    T = 33_333_333
    pace = framebus._Pace()
    start = time.monotonic_ns() - 20 * T
    for i in range(6):
        pace.learn(start + i * T)
    assert pace.paced() and pace.interval == T
    pace.learn(start + 6 * T + 3_000_000)  # 3 ms late: the schedule keeps
    assert pace.due == start + 6 * T + 3_000_000 // 8 + pace.interval  # its phase
    pace.learn(start + 7 * T)  # on time after the late one: on schedule
    assert pace.due == start + 7 * T + pace.interval
    assert pace.paced()
    pace.learn(start + 8 * T - 2_000_000)  # 2 ms early: the schedule moves
    assert pace.due == start + 8 * T - 2_000_000 + pace.interval
    # Due ~11 intervals ago: more than 4 ms late, so wait on the pipe.
    assert pace.catch_from(Loop()) is None and not pace.catching()
    now = time.monotonic_ns()
    pace.due = now + 100_000_000  # due in 100 ms: catch from lead before it
    at = pace.catch_from(Loop())
    assert 100.0 + 0.1 - 0.0013 - 0.01 < at <= 100.0 + 0.1 - 0.0013
    assert pace.catching()
    for _ in range(6):  # frames beat the catch: the lead grows to its bound
        pace.beaten()
    assert (pace.missed, pace.lead) == (6, framebus._Pace.LEAD_MAX_NS)
    began = pace.due - 3_000_000
    pace.caught_at(began, pace.due)  # waited 3 ms: the lead shrinks a little
    assert pace.caught == 1
    assert pace.lead == framebus._Pace.LEAD_MAX_NS - framebus._Pace.LEAD_STEP_NS // 25
    pace.caught_at(pace.due - 500_000, pace.due)  # waited 0.5 ms: it stays
    assert pace.lead == framebus._Pace.LEAD_MAX_NS - framebus._Pace.LEAD_STEP_NS // 25


def sched_slice_ns():
    """The calling thread's fair-scheduler slice, as the kernel reports it
    (None before Linux 6.6, which has no slice per task)."""
    with open("/proc/thread-self/sched") as f:
        return next((int(line.split(":")[1]) for line in f if line.startswith("se.slice")),
                    None)


def test_asyncio_iteration_shortens_the_loop_threads_slice_while_it_lasts(bus):
    # frames_async() asks for a 0.1 ms slice for the loop's thread (its
    # wake-ups then preempt other work, docs/python.md), kept while any
    # iterator on the thread runs, the previous one given back after;
    # sched_slice=None leaves the thread alone.
    pub = bus.publish("py.slice", 64, 48, format="gray8", slots=8)
    subs = [bus.subscribe("py.slice", mode="queue") for _ in range(3)]
    before = sched_slice_ns()

    async def main():
        seen = []
        first, second = subs[0].frames_async(), subs[1].frames_async()
        alone = subs[2].frames_async(sched_slice=None)
        with pub.frame() as out:
            out.array[:] = 1
        await first.__anext__()
        seen.append(sched_slice_ns())
        await second.__anext__()
        await first.aclose()
        seen.append(sched_slice_ns())  # the second still iterates
        await second.aclose()
        seen.append(sched_slice_ns())
        await alone.__anext__()
        seen.append(sched_slice_ns())
        await alone.aclose()
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), 10))
    for sub in subs:
        sub.close()
    pub.close()
    # A kernel without slices per task ignores the request: the iterators
    # work the same.
    shortened = 100_000 if before is not None else None
    assert seen == [shortened, shortened, before, before], (seen, before)
    assert sched_slice_ns() == before


def test_an_async_publisher_waits_without_blocking_the_loop(bus):
    async def main():
        pub = bus.publish("py.async", 64, 48, format="gray8", slots=3, policy="block")
        sub = bus.subscribe("py.async", mode="queue")  # reads nothing yet
        for _ in range(3):  # the ring fills: 3 frames nobody read
            with await pub.frame_async(timeout=1) as out:
                out.array[:] = 1
        lateness, stop = [], asyncio.Event()
        tick = asyncio.create_task(ticker(lateness, stop))
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await pub.frame_async(timeout=0.2)
        waited = asyncio.get_running_loop().time() - t0
        # Room again once the subscriber reads: the wait ends by itself.
        asyncio.get_running_loop().call_later(0.05, lambda: sub.acquire(timeout=1).release())
        with await pub.frame_async(timeout=2) as out:
            out.array[:] = 2
        stop.set()
        await tick
        sub.close()
        pub.close()
        return waited, lateness

    waited, lateness = asyncio.run(asyncio.wait_for(main(), 10))
    assert waited >= 0.2
    # The loop ticked on while the publisher waited 0.2 s and more.
    assert len(lateness) > 100, len(lateness)


def test_bus_events_come_as_an_async_iterator(bus, daemon):
    async def main():
        publisher = framebus.connect(daemon.socket, name="events-publisher")
        pub = publisher.publish("py.events", 64, 48, format="gray8")
        with pub.frame():
            pass
        sub = bus.subscribe("py.events")
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, publisher.close)  # its stream goes with it
        async for event in bus.events_async():
            if isinstance(event, framebus.StreamEvent) and event.stream == "py.events":
                sub.close()
                return event

    event = asyncio.run(asyncio.wait_for(main(), 10))
    assert event.state == "removed" and "publisher" in event.detail, event


def test_misuse_raises_clear_errors(bus):
    with pytest.raises(ValueError, match="mode must be 'latest' or 'queue'"):
        bus.subscribe("cam0", mode="newest")
    with pytest.raises(ValueError, match="unknown pixel format 'rgb565'"):
        bus.publish("x", 64, 48, format="rgb565")
    with pytest.raises(ValueError, match="not a valid nv12 frame size"):
        bus.publish("x", 63, 48, format="nv12")
    with pytest.raises(ValueError, match="slots must be"):
        bus.publish("x", 64, 48, slots=1)
    with pytest.raises(framebus.StreamExists):
        bus.publish("cam0", 64, 48)
    with pytest.raises(ValueError, match="timeout must be"):
        bus.subscribe("cam0").acquire(timeout=-1)
    pub = bus.publish("py.misuse", 16, 16, format="gray8", meta_max=8)
    with pub.frame() as out:
        with pytest.raises(ValueError, match="does not fit"):
            out.meta = b"123456789"
        with pytest.raises(RuntimeError, match="neither published nor discarded"):
            pub.frame()
    with pytest.raises(ValueError, match="already published"):
        out.source_seq = 3
    with pytest.raises(BufferError, match="already published"):
        np.asarray(out)
    sub = bus.subscribe("cam0")
    with sub.acquire(timeout=2) as frame:
        with pytest.raises(ValueError, match="read-only"):
            frame.array[0, 0, 0] = 1
        with pytest.raises(TypeError, match="read-only"):
            memoryview(frame)[0, 0, 0] = 1
    pub.close()
    with pytest.raises(ValueError, match="closed"):
        pub.frame()


def test_a_closed_bus_refuses_calls_but_live_arrays_stay_valid(daemon):
    bus = framebus.connect(daemon.socket)
    sub = bus.subscribe("cam0")
    frame = sub.acquire(timeout=2)
    a = frame.array
    before = a.copy()
    bus.close()
    for call in (bus.streams, lambda: bus.subscribe("cam0"), lambda: sub.acquire()):
        with pytest.raises(ValueError, match="closed"):
            call()
    time.sleep(0.4)
    assert np.array_equal(a, before)  # still held: the connection waits for it
    del a, frame
    gc.collect()
    with pytest.raises(ConnectionRefusedError, match="cannot connect"):
        framebus.connect(daemon.socket + ".missing")


def test_a_bad_client_name_is_refused_and_a_script_name_made_fit(daemon, tmp_path):
    for bad in ("slow reader", "", "x" * 64, "caf\u00e9"):
        with pytest.raises(ValueError, match="must be 1 to 63 printable ASCII"):
            framebus.connect(daemon.socket, name=bad)
    script = tmp_path / "my analytics \u00e9.py"
    script.write_text(f"import framebus\nprint(framebus.connect({daemon.socket!r}).path)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=dict(os.environ))
    assert out.returncode == 0 and out.stdout.strip() == daemon.socket, out.stderr


def test_ctrl_c_interrupts_a_blocking_acquire(daemon):
    script = textwrap.dedent(f"""
        import framebus, sys
        bus = framebus.connect({daemon.socket!r})
        pub = bus.publish("py.silent", 16, 16, format="gray8")
        sub = bus.subscribe("py.silent")
        print("waiting", flush=True)
        try:
            sub.acquire()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env=os.environ)
    assert proc.stdout.readline().strip() == "waiting"
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=5)
    assert out.strip() == "interrupted"
    assert time.monotonic() - t0 < 1.0


def test_blocking_calls_let_other_threads_run(bus):
    pub = bus.publish("py.gil", 16, 16, format="gray8")
    sub = bus.subscribe("py.gil")
    got = []
    t = threading.Thread(target=lambda: got.append(sub.acquire(timeout=5).seq))
    t.start()
    time.sleep(0.2)
    spins = sum(1 for _ in range(100000))  # runs while the thread waits
    with pub.frame() as out:
        out.array[:] = 1
    t.join(5)
    assert got == [1] and spins == 100000
    pub.close()


def test_a_killed_subscriber_process_gives_its_slots_back(bus, daemon):
    pub = bus.publish("py.killed", 32, 32, format="gray8", slots=4, policy="block")
    script = textwrap.dedent(f"""
        import framebus
        bus = framebus.connect({daemon.socket!r})
        sub = bus.subscribe("py.killed", mode="queue", max_holds=3)
        print("subscribed", flush=True)
        held = [sub.acquire().array for _ in range(3)]
        print("holding", flush=True)
        import time; time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    # Its subscription first: frames published before it would never reach it.
    assert child.stdout.readline().strip() == "subscribed"
    for _ in range(3):
        with pub.frame(timeout=2) as out:
            out.array[:] = 5
    assert child.stdout.readline().strip() == "holding"
    assert pub.stats["held"] == 3
    child.kill()
    child.wait()
    # The daemon hands its holds back; the block-policy publisher goes on.
    for _ in range(8):
        with pub.frame(timeout=3) as out:
            out.array[:] = 6
    assert pub.stats["subscribers"] == 0
    pub.close()


def test_the_daemon_dying_mid_iteration_waits_for_it_and_goes_on():
    d = Daemon()
    try:
        bus = framebus.connect(d.socket)
        wait_running(bus, "cam0")
        sub = bus.subscribe("cam0", mode="queue")
        seen = 0
        restarted = threading.Event()
        for frame in sub:
            seen += 1
            if seen == 3:
                kept = frame.array
                d.kill()
                assert not bus.connected
                with pytest.raises(ConnectionError, match="went away"):
                    bus.streams()
                assert kept.std() > 10  # a frame kept is still mapped and readable
                pixels = kept.copy()
                # Set first: the subscriber may be back before start() returns.
                threading.Timer(1.0, lambda: (restarted.set(), d.start())).start()
            elif seen == 4:
                assert restarted.is_set() and frame.discontinuity
                assert np.array_equal(kept, pixels)  # the old ring, kept with it
                break
        assert bus.connected
        assert bus.stream("cam0").subscribers == 1
    finally:
        d.stop()


def test_asyncio_waits_for_the_daemon_to_come_back():
    d = Daemon()
    try:
        bus = framebus.connect(d.socket)
        wait_running(bus, "cam0")

        async def main():
            sub = bus.subscribe("cam0")
            killed = False
            async for frame in sub.frames_async():
                if not killed and frame.seq > 2:
                    d.kill()
                    killed = True
                    asyncio.get_running_loop().call_later(1.0, d.start)
                elif killed:
                    return frame.discontinuity, sub.reconnecting

        assert asyncio.run(asyncio.wait_for(main(), 20)) == (True, False)
    finally:
        d.stop()


def test_the_gray_example_publishes_gray_frames_matched_to_their_source(bus, daemon):
    import json

    import cv2
    wait_running(bus, "cam0")
    source = bus.subscribe("cam0", mode="queue")
    example = os.path.join(os.path.dirname(__file__), "..", "..", "python", "examples",
                           "gray.py")
    proc = subprocess.Popen([sys.executable, example, "--socket", daemon.socket,
                             "--output", "cam0.test-gray", "--frames", "90"],
                            stdout=subprocess.PIPE, text=True)
    assert "-> cam0.test-gray" in proc.stdout.readline()
    gray = bus.subscribe("cam0.test-gray", mode="queue")
    originals, checked = {}, 0
    deadline = time.monotonic() + 20
    while checked < 20 and time.monotonic() < deadline:
        while (f := source.try_acquire()) is not None:
            with f:
                originals[f.seq] = f.array.copy()
        g = gray.try_acquire()
        if g is None:
            time.sleep(0.01)
            continue
        with g:
            result = json.loads(g.meta)
            assert g.array.shape == (240, 320)
            assert abs(result["mean"] - float(g.array.mean())) < 0.01
            if g.source_seq in originals:
                expected = cv2.cvtColor(originals[g.source_seq], cv2.COLOR_BGR2GRAY)
                assert np.array_equal(g.array, expected)
                checked += 1
    assert checked >= 20
    proc.wait(timeout=20)
    assert "90 frames processed" in proc.stdout.read()
    with pytest.raises(framebus.StreamEnded):
        while True:
            gray.acquire(timeout=2).release()


def test_pip_builds_an_installable_wheel_offline(daemon, tmp_path):
    import zipfile
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
                    "--no-index", "--config-settings=setup-args=-Dpython_only=true",
                    "-w", str(tmp_path / "wheels"), root],
                   check=True, timeout=600, capture_output=True)
    (wheel,) = (tmp_path / "wheels").iterdir()
    names = zipfile.ZipFile(wheel).namelist()
    assert "framebus/__init__.py" in names and "framebus/_framebus.pyi" in names
    assert not [n for n in names if n.endswith((".h", "framebusctl", ".pc"))], names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    out = subprocess.run([sys.executable, "-c", "import framebus, sys; "
                          f"print(framebus.__file__, framebus.connect({daemon.socket!r}).stream('cam0').name)"],
                         env=env, check=True, capture_output=True, text=True, timeout=30).stdout
    assert out.startswith(str(tmp_path / "site")) and out.split()[1] == "cam0"


def test_meson_devenv_imports_the_build_trees_package():
    build = os.environ.get("FRAMEBUS_BUILD_ROOT")
    assert build, "run through meson test (FRAMEBUS_BUILD_ROOT names the build tree)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(["meson", "devenv", "-C", build, sys.executable, "-c",
                          "import framebus, shutil; print(framebus.__file__); "
                          "print(shutil.which('framebusd'))"],
                         env=env, check=True, capture_output=True, text=True, timeout=60).stdout
    module, daemon_path = out.split()
    assert module.startswith(os.path.join(build, "python", "framebus"))
    assert daemon_path.startswith(build)


def test_an_interrupt_while_numpy_is_first_imported_is_not_swallowed(daemon):
    # The binding imports numpy itself the first time it makes an array,
    # ahead of a wait: a Ctrl-C landing in that import must reach the caller.
    script = textwrap.dedent(f"""
        import sys
        import framebus
        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "numpy":
                    raise KeyboardInterrupt
        sys.meta_path.insert(0, Interrupt())
        sub = framebus.connect({daemon.socket!r}).subscribe("cam0")
        try:
            sub.acquire(timeout=5)
        except KeyboardInterrupt:
            print("interrupted")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30, env=dict(os.environ))
    assert out.stdout.strip() == "interrupted", out.stdout + out.stderr


def test_access_rules_refuse_with_permission_error():
    """[access] rules, seen from Python run as another user (uid 61234, not
    listed): PermissionError naming the rule, for subscribe and publish."""
    d = Daemon("socket_mode = 0666\n" + """
[stream cam0]
url = testsrc2=size=64x48:rate=30
input_format = lavfi
[access cameras]
streams = cam0 cam0.*
subscribe = 61000
""")
    try:
        os.chmod(d.dir.name, 0o755)
        script = textwrap.dedent(f"""
            import framebus
            bus = framebus.connect({d.socket!r})
            for call in (lambda: bus.subscribe("cam0"),
                         lambda: bus.publish("cam0.gray", 16, 16, "gray8")):
                try:
                    call()
                    print("allowed")
                except PermissionError as e:
                    print("refused:", e)
        """)
        out = subprocess.run(["setpriv", "--reuid=61234", "--regid=61234", "--clear-groups",
                              sys.executable, "-c", script],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert len(lines) == 2, out.stdout
        assert "denied by [access cameras]: uid 61234 may not subscribe to 'cam0'" in lines[0]
        assert "denied by [access cameras]: uid 61234 may not publish 'cam0.gray'" in lines[1]
    finally:
        d.stop()
