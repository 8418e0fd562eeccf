#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A local RTSP camera: gst-rtsp-server on 127.0.0.1 serving live video at
rtsp://127.0.0.1:PORT/cam, as an IP camera does: a test pattern as RTP/JPEG,
or an H.264 or H.265 clip (an .mp4 without B-frames: fb_camera_clip in
scripts/lib.sh makes one from any video) as RTP H.264 or H.265, from its
start, looped.  scripts/demo's street camera, and the camera of
tests/python/test_camera.py and of tests/fuzz/rtsp-seeds.py.

    rtsp-camera.py PORT [--size WxH] [--rate FPS]
    rtsp-camera.py PORT --clip FILE [--frames N] [--auth basic|digest --user U:P]

PORT 0 takes any free port.  --frames N sends a client the clip's first N
frames, then nothing (with the connection open).  --session-timeout S gives
sessions that timeout (s) and prints a line "keepalive METHOD" for each
GET_PARAMETER or OPTIONS a client sends once it plays.  --auth makes the
camera ask for that user and password.  --print-requests prints a line
"request METHOD" for each request a client sends ("request METHOD with
Authorization" when it carries one), whether the camera accepts it or not.
Prints "ready URL" (the camera's rtsp:// URL, its port filled in) once it
listens.  SIGTERM or SIGINT stops it cleanly (its sessions are torn down,
TCP closes): a camera that reboots.
SIGSTOP makes it a camera that stalls with its connections open."""
import argparse
import signal
import subprocess
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


class Clip:
    """Feeds each media's appsrc the clip at its own rate, from its first
    frame on, from the media's first need-data (its base time set) on."""

    def __init__(self, path, codec, frames):
        self.path, self.codec, self.frames = path, codec, frames

    def on_configure(self, factory, media):
        appsrc = media.get_element().get_by_name("src")
        feeder = Gst.parse_launch(
            f"filesrc location={self.path} ! qtdemux ! {self.codec}parse ! "
            f"video/x-{self.codec},stream-format=byte-stream,alignment=au ! "
            "appsink name=out sync=true emit-signals=true max-buffers=2 drop=false")
        state = {"sent": 0, "lock": threading.Lock()}
        appsrc.set_property("caps", Gst.Caps.from_string(
            f"video/x-{self.codec},stream-format=byte-stream,alignment=au"))

        def on_sample(sink):
            buf = sink.emit("pull-sample").get_buffer()
            with state["lock"]:
                if self.frames and state["sent"] >= self.frames:
                    return Gst.FlowReturn.OK
                state["sent"] += 1
            out = buf.copy()
            out.pts = out.dts = Gst.CLOCK_TIME_NONE
            appsrc.emit("push-buffer", out)
            return Gst.FlowReturn.OK

        def on_message(bus, msg):
            if msg.type == Gst.MessageType.EOS:  # loop
                feeder.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH, 0)
            return True

        def on_need_data(src, length):
            if not state.get("started"):
                state["started"] = True
                feeder.set_state(Gst.State.PLAYING)

        feeder.get_by_name("out").connect("new-sample", on_sample)
        feeder.get_bus().add_watch(GLib.PRIORITY_DEFAULT, on_message)
        appsrc.connect("need-data", on_need_data)
        media.connect("unprepared", lambda m: feeder.set_state(Gst.State.NULL))


def clip_codec(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name", "-of", "csv=p=0", path],
                         capture_output=True, text=True, check=True).stdout.strip()
    return {"h264": "h264", "hevc": "h265"}[out]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--rate", type=int, default=25)
    ap.add_argument("--clip")
    ap.add_argument("--frames", type=int, default=0)
    ap.add_argument("--auth", choices=("basic", "digest"))
    ap.add_argument("--user", default="user:secret")
    ap.add_argument("--session-timeout", type=int, default=0)
    ap.add_argument("--print-requests", action="store_true")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    if args.clip:
        codec = clip_codec(args.clip)
        clip = Clip(args.clip, codec, args.frames)
        factory.set_launch(
            f"( appsrc name=src is-live=true format=time do-timestamp=true ! "
            f"rtp{codec}pay name=pay0 pt=96 config-interval=-1 )")
        factory.connect("media-configure", clip.on_configure)
    else:
        factory.set_launch(
            f"( videotestsrc is-live=true pattern=ball ! "
            f"video/x-raw,format=I420,width={width},height={height},framerate={args.rate}/1 ! "
            f"jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )")
        factory.set_shared(True)
    if args.auth:
        user, password = args.user.split(":", 1)
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken.new()
        token.set_string("media.factory.role", "user")
        if args.auth == "basic":
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        else:
            auth.add_digest(user, password, token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        server.set_auth(auth)
        factory.add_role_from_structure(Gst.Structure.from_string(
            "user, media.factory.access=(boolean)true, "
            "media.factory.construct=(boolean)true")[0])
    if args.session_timeout:
        def on_client(server, client):
            playing = []
            client.connect("new-session",
                           lambda c, session: session.set_timeout(args.session_timeout))
            client.connect("play-request", lambda c, ctx: playing.append(True))
            for method in ("GET_PARAMETER", "OPTIONS"):
                client.connect(f"{method.lower().replace('_', '-')}-request",
                               lambda c, ctx, m=method: playing and
                               print(f"keepalive {m}", flush=True))
        server.connect("client-connected", on_client)
    if args.print_requests:
        def on_request(client, ctx, method):
            auth = ctx.request.get_header(GstRtsp.RTSPHeaderField.AUTHORIZATION, 0)[0]
            print(f"request {method}" + (" with Authorization" if auth == GstRtsp.RTSPResult.OK
                                         else ""), flush=True)
            return GstRtsp.RTSPStatusCode.OK

        def print_requests(server, client):
            for method in ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "GET_PARAMETER", "TEARDOWN"):
                client.connect(f"pre-{method.lower().replace('_', '-')}-request", on_request,
                               method)
        server.connect("client-connected", print_requests)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp-camera: cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"ready rtsp://127.0.0.1:{server.get_bound_port()}/cam", flush=True)
    loop.run()
    server.client_filter(lambda server, client: GstRtspServer.RTSPFilterResult.REMOVE)


if __name__ == "__main__":
    main()
