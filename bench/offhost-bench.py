#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A 720p30 stream from host A to host B over SRT: framebus against the
ffmpeg CLI, latency and CPU.

Two network namespaces joined by a veth pair (tests/python/netns.py; root
needed, else loopback, said so).  Both pipelines encode the same lavfi
testsrc2 1280x720 at 30 fps with the same libx264 settings (veryfast,
zerolatency, 4 Mbit/s, GOP 60, no B-frames, yuv420p) into MPEG-TS (packets
flushed at once) to the same SRT URL, A calling B's listener:

  framebus  framebusd A (the lavfi source) -> framebus-output (SRT caller)
            -> framebusd B (srt://...?mode=listener, a source like any) ->
            a Python subscriber on B.  Latency per frame: when the
            subscriber has it, less when the frame was published on A's bus
            (the origin hop framebusd B restored from the frame's SEI,
            mapped onto this host's monotonic clock: one machine, one clock).
  ffmpeg    ffmpeg -re on A (lavfi, setpts to the wall clock as it reads
            each frame, libx264, SRT caller) -> ffmpeg on B (SRT listener,
            -copyts, slice threads as framebusd decodes, showinfo without
            checksums, null sink).  Latency per
            frame: when B's showinfo line for it reaches us, less its pts
            (A's wall clock when the frame was read, at 90 kHz in MPEG-TS).

Both start from the moment the frame is there on A, paced to 30 fps (framebusd
paces a test pattern to its pts and stamps its capture when it reads it, a
frame ahead: capture_ms, the capture->frame latency, is also shown for
framebus, and is about a frame longer).  CPU: each process's CPU time over
the measured seconds, in percent of one core; per output stream is
framebus-output's.  Runs alternate, RUNS each; figures are medians.
Last line: offhost-bench fb_ms=X ffmpeg_ms=Y ratio=R fb_cpu_pct=... ...
"""
import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import framebus
from bench_daemon import cpu_seconds

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "python"))
from netns import Hosts  # noqa: E402

SOURCE = "testsrc2=size=1280x720:rate=30"
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


def stop(*procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_framebus(hosts, warmup, seconds):
    port = random.randrange(20000, 40000)
    url = f"srt://{hosts.addr['b']}:{port}"
    with tempfile.TemporaryDirectory(prefix="offhost-bench-") as tmp:
        a, sock_a = start_daemon(hosts, "a", tmp, f"""
[stream cam0]
url = {SOURCE}
input_format = lavfi
format = yuv420p
""")
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
            lat, cap = [], []
            start = time.monotonic()
            cpu0 = None
            while time.monotonic() - start < warmup + seconds:
                with sub.acquire(timeout=5) as f:
                    now = time.monotonic_ns()
                    if time.monotonic() - start < warmup:
                        continue
                    if cpu0 is None:
                        cpu0 = {p: cpu_seconds(p.pid) for p in (a, b, out)}
                        t0 = time.monotonic()
                    assert f.origin[0] == "cam0", f.origin
                    lat.append((now - f.hops[0][2]) / 1e6)
                    cap.append((now - f.capture_ns) / 1e6)
            elapsed = time.monotonic() - t0
            cpu = {k: 100 * (cpu_seconds(p.pid) - cpu0[p]) / elapsed
                   for k, p in (("a", a), ("b", b), ("out", out))}
            bus.close()
        finally:
            stop(out, a, b)
    return statistics.median(lat), statistics.median(cap), len(lat), cpu


def run_ffmpeg(hosts, warmup, seconds):
    port = random.randrange(20000, 40000)
    url = f"srt://{hosts.addr['b']}:{port}"
    recv = subprocess.Popen(
        hosts.prefix("b") + ["ffmpeg", "-hide_banner", "-nostats", "-copyts",
                             "-thread_type", "slice", "-i",
                             f"{url}?mode=listener", "-vf", "showinfo=checksum=0", "-f",
                             "null", "-"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # listening
    send = subprocess.Popen(
        hosts.prefix("a") + ["ffmpeg", "-hide_banner", "-nostats", "-re", "-f", "lavfi", "-i",
                             SOURCE, "-vf", "settb=1/90000,setpts=RTCTIME*9/100",
                             "-fps_mode", "passthrough", "-c:v", "libx264",
                             "-pix_fmt", "yuv420p", "-b:v", BITRATE, "-g", str(GOP),
                             "-bf", "0"] + sum((["-" + k, v] for k, v in X264.items()), []) +
        ["-flush_packets", "1", "-muxdelay", "0", "-muxpreload", "0", "-f", "mpegts", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lat = []
    pts_re = re.compile(rb"\] n:\s*\d+ pts:\s*\d+\s+pts_time:([0-9.]+)")
    state = {"start": None, "cpu0": None, "t0": None}

    def read():
        for line in recv.stderr:
            now = time.time()
            m = pts_re.search(line)
            if not m:
                continue
            if state["start"] is None:
                state["start"] = time.monotonic()
            if time.monotonic() - state["start"] < warmup:
                continue
            if state["cpu0"] is None:
                state["cpu0"] = (cpu_seconds(send.pid), cpu_seconds(recv.pid))
                state["t0"] = time.monotonic()
            age = (now - float(m.group(1))) % WRAP_S
            lat.append(age * 1000)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while state["t0"] is None or time.monotonic() - state["t0"] < seconds:
        if state["start"] is None and time.monotonic() > deadline:
            stop(send, recv)
            sys.exit("offhost-bench: the ffmpeg pipeline never delivered a frame")
        time.sleep(0.1)
    elapsed = time.monotonic() - state["t0"]
    cpu = {"send": 100 * (cpu_seconds(send.pid) - state["cpu0"][0]) / elapsed,
           "recv": 100 * (cpu_seconds(recv.pid) - state["cpu0"][1]) / elapsed}
    n = len(lat)
    stop(send, recv)
    return statistics.median(lat[:n]), n, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=5)
    args = ap.parse_args()
    hosts = Hosts()
    try:
        where = "veth between two network namespaces" if hosts.isolated else "loopback"
        print(f"offhost-bench: 720p30 over SRT, {where}; {args.runs} runs of "
              f"{args.seconds:g} s each, alternating; load: {os.getloadavg()[0]:.2f}")
        fb, ff = [], []
        for run in range(args.runs):
            fb.append(run_framebus(hosts, args.warmup, args.seconds))
            ms, cap, n, cpu = fb[-1]
            print(f"  framebus run {run + 1}: {ms:.1f} ms publish(A)->frame(B), "
                  f"{cap:.1f} ms capture->frame, {n} frames; CPU % framebusd A "
                  f"{cpu['a']:.1f}, framebus-output {cpu['out']:.1f}, framebusd B "
                  f"{cpu['b']:.1f}")
            ff.append(run_ffmpeg(hosts, args.warmup, args.seconds))
            ms, n, cpu = ff[-1]
            print(f"  ffmpeg   run {run + 1}: {ms:.1f} ms read(A)->decoded(B), {n} frames; "
                  f"CPU % sender {cpu['send']:.1f}, receiver {cpu['recv']:.1f}")
    finally:
        hosts.close()
    med = statistics.median
    fb_ms = med(r[0] for r in fb)
    fb_cap = med(r[1] for r in fb)
    ff_ms = med(r[0] for r in ff)
    fb_send = med(r[3]["a"] + r[3]["out"] for r in fb)
    fb_out = med(r[3]["out"] for r in fb)
    fb_recv = med(r[3]["b"] for r in fb)
    ff_send = med(r[2]["send"] for r in ff)
    ff_recv = med(r[2]["recv"] for r in ff)
    print(f"medians: framebus {fb_ms:.1f} ms (capture->frame {fb_cap:.1f} ms), ffmpeg "
          f"{ff_ms:.1f} ms: {fb_ms / ff_ms:.2f}x; CPU % sender {fb_send:.1f} "
          f"(framebus-output {fb_out:.1f}) against {ff_send:.1f}, receiver {fb_recv:.1f} "
          f"against {ff_recv:.1f}; load {os.getloadavg()[0]:.2f}")
    print(f"offhost-bench fb_ms={fb_ms:.1f} fb_capture_ms={fb_cap:.1f} ffmpeg_ms={ff_ms:.1f} "
          f"ratio={fb_ms / ff_ms:.2f} fb_send_cpu_pct={fb_send:.1f} "
          f"fb_output_cpu_pct={fb_out:.1f} ffmpeg_send_cpu_pct={ff_send:.1f} "
          f"fb_recv_cpu_pct={fb_recv:.1f} ffmpeg_recv_cpu_pct={ff_recv:.1f} "
          f"cpu_ratio={(fb_send + fb_recv) / (ff_send + ff_recv):.2f} "
          f"isolated={int(hosts.isolated)}")


if __name__ == "__main__":
    main()
