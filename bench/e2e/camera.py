#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The cameras of scripts/bench e2e and offhost: gst-rtsp-server on
127.0.0.1 serving a pre-encoded H.264 clip (bench/e2e/clip.sh) at
rtsp://127.0.0.1:PORT/camI, I = 0 .. N-1, over TCP (interleaved RTP), as live
IP cameras.

    camera.py PORT CLIP --cameras N --log-dir DIR

Each camera is a pipeline of its own that runs from the start, whether
anyone watches or not: filesrc ! qtdemux ! h264parse ! appsink sync=true
reads the clip at real time, as an encoder would hand out its frames, and
each frame is pushed into the live appsrc of the camera's one shared RTSP
media (every client of a camera gets the same stream; one joining later
starts at the next keyframe and does not rewind the others, which a shared
media of a seekable file would).  A media is fed from its appsrc's first
"need-data" on, not from its creation (see Camera.on_need_data).  For every
frame it writes
"INDEX MONOTONIC_NS" to DIR/camI.log: the frame's index in the clip (from its
pts) and CLOCK_MONOTONIC when it was handed to the RTSP media: the "send"
time that capture-to-array latency counts from.  The clip is not looped: a
case must end before the clip does (the harness checks).  Prints "ready"
once it listens; SIGTERM or SIGINT stops it."""
import argparse
import os
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtsp, GstRtspServer  # noqa: E402,F401

FPS = 30


class Camera:
    def __init__(self, clip, log_path):
        self.log = open(log_path, "w")
        self.lock = threading.Lock()
        self.appsrc = None  # the media being fed
        self.configured = None  # the newest media's, until it wants data
        self.caps = None
        self.started = threading.Event()  # the first frame, and so the caps, came
        self.feeder = Gst.parse_launch(
            f"filesrc location={clip} ! qtdemux ! h264parse ! "
            "appsink name=out sync=true emit-signals=true max-buffers=2 drop=false")
        self.feeder.get_by_name("out").connect("new-sample", self.on_sample)

    def on_sample(self, sink):
        sample = sink.emit("pull-sample")
        buf = sample.get_buffer()
        index = round(buf.pts * FPS / Gst.SECOND)
        with self.lock:
            if self.caps is None:
                self.caps = sample.get_caps()
                self.started.set()
            appsrc = self.appsrc
            if appsrc is not None:
                out = buf.copy()  # shares the memory; new timestamps for the media
                out.pts = out.dts = Gst.CLOCK_TIME_NONE
                self.log.write(f"{index} {time.monotonic_ns()}\n")
                appsrc.emit("push-buffer", out)
            else:
                self.log.write(f"{index} {time.monotonic_ns()}\n")
        return Gst.FlowReturn.OK

    def on_configure(self, factory, media):
        appsrc = media.get_element().get_by_name("src")
        with self.lock:
            if self.caps is not None:
                appsrc.set_property("caps", self.caps)
            self.configured = appsrc
        appsrc.connect("need-data", self.on_need_data)
        media.connect("unprepared", self.on_unprepared)

    def on_need_data(self, appsrc, length):
        # The appsrc stamps a buffer with its running time when it is
        # pushed (do-timestamp): the clock's time less the element's base
        # time.  While the media goes to PLAYING the pipeline hands the
        # clock to every element before it sets their base time (a bin sets
        # its sources' last), so a frame pushed in between, which feeding
        # from media-configure on allowed, got the clock's absolute time
        # (the host's uptime, hours) as its running time, and the media's
        # TCP sink, which syncs to the clock, then waited hours for it: the
        # first client got nothing at all (~1 media in 12 here, when the
        # push fell in that window).  A live appsrc asks for data only once
        # it is PLAYING, its base time set.
        with self.lock:
            if appsrc is self.configured:
                self.appsrc = appsrc

    def on_unprepared(self, media):
        appsrc = media.get_element().get_by_name("src")
        with self.lock:
            if self.appsrc is appsrc:
                self.appsrc = None
            if self.configured is appsrc:
                self.configured = None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("clip")
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--log-dir", required=True)
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    cameras = []
    for i in range(args.cameras):
        cam = Camera(args.clip, os.path.join(args.log_dir, f"cam{i}.log"))
        cameras.append(cam)
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            "( appsrc name=src is-live=true format=time do-timestamp=true ! "
            "h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
        factory.set_shared(True)
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
        factory.connect("media-configure", cam.on_configure)
        server.get_mount_points().add_factory(f"/cam{i}", factory)
    if server.attach(None) == 0:
        sys.exit(f"e2e camera: cannot listen on 127.0.0.1:{args.port}")
    for cam in cameras:
        if cam.feeder.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            sys.exit(f"e2e camera: cannot play {args.clip}")
    for cam in cameras:
        # A media configured before the caps are known could never negotiate:
        # no client is let in before.
        if not cam.started.wait(10):
            sys.exit(f"e2e camera: no frame from {args.clip}")
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print("ready", flush=True)
    loop.run()
    server.client_filter(lambda server, client: GstRtspServer.RTSPFilterResult.REMOVE)
    for cam in cameras:
        cam.feeder.set_state(Gst.State.NULL)
        cam.log.close()


if __name__ == "__main__":
    main()
