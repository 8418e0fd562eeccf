#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""One analytics process of scripts/bench e2e: takes every frame of one
camera as a numpy array, touches it (frame[::4, ::4].mean(), the same for
every transport) and notes, per frame, the frame's index (burned into the
picture by bench/e2e/clip.sh) and CLOCK_MONOTONIC when the array was in its
hands.

    consumer.py cv2       --url URL                      --out FILE
    consumer.py ffmpeg    --url URL --size WxH           --out FILE
    consumer.py gstreamer --url URL                      --out FILE
    consumer.py framebus  --socket PATH --stream NAME    --out FILE

cv2: cv2.VideoCapture(URL) (OpenCV's FFmpeg backend) and read().
ffmpeg: Frigate's way, `ffmpeg -rtsp_transport tcp -i URL -f rawvideo
  -pix_fmt bgr24 pipe:` as a child, read with readinto() into a numpy array.
gstreamer: uridecodebin uri=URL ! videoconvert ! video/x-raw,format=BGR !
  appsink sync=false (PyGObject), the buffer mapped and viewed by numpy.
framebus: framebus.connect(PATH).subscribe(NAME, mode="queue"), frame.array
  (a zero-copy view of the ring slot); also notes the frame's capture_ns.

It runs until SIGTERM, then writes its records to FILE as little-endian int64
rows (index, monotonic_ns, capture_ns or 0): index -1 for a picture whose
number does not read (a decoder's concealment before the first keyframe)."""
import argparse
import os
import signal
import subprocess
import sys
import time

import numpy as np

stop = False
children = []
BITS = 1 << np.arange(16)


def on_term(signum, frame):
    global stop
    stop = True


def frame_index(a):
    """The number burned into the picture: 16 blocks of the bits, 16 of
    their complement; -1 when they disagree."""
    m = a[4:12, :512].reshape(8, 32, 16, -1)[:, :, 4:12, :].mean(axis=(0, 2, 3)) > 128
    v = int(np.dot(m[:16], BITS))
    return v if v == int(np.dot(~m[16:], BITS)) else -1


class Log:
    """The records, written out every quarter of a second, so a consumer that
    must be killed at the end still leaves them."""

    def __init__(self, path):
        self.file = open(path, "wb")
        self.rows = []
        self.sink = 0.0
        self.flushed = time.monotonic()

    def frame(self, a, t, capture=0):
        self.sink += float(a[::4, ::4].mean())  # the analytics' touch of every frame
        self.rows.append((frame_index(a), t, capture))
        if time.monotonic() - self.flushed > 0.25:
            self.flush()

    def flush(self):
        self.file.write(np.array(self.rows, dtype="<i8").reshape(-1, 3).tobytes())
        self.file.flush()
        self.rows.clear()
        self.flushed = time.monotonic()


def run_cv2(args, log):
    import cv2
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    cap = cv2.VideoCapture(args.url, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        sys.exit(f"e2e consumer cv2: cannot open {args.url}")
    while not stop:
        ok, a = cap.read()
        t = time.monotonic_ns()
        if not ok:
            sys.exit("e2e consumer cv2: read() failed")
        log.frame(a, t)


def run_ffmpeg(args, log):
    w, h = (int(v) for v in args.size.split("x"))
    ff = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-rtsp_transport", "tcp",
                           "-i", args.url, "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:"],
                          stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    a = np.empty((h, w, 3), np.uint8)
    view = memoryview(a).cast("B")
    size = len(view)
    children.append(ff)
    while not stop:
        got = 0
        while got < size:
            n = ff.stdout.readinto(view[got:])
            if not n:
                sys.exit(f"e2e consumer ffmpeg: ffmpeg ended (status {ff.poll()})")
            got += n
        log.frame(a, time.monotonic_ns())


def run_gstreamer(args, log):
    import gi
    gi.require_version("Gst", "1.0")
    gi.require_version("GstApp", "1.0")
    from gi.repository import Gst, GstApp  # noqa: F401
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f"uridecodebin uri={args.url} ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink name=sink sync=false max-buffers=4 drop=false enable-last-sample=false")
    sink = pipeline.get_by_name("sink")
    children.append(pipeline)  # never disposed while playing: the process just ends
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        sys.exit(f"e2e consumer gstreamer: cannot play {args.url}")
    bus = pipeline.get_bus()
    while not stop:
        sample = sink.try_pull_sample(100 * Gst.MSECOND)
        if sample is None:
            msg = bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.EOS)
            if msg is not None:
                sys.exit(f"e2e consumer gstreamer: {msg.type.first_value_nick}"
                         f"{': ' + msg.parse_error()[0].message if msg.type == Gst.MessageType.ERROR else ''}")
            continue
        s = sample.get_caps().get_structure(0)
        w, h = s.get_value("width"), s.get_value("height")
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            sys.exit("e2e consumer gstreamer: cannot map a buffer")
        try:
            stride = len(info.data) // h
            a = np.ndarray((h, w, 3), np.uint8, info.data, strides=(stride, 3, 1))
            log.frame(a, time.monotonic_ns())
            del a
        finally:
            buf.unmap(info)


def run_framebus(args, log):
    import framebus  # from PYTHONPATH: the harness points it at the build tree
    bus = framebus.connect(args.socket, name="e2e-consumer")
    deadline = time.monotonic() + 15
    while True:  # framebusd makes the ring when its first frame is decoded
        try:
            sub = bus.subscribe(args.stream, mode="queue")
            break
        except framebus.NoSuchStream:
            if time.monotonic() > deadline:
                sys.exit(f"e2e consumer framebus: no stream {args.stream}")
            time.sleep(0.05)
    while not stop:
        try:
            frame = sub.acquire(timeout=0.1)
        except TimeoutError:
            continue
        a = frame.array
        t = time.monotonic_ns()
        log.frame(a, t, frame.capture_ns or 0)
        frame.release()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("transport", choices=["cv2", "ffmpeg", "gstreamer", "framebus"])
    ap.add_argument("--url")
    ap.add_argument("--size")
    ap.add_argument("--socket")
    ap.add_argument("--stream")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    # Restart the system calls it interrupts: FFmpeg inside OpenCV does not
    # always recover from an EINTR in the middle of a read.
    signal.siginterrupt(signal.SIGTERM, False)
    log = Log(args.out)
    try:
        {"cv2": run_cv2, "ffmpeg": run_ffmpeg, "gstreamer": run_gstreamer,
         "framebus": run_framebus}[args.transport](args, log)
    finally:
        log.flush()
        # ffmpeg blocked writing the pipe does not act on SIGTERM
        for child in children:
            if isinstance(child, subprocess.Popen):
                child.kill()
                child.wait()
    # No orderly teardown (RTSP TEARDOWN, pipeline to NULL): one that waits on
    # the camera could hang the run; the records are written.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
