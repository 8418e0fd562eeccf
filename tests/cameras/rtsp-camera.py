#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""An RTSP camera for tests: gst-rtsp-server on 127.0.0.1 serving a live
test pattern as RTP/JPEG at rtsp://127.0.0.1:PORT/cam, as an IP camera does.

    rtsp-camera.py PORT [--size WxH] [--rate FPS]

Prints "ready" once it listens.  SIGTERM or SIGINT stops it cleanly (its
sessions are torn down, TCP closes): a camera that reboots.  SIGSTOP makes
it a camera that stalls with its connections open."""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--rate", type=int, default=25)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! "
        f"video/x-raw,format=I420,width={width},height={height},framerate={args.rate}/1 ! "
        f"jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp-camera: cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print("ready", flush=True)
    loop.run()
    server.client_filter(lambda server, client: GstRtspServer.RTSPFilterResult.REMOVE)


if __name__ == "__main__":
    main()
