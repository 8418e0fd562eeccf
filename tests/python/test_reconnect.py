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


def test_frames_held_across_a_restart_must_be_released_first(daemon):
    bus = framebus.connect(daemon.socket, name="pytest")
    wait_running(bus, "cam0")
    sub = bus.subscribe("cam0")
    held = sub.acquire(timeout=10)
    array = held.array
    restart(daemon)
    with pytest.raises(ConnectionResetError, match="still held"):
        sub.acquire(timeout=5)
    assert array.shape == (240, 320, 3)  # the old ring's memory is still mapped
    held.release()
    del array
    with sub.acquire(timeout=15) as frame:
        assert frame.discontinuity
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
