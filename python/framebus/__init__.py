# SPDX-License-Identifier: MIT
"""framebus: live video frames from framebusd as zero-copy numpy arrays.

    import framebus
    bus = framebus.connect()                  # $FRAMEBUS_SOCKET or /run/framebus/framebus.sock
    sub = bus.subscribe("cam0")               # mode="latest" (default) or "queue"
    for frame in sub:                         # each frame released when the next is taken
        img = frame.array                     # read-only numpy view into shared memory

    pub = bus.publish("cam0.gray", width=w, height=h, format="gray8")
    with pub.frame() as out:                  # published when the block ends normally
        out.array[:] = gray
        out.made_from(frame)                  # source_seq, capture time and hops
        out.meta = b'{"faces": 2}'

docs/python.md is the guide.
"""
from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import AsyncIterator, Optional, Union

from ._framebus import (
    DEFAULT_SOCKET,
    ConnectionEvent,
    DISCONTINUITY,
    KEYFRAME,
    Bus,
    Error,
    Frame,
    FrameDropped,
    HoldLimitError,
    NoSuchStream,
    OutFrame,
    Publisher,
    StreamEnded,
    StreamEvent,
    StreamExists,
    StreamInfo,
    StreamRemoved,
    Subscriber,
    formats,
    library_version,
)
from ._framebus import _sched_slice
from ._framebus import connect as _connect

__version__ = library_version

__all__ = [
    "DEFAULT_SOCKET", "DISCONTINUITY", "KEYFRAME", "Bus", "ConnectionEvent",
    "Error", "Frame",
    "FrameDropped", "HoldLimitError", "NoSuchStream", "OutFrame", "Publisher", "StreamEnded",
    "StreamEvent", "StreamExists", "StreamInfo", "StreamRemoved", "Subscriber", "connect",
    "formats",
]


def connect(path: Optional[str] = None, name: Optional[str] = None) -> Bus:
    """Connect to framebusd.

    path: the daemon's socket; None means $FRAMEBUS_SOCKET, else DEFAULT_SOCKET.
    name: what `framebusctl status` shows for this client (default: the script's name
          and pid); 1 to 63 printable ASCII characters without spaces.
    Raises ConnectionRefusedError when no daemon listens there, PermissionError
    when this user may not connect (not in the socket's group).
    """
    if name is None:
        script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        # A name is printable ASCII without spaces: "my script.py" -> "my_script.py".
        script = "".join(c if "!" <= c <= "~" else "_" for c in script)[:48]
        name = f"{script or 'python'}[{os.getpid()}]"
    return _connect(path, name)


class _Readable:
    """fd's readiness as an awaitable, for as long as it is open: one reader on
    the loop, not one per wait.  The descriptors here (a subscriber's wake
    pipe, a bus's) are level-triggered, so on each wake-up the reader empties
    the pipe (a subscriber's: a byte per wake, which the library does not
    need back) or leaves it to the owner's next call (a bus's epoll set,
    emptied by process()), and stops watching until the next wait."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, drain: bool):
        self.loop, self.fd, self.drain = loop, fd, drain
        self.buffer = bytearray(64)
        self.waiter: Optional[asyncio.Future] = None
        self.watching = False

    def _ready(self) -> None:
        if self.drain:
            # Without blocking, whoever read it first (the pipe's open file
            # is shared with framebusd, so no O_NONBLOCK on it).
            try:
                if os.preadv(self.fd, [self.buffer], -1, os.RWF_NOWAIT) == 0:
                    self._unwatch()  # the writer is gone: the owner says so
            except (BlockingIOError, InterruptedError):
                pass
        else:
            self._unwatch()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(True)

    def _unwatch(self) -> None:
        if self.watching:
            self.loop.remove_reader(self.fd)
            self.watching = False

    def _timeout(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(False)

    async def wait(self, until: Optional[float] = None) -> bool:
        """Until fd is readable (True) or the loop's clock reaches until
        (False)."""
        if not self.watching:
            self.loop.add_reader(self.fd, self._ready)
            self.watching = True
        self.waiter = self.loop.create_future()
        timer = None if until is None else self.loop.call_at(until, self._timeout)
        try:
            return await self.waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        self._unwatch()


class _Pace:
    """A stream's pace from its frames' publish times, so that the loop can
    wait for the next frame the way a blocking acquire does: on the ring's
    futex, from shortly before the frame is due.  A frame that wakes the loop
    through the pipe costs 100-200 us more on this kind of host than one
    caught on the futex (docs/python.md, "Event loops").

    The schedule (due) keeps the phase of the stream's earliest frames: a
    late frame moves it by an eighth of its lateness, an early one all the
    way, so one late frame does not make the next, on-time one early.  The
    loop's timer wakes lead before due (asyncio's epoll timers round up to
    whole milliseconds, hence at least 1.3 ms); a frame that beats it moves
    the lead earlier by LEAD_STEP_NS, each catch that waited over a
    millisecond moves it back by LEAD_STEP_NS / 25, within [LEAD_MIN_NS,
    LEAD_MAX_NS].  Counts: caught (on the futex) and missed (a frame that
    beat the timer of a paced stream)."""

    LEAD_MIN_NS = 1_300_000
    LEAD_MAX_NS = 3_300_000
    LEAD_STEP_NS = 500_000
    CATCH_S = 0.002      # the longest the loop is held at a time
    LATE_MAX_NS = 4_000_000  # a frame later than this past due: wait on the pipe
    MIN_NS = 2_000_000   # only for streams slower than this a frame
    RUN = 4              # regular intervals before it counts as paced

    def __init__(self) -> None:
        self.last = 0
        self.interval = 0
        self.on_time = 0
        self.due = 0
        self.lead = self.LEAD_MIN_NS
        self.caught = 0
        self.missed = 0

    def learn(self, publish_ns: int) -> None:
        d = publish_ns - self.last if self.last else 0
        self.last = publish_ns
        if d <= 0:
            return
        if self.interval and abs(d - self.interval) <= self.interval // 8:
            self.interval += (d - self.interval) // 8
            self.on_time = min(self.on_time + 1, 2 * self.RUN)
        else:
            self.on_time //= 2
            if not self.on_time:
                self.interval = d
        late = publish_ns - self.due
        if self.due and abs(late) < self.interval // 2:
            self.due += late // 8 if late > 0 else late
        else:
            self.due = publish_ns
        self.due += self.interval

    def paced(self) -> bool:
        return self.on_time >= self.RUN and self.interval >= self.MIN_NS

    def catch_from(self, loop: asyncio.AbstractEventLoop) -> Optional[float]:
        """The loop's time to begin catching the next frame on the futex (in
        the past: at once), or None: wait on the pipe."""
        if not self.paced():
            return None
        now = time.monotonic_ns()
        if now > self.due + self.LATE_MAX_NS:
            return None
        return loop.time() + (self.due - self.lead - now) / 1e9

    def catching(self) -> bool:
        """Whether a catch that timed out should go on (after a pass of the
        loop) rather than wait on the pipe."""
        return time.monotonic_ns() <= self.due + self.LATE_MAX_NS

    def beaten(self) -> None:
        """A frame came through the pipe before the catch began."""
        self.missed += 1
        self.lead = min(self.lead + self.LEAD_STEP_NS, self.LEAD_MAX_NS)

    def caught_at(self, began_ns: int, publish_ns: int) -> None:
        """A frame published at publish_ns was caught on the futex by a
        catch that began at began_ns (before learn() of that frame)."""
        self.caught += 1
        if min(publish_ns, self.due) - began_ns > 1_000_000:
            self.lead = max(self.lead - self.LEAD_STEP_NS // 25, self.LEAD_MIN_NS)


class _ShortSlice:
    """The loop thread's fair-scheduler slice, shortened while frames are
    iterated (by any number of iterators on it) and given back after.  Under
    load, a thread that runs a few tens of microseconds per wake-up (an event
    loop: timers, callbacks, task steps) wakes with no credit left and waits
    for the running task's slice, ~150 us at p50 on this host, while a
    blocking acquire that runs almost nothing does not; a short slice gives
    the loop an early deadline, so its wake-ups preempt again
    (docs/python.md, "Event loops")."""

    local = threading.local()

    def __init__(self, seconds: Optional[float]) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        if self.seconds is None:
            return
        t = self.local
        if getattr(t, "users", 0) == 0:
            t.previous = _sched_slice(self.seconds)
            t.users = 0
        t.users += 1

    def __exit__(self, *exc: object) -> None:
        t = self.local
        if self.seconds is None or getattr(t, "users", 0) == 0:
            return  # (or finalised in another thread than the loop's)
        t.users -= 1
        if t.users == 0 and t.previous is not None:
            _sched_slice(t.previous)


async def _frames_async(self: Subscriber,
                        sched_slice: Optional[float] = 0.0001) -> AsyncIterator[Frame]:
    """Frames as an asyncio async iterator, driven by the event loop.

    One reader on the subscriber's descriptor for the iterator's life; the
    frames ready when it wakes are taken one after the other without waiting
    again.  A steady stream's frames are caught on the ring's futex instead,
    from shortly before each is due, holding the loop 2 ms at most at a time
    (_Pace).  While framebusd is away it looks every 0.1 s whether it is back
    (then subscribes again and goes on; the first frame is a discontinuity).
    Each frame is released when the next is taken; the iteration ends with
    the stream.

    sched_slice: the loop thread's slice under Linux's fair scheduler while
    it iterates, in seconds (0.0001, the shortest there is, from Linux 6.12;
    older kernels ignore it), so that its wake-ups for frames preempt other
    work (_ShortSlice); None leaves the thread as it is.
    """
    shortened = _ShortSlice(sched_slice)
    shortened.__enter__()
    loop = asyncio.get_running_loop()
    readable = _Readable(loop, self.fileno(), drain=True)
    pace = _Pace()
    previous: Optional[Frame] = None
    beaten = False  # the pipe woke the loop before a planned catch
    try:
        while True:
            if previous is not None:
                previous.release()
                previous = None
            try:
                frame = self.try_acquire()
            except StreamEnded:
                return
            if frame is not None and beaten:
                pace.beaten()
            beaten = False
            if frame is None:
                if self.reconnecting:
                    readable.close()
                    await asyncio.sleep(0.1)
                    continue
                if readable.fd != self.fileno():  # subscribed again: another pipe
                    readable.close()
                    readable = _Readable(loop, self.fileno(), drain=True)
                start = pace.catch_from(loop)
                if start is None:
                    await readable.wait()
                    continue
                if start > loop.time() and await readable.wait(start):
                    beaten = True
                    continue
                # Catch it on the ring's futex, as a blocking acquire
                # waits, holding the loop _Pace.CATCH_S at most at a time,
                # with a pass of the loop in between; a frame later than
                # that is waited for on the pipe.
                began = time.monotonic_ns()
                try:
                    while True:
                        try:
                            frame = self.acquire(timeout=_Pace.CATCH_S)
                            break
                        except TimeoutError:
                            if not pace.catching():
                                break
                        await asyncio.sleep(0)
                except StreamEnded:
                    return
                if frame is None:
                    continue
                pace.caught_at(began, frame.monotonic_ns)
            pace.learn(frame.monotonic_ns)
            previous = frame
            yield frame
    finally:
        readable.close()
        if previous is not None:
            previous.release()
        shortened.__exit__()


async def _events_async(self: Bus) -> AsyncIterator[Union[StreamEvent, ConnectionEvent]]:
    """The bus's events as an asyncio async iterator: streams changing state
    (StreamEvent) and framebusd leaving and coming back (ConnectionEvent),
    driven by the loop (bus.process() on each wake-up).  It ends when the bus
    is closed."""
    readable = _Readable(asyncio.get_running_loop(), self.fileno(), drain=False)
    try:
        while not self.closed:
            for event in self.process():
                yield event
            await readable.wait(asyncio.get_running_loop().time() + 1.0)
    finally:
        readable.close()


async def _frame_async(self: Publisher, timeout: Optional[float] = None) -> OutFrame:
    """Publisher.frame() for asyncio: a 'block' stream waiting for its queue
    subscribers waits without blocking the loop (it looks again after 0.2 ms,
    then less and less often, up to every 5 ms), up to timeout seconds (None:
    forever), then raises TimeoutError.  A 'drop' stream never waits."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    pause = 0.0002
    while True:
        try:
            return self.frame(timeout=0)
        except TimeoutError:
            if deadline is not None and loop.time() >= deadline:
                raise
        await asyncio.sleep(pause if deadline is None else min(pause, deadline - loop.time()))
        pause = min(pause * 2, 0.005)


Subscriber.frames_async = _frames_async  # type: ignore[attr-defined]
Bus.events_async = _events_async  # type: ignore[attr-defined]
Publisher.frame_async = _frame_async  # type: ignore[attr-defined]
