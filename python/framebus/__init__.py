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
from typing import AsyncIterator, Optional

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
    name: what `framebusctl status` shows for this client (default: the script's name).
    Raises ConnectionRefusedError when no daemon listens there, PermissionError
    when this user may not connect (not in the socket's group).
    """
    if name is None:
        script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        name = f"{script or 'python'}[{os.getpid()}]"
    return _connect(path, name)


async def _frames_async(self: Subscriber) -> AsyncIterator[Frame]:
    """Frames as an asyncio async iterator, driven by the event loop.

    Waits with loop.add_reader on the subscriber's descriptor, never blocking
    the loop.  While framebusd is away it looks every 0.1 s whether it is back
    (then subscribes again and goes on; the first frame is a discontinuity).
    Each frame is released when the next is taken; the iteration ends with
    the stream.
    """
    loop = asyncio.get_running_loop()
    previous: Optional[Frame] = None
    try:
        while True:
            if previous is not None:
                previous.release()
                previous = None
            try:
                frame = self.try_acquire()
            except StreamEnded:
                return
            if frame is None:
                if self.reconnecting:
                    await asyncio.sleep(0.1)
                else:
                    await _readable(loop, self.fileno(), 0.1)
                continue
            previous = frame
            yield frame
    finally:
        if previous is not None:
            previous.release()


async def _readable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> bool:
    """Wait until fd is readable (True) or timeout seconds passed (False)."""
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(True))
    handle = loop.call_later(timeout, lambda: ready.done() or ready.set_result(False))
    try:
        return await ready
    finally:
        handle.cancel()
        loop.remove_reader(fd)


Subscriber.frames_async = _frames_async  # type: ignore[attr-defined]
