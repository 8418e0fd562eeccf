# SPDX-License-Identifier: MIT
"""framebusd killed and started again: buses connect again by themselves,
publishers publish again, subscribers subscribe again, and they say so."""
import time

import numpy
import pytest

import framebus
from conftest import Daemon, wait_running


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


def restart(daemon):
    daemon.kill()
    daemon.start()


def connection_events(bus, want, timeout=10):
    """Call process() as an event loop would until `want` ConnectionEvents came."""
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < want and time.monotonic() < deadline:
        events += [e for e in bus.process() if isinstance(e, framebus.ConnectionEvent)]
        time.sleep(0.05)
    return events


def test_a_subscriber_goes_on_after_the_daemon_is_killed_and_restarted(daemon):
    bus = framebus.connect(daemon.socket, name="pytest")
    wait_running(bus, "cam0")
    sub = bus.subscribe("cam0")
    with sub.acquire(timeout=10) as frame:
        assert not frame.discontinuity or frame.seq == 1
    restart(daemon)
    assert not bus.connected
    # The next frames come from the new daemon's ring, the first one marked.
    first = sub.acquire(timeout=15)
    assert first.discontinuity
    first.release()
    for frame in sub:
        assert not frame.discontinuity
        assert frame.array.shape == (240, 320, 3)
        break
    assert bus.connected
    events = [e for e in bus.process() if isinstance(e, framebus.ConnectionEvent)]
    assert [e.connected for e in events] == [False, True], events
    assert daemon.socket in events[0].detail and "again" in events[1].detail
    # The new daemon counts exactly one subscription of ours.
    assert bus.stream("cam0").subscribers == 1
    bus.close()


def test_the_bus_fd_wakes_an_event_loop_for_each_step(daemon):
    bus = framebus.connect(daemon.socket, name="pytest")
    fd = bus.fileno()
    daemon.kill()
    assert [e.connected for e in connection_events(bus, 1)] == [False]
    assert bus.fileno() == fd
    daemon.start()
    events = connection_events(bus, 1)
    assert [e.connected for e in events] == [True], events
    assert bus.connected
    assert "cam0" in [s.name for s in bus.streams()]
    bus.close()


def test_a_published_stream_is_published_again_and_its_subscribers_follow(daemon):
    pub_bus = framebus.connect(daemon.socket, name="publisher")
    sub_bus = framebus.connect(daemon.socket, name="subscriber")
    pub = pub_bus.publish("py.out", width=64, height=48, format="gray8", slots=4)
    sub = sub_bus.subscribe("py.out", mode="queue")

    def send(value):
        with pub.frame(timeout=5) as out:
            out.array[:] = value % 251
            out.source_seq = value

    send(1)
    with sub.acquire(timeout=5) as frame:
        assert frame.source_seq == 1 and numpy.all(frame.array == 1)
    restart(daemon)
    # The publisher goes on as if nothing happened.  Its frames still reach
    # the subscriber through the old subscription (the ring is the
    # publisher's) until its next frame publishes the stream again on the
    # new daemon; then the subscriber subscribes again: a discontinuity.
    seen = []
    deadline = time.monotonic() + 15
    value = 2
    while not (seen and seen[-1][1]) and time.monotonic() < deadline:
        send(value)
        value += 1
        try:
            with sub.acquire(timeout=0.2) as got:
                assert numpy.all(got.array == got.source_seq % 251)
                seen.append((got.source_seq, got.discontinuity))
        except TimeoutError:
            pass
    assert seen and seen[-1][1], f"no frame after the restart: {seen}"
    assert [s for s, _ in seen] == sorted(s for s, _ in seen), seen
    info = sub_bus.stream("py.out")
    assert info.source.startswith("client:publisher") and info.subscribers == 1
    pub_bus.close()
    sub_bus.close()


def framebus_mappings():
    """This process's mappings of framebus memfds: each ring it subscribed to
    maps its frames, its control page and its record."""
    with open("/proc/self/maps") as f:
        return sum(" /memfd:framebus-" in line for line in f)


def first_of_the_new_ring(sub):
    """The first frame after a restart, once the frames the old ring still
    had (published before the daemon was killed) were taken and released."""
    while not (frame := sub.acquire(timeout=15)).discontinuity:
        frame.release()
    return frame


def keep_array(frame):
    return frame.array, numpy.array(frame.array)


def keep_tensor(frame):
    import torch
    tensor = torch.from_dlpack(frame)
    return tensor, tensor.numpy().copy()


@pytest.mark.parametrize("keep", [keep_array, keep_tensor], ids=["array", "tensor"])
def test_a_loop_keeping_the_last_frames_pixels_goes_on_across_a_restart(daemon, keep):
    bus = framebus.connect(daemon.socket, name="pytest")
    wait_running(bus, "cam0")
    before = framebus_mappings()
    sub = bus.subscribe("cam0")
    ring = framebus_mappings() - before
    kept = None
    # The usual loop: its variables keep the last frame's pixels (and so its
    # slot) while next() takes the next frame.
    for frame in sub:
        if kept is None:
            restart(daemon)
        elif frame.discontinuity:
            break  # the first frame of the new ring
        assert frame.seq < 20, "no frame of the new ring"
        kept = keep(frame)  # (pixels, a copy of them)
    assert frame.array.shape == (240, 320, 3)
    # The old ring stays mapped, its pixels unchanged, while they are kept.
    assert framebus_mappings() == before + 2 * ring
    assert numpy.array_equal(numpy.asarray(kept[0]), kept[1])
    del kept
    assert framebus_mappings() == before + ring
    # The daemon holds one subscription of ours, and it moves on.
    assert bus.stream("cam0").subscribers == 1
    frame.release()
    assert sub.acquire(timeout=5).seq > frame.seq
    assert "error" not in daemon.read_log().lower()
    bus.close()


def test_frames_held_across_restarts_stay_readable_until_released(daemon):
    bus = framebus.connect(daemon.socket, name="pytest")
    wait_running(bus, "cam0")
    results = bus.publish_results("cam0.notes", slots=4)  # for made_from
    before = framebus_mappings()
    sub = bus.subscribe("cam0")
    held = [sub.acquire(timeout=10)]
    ring = framebus_mappings() - before
    pixels = [numpy.array(held[0].array)]
    # Two restarts, a frame held from each ring: both rings are retired.
    for _ in range(2):
        restart(daemon)
        held.append(first_of_the_new_ring(sub))
        pixels.append(numpy.array(held[-1].array))
    assert framebus_mappings() == before + 3 * ring
    for frame, then in zip(held, pixels):
        assert not frame.released
        assert numpy.array_equal(frame.array, then)
        assert numpy.array_equal(numpy.from_dlpack(frame), then)
        results.send("seen", made_from=frame)
    # Each ring goes when its frame does; the current one stays.
    for rings_left in (2, 1, 1):
        frame = held.pop(0)
        frame.release()
        assert frame.released
        with pytest.raises(BufferError, match="released"):
            numpy.asarray(frame)
        assert framebus_mappings() == before + rings_left * ring
    assert sub.held == 0
    with sub.acquire(timeout=5) as frame:
        assert not frame.discontinuity
    bus.close()


def test_frames_from_before_a_restart_do_not_count_against_the_hold_limit(daemon):
    bus = framebus.connect(daemon.socket, name="pytest")
    wait_running(bus, "cam0")
    sub = bus.subscribe("cam0", max_holds=2)
    old = sub.acquire(timeout=10).array
    restart(daemon)
    new = [first_of_the_new_ring(sub).array, sub.acquire(timeout=5).array]
    assert sub.held == 2
    with pytest.raises(framebus.HoldLimitError, match="holds 2 frames"):
        sub.acquire(timeout=2)
    assert all(a.shape == (240, 320, 3) for a in [old] + new)
    bus.close()


def test_a_stream_back_with_another_geometry_ends_the_subscription(daemon):
    bus = framebus.connect(daemon.socket, name="pytest")
    wait_running(bus, "cam0")
    sub = bus.subscribe("cam0")
    sub.acquire(timeout=10).release()
    daemon.kill()
    with open(daemon.config) as f:
        config = f.read()
    with open(daemon.config, "w") as f:
        f.write(config.replace("size=320x240", "size=160x120"))
    daemon.start()
    with pytest.raises(framebus.StreamRemoved):
        while True:
            sub.acquire(timeout=15).release()
    bus.close()
