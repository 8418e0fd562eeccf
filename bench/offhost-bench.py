#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A 720p30 stream from host A to host B over SRT: framebus against the
ffmpeg CLI, latency and CPU.

Two network namespaces joined by a veth pair (tests/python/netns.py; root
needed, else loopback, said so).  The source on host A is, by default
(--source rtsp), a live RTSP camera: bench/e2e/camera.py serving a
pre-encoded 720p30 H.264 clip (bench/e2e/clip.sh) in real time over TCP, a
fresh camera each run, its CPU not counted; both sides read it and decode
it alike (slice threads), so its decoding costs both the same.  --source
lavfi is a testsrc2 test pattern instead, paced to real time by each side.
Both pipelines encode with the same libx264 settings (veryfast, zerolatency,
4 Mbit/s, GOP 60, no B-frames, yuv420p) into MPEG-TS (packets flushed at
once) to the same SRT URL, A calling B's listener:

  framebus  framebusd A (the source) -> framebus-output (SRT caller)
            -> framebusd B (srt://...?mode=listener, a source like any) ->
            a Python subscriber on B.
  ffmpeg    ffmpeg on A (the source, libx264, SRT caller) -> ffmpeg on B
            (SRT listener, -copyts, slice threads as framebusd decodes,
            showinfo without checksums, then the top rows of each picture
            as raw gray to us).

Latency, from the camera (the real case, the figure compared): every frame's
index is burned into its picture; the camera logs when it sent each index,
and B reads each picture's index: camera->frame on B, from the same moment
for both, all of host A's work (RTSP, demuxing, decoding) in it.  framebus:
when the subscriber has the frame.  ffmpeg: when its filters have the
picture (showinfo's line reaching us; the Nth line is the picture of the
Nth rows, which carry the index).  The ffmpeg CLI hands a picture to its
output a frame later than its filters see it (32 ms with -re lavfi ->
showinfo -> rawvideo pipe), so its rows, "handed out", are shown apart:
that is when a consumer piped from it would have the frame.
Also shown, from the decoded picture on A: framebus from the frame's publish
on A's bus (the origin hop framebusd B restored from the frame's SEI, mapped
onto this host's monotonic clock: one machine, one clock), ffmpeg from its
wall clock as each decoded picture enters its filters (setpts, carried as
the pts: B's showinfo line less its pts).  And framebusd's own capture stamp
(a packet's arrival, carried to B in the SEI): capture->frame on B, with its
part on A (capture->publish); that stamp comes about a frame after the
camera sent the picture, as libavformat parses RTP H.264 into whole pictures
and one ends only when the next begins (the ffmpeg CLI waits the same).

With --source lavfi (no camera, so only the figures from A, compared from
the decoded picture) framebusd stamps a picture's capture when it reads it,
a frame ahead of its due time, so its capture->frame holds up to a frame of
pacing that a camera has not.  CPU: each process's CPU time over the
measured seconds, in percent of one core; per output stream is
framebus-output's.  Mbit/s on the wire: what host A sent on its veth over
those seconds, the encoder's real bitrate (4 Mbit/s asked).  Runs alternate,
RUNS each; figures are medians.
Last line: offhost-bench source=S ratio=R cpu_ratio=C fb_output_cpu_pct=P ...
"""
import argparse
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy

import framebus
from bench_daemon import cpu_seconds

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
from netns import Hosts  # noqa: E402

sys.path.insert(0, os.path.join(HERE, "e2e"))
from consumer import frame_index  # noqa: E402

LAVFI = "testsrc2=size=1280x720:rate=30"
CLIP_SECONDS = 60  # the camera's clip, not looped
# What ffmpeg on B hands us of each picture: the rows with its burned-in index.
INDEX_W, INDEX_H = 512, 16
X264 = {"preset": "veryfast", "tune": "zerolatency"}
BITRATE, GOP = "4M", 60
# MPEG-TS timestamps wrap at 2^33 ticks of 90 kHz.
WRAP_S = 2 ** 33 / 90000


def start_daemon(hosts, host, tmp, streams):
    sock = os.path.join(tmp, f"{host}.sock")
    conf = os.path.join(tmp, f"{host}.conf")
    with open(conf, "w") as f:
        f.write(f"[daemon]\nsocket = {sock}\n{streams}")
    program = os.environ.get("FRAMEBUSD", "build/daemon/framebusd")
    proc = subprocess.Popen(hosts.prefix(host) + [program, "--config", conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit("offhost-bench: framebusd did not start")
        time.sleep(0.02)
    return proc, sock


class Source:
    """Host A's source for one run: the live camera, started in A for the
    run (the clip is not looped), or the test pattern."""

    def __init__(self, kind, hosts, clip):
        self.kind, self.hosts, self.clip = kind, hosts, clip
        self.camera = None
        self.sent = {}  # the camera's: frame index -> CLOCK_MONOTONIC when sent

    def __enter__(self):
        if self.kind == "lavfi":
            return self
        self.tmp = tempfile.TemporaryDirectory(prefix="offhost-camera-")
        port = random.randrange(20000, 40000)
        self.url = f"rtsp://127.0.0.1:{port}/cam0"
        self.camera = subprocess.Popen(
            self.hosts.prefix("a") + [sys.executable, os.path.join(HERE, "e2e", "camera.py"),
                                      str(port), self.clip, "--log-dir", self.tmp.name],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        if self.camera.stdout.readline().strip() != "ready":
            self.__exit__()
            sys.exit("offhost-bench: the RTSP camera did not start")
        return self

    def __exit__(self, *exc):
        if self.camera:
            stop(self.camera)
            self.camera.stdout.close()
            with open(os.path.join(self.tmp.name, "cam0.log")) as f:
                self.sent = dict(map(int, line.split()) for line in f)
            self.tmp.cleanup()

    def latency_ms(self, seen):
        """The median of camera->frame on B over SEEN, (frame index, when B
        had it) pairs; None without a camera."""
        if not self.sent:
            return None
        ages = [(t - self.sent[i]) / 1e6 for i, t in seen if i in self.sent]
        if len(ages) < len(seen) * 0.9:
            sys.exit(f"offhost-bench: only {len(ages)} of {len(seen)} frames on B read as "
                     "frames the camera sent")
        return statistics.median(ages)

    def stream(self):
        """framebusd A's [stream cam0] section."""
        if self.kind == "lavfi":
            return f"[stream cam0]\nurl = {LAVFI}\ninput_format = lavfi\nformat = yuv420p\n"
        return (f"[stream cam0]\nurl = {self.url}\noption.rtsp_transport = tcp\n"
                "format = yuv420p\n")

    def ffmpeg_input(self):
        """The ffmpeg CLI sender's input: the camera decoded with slice threads
        as framebusd decodes a live source, or the test pattern paced by -re."""
        if self.kind == "lavfi":
            return ["-re", "-f", "lavfi", "-i", LAVFI]
        return ["-rtsp_transport", "tcp", "-thread_type", "slice", "-i", self.url]


def wire_mbps(hosts, tx0, elapsed):
    """Mbit/s host A sent on the veth since it had sent TX0 bytes: the
    encoder's bitrate as it reaches the network (SRT's own overhead in it);
    None on loopback."""
    tx = hosts.tx_bytes("a")
    return None if tx is None else (tx - tx0) * 8 / elapsed / 1e6


def stop(*procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_framebus(hosts, source, warmup, seconds):
    port = random.randrange(20000, 40000)
    url = f"srt://{hosts.addr['b']}:{port}"
    with tempfile.TemporaryDirectory(prefix="offhost-bench-") as tmp:
        a, sock_a = start_daemon(hosts, "a", tmp, source.stream())
        b, sock_b = start_daemon(hosts, "b", tmp, f"""
[stream remote]
url = {url}?mode=listener
format = yuv420p
""")
        conf = os.path.join(tmp, "output.conf")
        with open(conf, "w") as f:
            f.write(f"[output b]\nstream = cam0\nurl = {url}\nbitrate = {BITRATE}\n"
                    f"gop = {GOP}\n" + "".join(f"option.{k} = {v}\n" for k, v in X264.items()))
        program = os.environ.get("FRAMEBUS_OUTPUT", "build/tools/framebus-output")
        out = subprocess.Popen(hosts.prefix("a") + [program, "--config", conf, "--socket",
                                                    sock_a],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            bus = framebus.connect(sock_b, name="offhost-bench")
            deadline = time.monotonic() + 30
            while True:
                try:
                    if bus.stream("remote").state == "running":
                        break
                except framebus.NoSuchStream:
                    pass
                if time.monotonic() > deadline:
                    sys.exit("offhost-bench: host B never received the stream")
                time.sleep(0.1)
            sub = bus.subscribe("remote")
            lat, cap, on_a, seen = [], [], [], []
            start = time.monotonic()
            cpu0 = None
            while time.monotonic() - start < warmup + seconds:
                with sub.acquire(timeout=5) as f:
                    now = time.monotonic_ns()
                    if time.monotonic() - start < warmup:
                        continue
                    if cpu0 is None:
                        cpu0 = {p: cpu_seconds(p.pid) for p in (a, b, out)}
                        tx0 = hosts.tx_bytes("a")
                        t0 = time.monotonic()
                    assert f.origin[0] == "cam0", f.origin
                    lat.append((now - f.hops[0][2]) / 1e6)
                    cap.append((now - f.capture_ns) / 1e6)
                    on_a.append((f.hops[0][2] - f.capture_ns) / 1e6)
                    seen.append((frame_index(f.array), now))
            elapsed = time.monotonic() - t0
            cpu = {k: 100 * (cpu_seconds(p.pid) - cpu0[p]) / elapsed
                   for k, p in (("a", a), ("b", b), ("out", out))}
            cpu["mbps"] = wire_mbps(hosts, tx0, elapsed)
            bus.close()
        finally:
            stop(out, a, b)
    med = statistics.median
    return med(lat), med(cap), med(on_a), len(lat), cpu, seen


def run_ffmpeg(hosts, source, warmup, seconds):
    port = random.randrange(20000, 40000)
    url = f"srt://{hosts.addr['b']}:{port}"
    recv = subprocess.Popen(
        hosts.prefix("b") + ["ffmpeg", "-hide_banner", "-nostats", "-copyts",
                             "-thread_type", "slice", "-i",
                             f"{url}?mode=listener", "-vf",
                             f"showinfo=checksum=0,crop={INDEX_W}:{INDEX_H}:0:0,format=gray",
                             "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray",
                             "-flush_packets", "1", "pipe:1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)  # listening
    send = subprocess.Popen(
        hosts.prefix("a") + ["ffmpeg", "-hide_banner", "-nostats"] + source.ffmpeg_input() + [
                             "-vf", "settb=1/90000,setpts=RTCTIME*9/100",
                             "-fps_mode", "passthrough", "-c:v", "libx264",
                             "-pix_fmt", "yuv420p", "-b:v", BITRATE, "-g", str(GOP),
                             "-bf", "0"] + sum((["-" + k, v] for k, v in X264.items()), []) +
        ["-flush_packets", "1", "-muxdelay", "0", "-muxpreload", "0", "-f", "mpegts", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Every picture B's filters had (showinfo's line) and B handed out (its
    # rows), in order: the Nth line and the Nth rows are one picture.
    lat, shown, rows = [], [], []
    pts_re = re.compile(rb"\] n:\s*\d+ pts:\s*\d+\s+pts_time:([0-9.]+)")
    state = {"start": None, "cpu0": None, "t0": None, "first": None, "tx0": None}

    def read():
        for line in recv.stderr:
            now = time.time()
            m = pts_re.search(line)
            if not m:
                continue
            shown.append(time.monotonic_ns())
            if state["start"] is None:
                state["start"] = time.monotonic()
            if time.monotonic() - state["start"] < warmup:
                continue
            if state["cpu0"] is None:
                state["cpu0"] = (cpu_seconds(send.pid), cpu_seconds(recv.pid))
                state["tx0"] = hosts.tx_bytes("a")
                state["first"] = len(shown) - 1
                state["t0"] = time.monotonic()
            age = (now - float(m.group(1))) % WRAP_S
            lat.append(age * 1000)

    def read_index():
        size = INDEX_W * INDEX_H
        while True:
            picture = recv.stdout.read(size)
            now = time.monotonic_ns()
            if len(picture) < size:
                return
            rows.append((frame_index(numpy.frombuffer(picture, numpy.uint8).reshape(
                INDEX_H, INDEX_W)), now))

    for target in (read, read_index):
        threading.Thread(target=target, daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while state["t0"] is None or time.monotonic() - state["t0"] < seconds:
            if state["start"] is None and time.monotonic() > deadline:
                sys.exit("offhost-bench: the ffmpeg pipeline never delivered a frame")
            time.sleep(0.1)
        elapsed = time.monotonic() - state["t0"]
        cpu = {"send": 100 * (cpu_seconds(send.pid) - state["cpu0"][0]) / elapsed,
               "recv": 100 * (cpu_seconds(recv.pid) - state["cpu0"][1]) / elapsed,
               "mbps": wire_mbps(hosts, state["tx0"], elapsed)}
        n = len(lat)
    finally:
        stop(send, recv)
    measured = range(state["first"], min(state["first"] + n, len(rows)))
    out = [rows[k] for k in measured]
    filtered = [(rows[k][0], shown[k]) for k in measured]
    return statistics.median(lat[:n]), n, cpu, filtered, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=("rtsp", "lavfi"), default="rtsp",
                    help="host A's source: a live RTSP camera (default) or a paced test pattern")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=5)
    args = ap.parse_args()
    if args.source == "rtsp" and args.warmup + args.seconds + 15 > CLIP_SECONDS:
        ap.error(f"--warmup + --seconds must leave 15 s of the camera's {CLIP_SECONDS} s clip")
    clip = None
    if args.source == "rtsp":
        clip = subprocess.run(["bash", os.path.join(HERE, "e2e", "clip.sh"),
                               os.path.join("build", "bench-data"), "1280", "720",
                               str(CLIP_SECONDS)], stdout=subprocess.PIPE, text=True,
                              check=True).stdout.strip()
    # SIGTERM ends it as Ctrl-C does: every process stopped, the namespaces gone.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("offhost-bench: terminated"))
    hosts = Hosts()
    try:
        where = "veth between two network namespaces" if hosts.isolated else "loopback"
        what = "a live RTSP camera" if args.source == "rtsp" else "a paced lavfi test pattern"
        print(f"offhost-bench: 720p30 from {what} over SRT, {where}; {args.runs} runs of "
              f"{args.seconds:g} s each, alternating; load: {os.getloadavg()[0]:.2f}")
        fb, ff = [], []  # per run: camera->B, decoded(A)->B, ...
        for run in range(args.runs):
            with Source(args.source, hosts, clip) as source:
                ms, cap, on_a, n, cpu, seen = run_framebus(hosts, source, args.warmup,
                                                           args.seconds)
            cam = source.latency_ms(seen)
            fb.append((cam, ms, cap, on_a, cpu))
            print(f"  framebus run {run + 1}: {show(cam)} camera->frame(B), "
                  f"{ms:.1f} ms publish(A)->frame(B), {cap:.1f} ms capture->frame (capture->"
                  f"publish on A {on_a:.1f}), {n} frames; CPU % framebusd A {cpu['a']:.1f}, "
                  f"framebus-output {cpu['out']:.1f}, framebusd B {cpu['b']:.1f}; "
                  f"{show(cpu['mbps'], 'Mbit/s')} on the wire")
            with Source(args.source, hosts, clip) as source:
                ms, n, cpu, filtered, out = run_ffmpeg(hosts, source, args.warmup,
                                                       args.seconds)
            cam, cam_out = source.latency_ms(filtered), source.latency_ms(out)
            ff.append((cam, ms, cpu, cam_out))
            print(f"  ffmpeg   run {run + 1}: {show(cam)} camera->decoded(B) (handed out "
                  f"{show(cam_out)}), "
                  f"{ms:.1f} ms decoded(A)->decoded(B), {n} frames; "
                  f"CPU % sender {cpu['send']:.1f}, receiver {cpu['recv']:.1f}; "
                  f"{show(cpu['mbps'], 'Mbit/s')} on the wire")
    finally:
        hosts.close()
    med = statistics.median
    camera = args.source == "rtsp"
    fb_cam = med(r[0] for r in fb) if camera else None
    ff_cam = med(r[0] for r in ff) if camera else None
    ff_cam_out = med(r[3] for r in ff) if camera else None
    fb_ms = med(r[1] for r in fb)
    fb_cap = med(r[2] for r in fb)
    fb_on_a = med(r[3] for r in fb)
    ff_ms = med(r[1] for r in ff)
    fb_send = med(r[4]["a"] + r[4]["out"] for r in fb)
    fb_out = med(r[4]["out"] for r in fb)
    fb_recv = med(r[4]["b"] for r in fb)
    ff_send = med(r[2]["send"] for r in ff)
    ff_recv = med(r[2]["recv"] for r in ff)
    wire = {}
    if hosts.isolated:
        wire = {"fb": med(r[4]["mbps"] for r in fb), "ffmpeg": med(r[2]["mbps"] for r in ff)}
    ratio = fb_cam / ff_cam if camera else fb_ms / ff_ms
    print(f"medians: camera->frame(B) framebus {show(fb_cam)} against ffmpeg {show(ff_cam)} "
          f"(handed out {show(ff_cam_out)}); "
          f"decoded(A)->frame(B) framebus {fb_ms:.1f} ms (capture->frame {fb_cap:.1f} ms, of "
          f"which capture->publish on A {fb_on_a:.1f}) against ffmpeg {ff_ms:.1f} ms "
          f"({fb_ms / ff_ms:.2f}x); latency {ratio:.2f}x; CPU % sender {fb_send:.1f} "
          f"(framebus-output {fb_out:.1f}) against {ff_send:.1f}, receiver {fb_recv:.1f} "
          f"against {ff_recv:.1f}; on the wire {show(wire.get('fb'), 'Mbit/s')} against "
          f"{show(wire.get('ffmpeg'), 'Mbit/s')}; load {os.getloadavg()[0]:.2f}")
    cam_keys = (f"fb_camera_ms={fb_cam:.1f} ffmpeg_camera_ms={ff_cam:.1f} "
                f"ffmpeg_camera_out_ms={ff_cam_out:.1f} " if camera else "")
    print(f"offhost-bench source={args.source} ratio={ratio:.2f} "
          f"cpu_ratio={(fb_send + fb_recv) / (ff_send + ff_recv):.2f} "
          f"fb_output_cpu_pct={fb_out:.1f} {cam_keys}fb_decoded_ms={fb_ms:.1f} "
          f"ffmpeg_decoded_ms={ff_ms:.1f} decoded_ratio={fb_ms / ff_ms:.2f} "
          f"fb_capture_ms={fb_cap:.1f} fb_capture_publish_ms={fb_on_a:.1f} "
          f"fb_send_cpu_pct={fb_send:.1f} ffmpeg_send_cpu_pct={ff_send:.1f} "
          f"fb_recv_cpu_pct={fb_recv:.1f} ffmpeg_recv_cpu_pct={ff_recv:.1f} "
          + "".join(f"{k}_wire_mbps={v:.1f} " for k, v in wire.items()) +
          f"isolated={int(hosts.isolated)}")


def show(value, unit="ms"):
    return "-" if value is None else f"{value:.1f} {unit}"


if __name__ == "__main__":
    main()
