#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""gst-consumer: the GStreamer shmsrc consumer of bench/compare (see PROTOCOL.md).

usage: gst-consumer.py --frames N --out PATH --socket PATH

Pipeline: shmsrc socket-path=PATH ! video/x-raw,format=BGR,... ! appsink.
shmsink (gst-producer) creates the socket, so the producer starts first and
the consumers once the socket exists; the producer waits for all of them.

Zero copy: shmsrc wraps each frame where it lies in the producer's shared
memory, Gst.Buffer.map() of python3-gst's overrides gives a memoryview over
that mapping, and numpy.frombuffer views the memoryview.  Dropping the buffer
releases the frame to the producer, which reuses its slot only then.

shmsink tells its readers of no end of stream: the consumer stops after N
frames, when the producer's socket closes (shmsrc then ends the stream), or
on the idle timeouts.
"""
import argparse
import os
import resource
import sys
import time

import gi
import numpy as np

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")  # appsink's methods
from gi.repository import Gst, GstApp  # noqa: E402,F401

FRAME_BYTES = 1920 * 1080 * 3
CAPS = "video/x-raw,format=BGR,width=1920,height=1080,framerate=0/1"
FIRST_TIMEOUT_S = 15  # for the first frame
IDLE_TIMEOUT_S = 3  # between frames
START_TIMEOUT_S = 5  # for shmsrc to attach (reach PLAYING)


def make(factory, **props):
    element = Gst.ElementFactory.make(factory, None)
    if element is None:
        sys.exit(f"gst-consumer: no GStreamer element {factory}")
    for name, value in props.items():
        element.set_property(name, value)
    return element


def bus_error(pipeline):
    """The first error message on the bus, or None."""
    msg = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
    if msg is None:
        return None
    err, debug = msg.parse_error()
    return f"{err.message} ({debug})" if debug else err.message


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--socket", required=True, help="shmsink's socket-path")
    args = ap.parse_args()
    if args.frames < 1:
        ap.error("--frames must be at least 1")
    if not os.path.exists(args.socket):
        sys.exit(f"gst-consumer: no {args.socket}: gst-producer creates it, start it first")

    Gst.init(None)
    pipeline = Gst.Pipeline.new("consumer")
    # shmsrc is-live connects to the socket in PAUSED -> PLAYING.
    src = make("shmsrc", socket_path=args.socket, is_live=True, do_timestamp=False)
    caps = make("capsfilter", caps=Gst.Caps.from_string(CAPS))
    # enable-last-sample off: the sink would keep the previous frame, which the
    # producer could then not reuse.
    sink = make("appsink", sync=False, emit_signals=False, max_buffers=4, drop=False,
                enable_last_sample=False)
    for element in (src, caps, sink):
        pipeline.add(element)
    src.link(caps)
    caps.link(sink)

    # shmsrc is attached once it is PLAYING.  Not the pipeline: a live sink
    # reaches PLAYING with the first frame, which the producer sends only once
    # every consumer is attached.
    pipeline.set_state(Gst.State.PLAYING)
    _, state, _ = src.get_state(START_TIMEOUT_S * Gst.SECOND)
    if state != Gst.State.PLAYING:
        why = bus_error(pipeline) or f"shmsrc not PLAYING after {START_TIMEOUT_S} s"
        pipeline.set_state(Gst.State.NULL)
        sys.exit(f"gst-consumer: cannot attach to {args.socket}: {why}")
    print("ready", flush=True)

    records = np.zeros((args.frames, 3), dtype="<u8")
    n = 0
    checksum = 0  # keeps the reads of the frames
    while n < args.frames:
        timeout = IDLE_TIMEOUT_S if n else FIRST_TIMEOUT_S
        sample = sink.try_pull_sample(timeout * Gst.SECOND)
        if sample is None:
            if sink.is_eos():
                why = bus_error(pipeline) or "end of stream"
            else:
                why = f"no frame for {timeout} s"
            print(f"gst-consumer: stopped after {n} frames: {why}", file=sys.stderr)
            break
        buf = sample.get_buffer()
        with buf.map(Gst.MapFlags.READ) as info:
            # A memoryview over the shm mapping; older python3-gst copied into bytes.
            if not isinstance(info.data, memoryview) or info.size != FRAME_BYTES:
                pipeline.set_state(Gst.State.NULL)
                sys.exit(f"gst-consumer: frame of {info.size} bytes as "
                         f"{type(info.data).__name__}, want {FRAME_BYTES} as memoryview")
            frame = np.frombuffer(info.data, dtype=np.uint8)
            t_recv = time.monotonic_ns()
            seq, t_pub = frame[:16].view("<u8")
            checksum += int(frame[::64].sum())
            # The array would still point at the frame after the unmap, and the
            # producer reuses that memory once the buffer is released.
            del frame
        records[n] = (seq, t_pub, t_recv)
        n += 1
        # Release the frame to the producer now rather than when the next one comes.
        del sample, buf

    pipeline.set_state(Gst.State.NULL)
    records[:n].tofile(args.out)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(f"cpu={ru.ru_utime + ru.ru_stime:.3f}", flush=True)


if __name__ == "__main__":
    main()
