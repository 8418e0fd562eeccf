#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""scripts/bench decode: framebusd's decoding against ffmpeg's, two ways.

Paced (what a camera costs): N simultaneous 1280x720 30 fps camera-like H.264
streams (bench/e2e/clip.sh: grain in every pixel, 4 Mb/s, a keyframe a
second), N = 1, 4, 8, decoded to bgr24 at their own rate: one framebusd with
N [stream] sections reading the clip (pacing native, the default for files;
loop = true), against N `ffmpeg -re -stream_loop -1 -i CLIP -pix_fmt bgr24
-f null -` processes, one per stream.  Files read at their own rate rather
than RTSP cameras: the same frames for both sides, nothing else (a camera
server, RTP) on the 2 cores.  CPU (utime + stime, /proc) of framebusd and of
the ffmpeg processes over the same window after a warm-up, per frame decoded
(framebusd's published counts, ffmpeg's -progress frame counts), and memory:
framebusd's VmRSS and Pss (smaps_rollup) at the window's end, per stream and
its growth per stream from 1 to the largest N; the ffmpeg processes' sums.

Flat out (throughput): a 1920x1080 testsrc2 file (bench/h264-clip.sh)
decoded as fast as it can by framebusd (pacing fast, a block stream read by
bench/decode-consumer) and by `ffmpeg -i FILE -pix_fmt bgr24 -f null -`.

Runs interleaved (each run every case, the side that goes first
alternating); medians.  Last line:
decode-bench cpu_ratio=WORST cpu_ratio_N=R... rss_per_stream_mib=...
pss_per_stream_mib=... flat_framebus_fps=A flat_ffmpeg_fps=B flat_ratio=R
(cpu_ratio: framebusd's CPU per frame over ffmpeg's, the worst N).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_daemon import cpu_seconds  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def memory_kib(pid):
    """(VmRSS, Pss) of pid in KiB."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/smaps_rollup") as f:
        pss = next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    return rss, pss


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.tmp = tempfile.mkdtemp(prefix="framebus-decode-")
        data = os.path.join(self.build, "bench-data")
        self.clip720 = subprocess.run(
            ["bash", os.path.join(HERE, "e2e", "clip.sh"), data, "1280", "720", "60"],
            stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
        self.clip1080 = subprocess.run(
            ["bash", "-c", f'source "{HERE}/h264-clip.sh" && h264_clip "$1" "$2"', "-",
             data, str(args.flat_frames)],
            stdout=subprocess.PIPE, text=True, check=True).stdout.strip()

    def framebusd(self, sections, tag):
        sock = os.path.join(self.tmp, f"{tag}.sock")
        conf = os.path.join(self.tmp, f"{tag}.conf")
        with open(conf, "w") as f:
            f.write(f"[daemon]\nsocket = {sock}\n{sections}")
        log = open(os.path.join(self.tmp, f"{tag}.log"), "w")
        daemon = subprocess.Popen([os.path.join(self.build, "daemon", "framebusd"),
                                   "--config", conf], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if daemon.poll() is not None or time.monotonic() > deadline:
                daemon.kill()
                sys.exit(f"decode-bench: framebusd did not start (log {log.name})")
            time.sleep(0.02)
        return daemon, sock

    def published(self, sock):
        out = subprocess.run([os.path.join(self.build, "tools", "framebusctl"), "--socket",
                              sock, "status", "--json"], stdout=subprocess.PIPE, text=True,
                             check=True).stdout
        return sum(s["published"] for s in json.loads(out)["streams"])

    def paced_framebus(self, n):
        sections = "".join(f"[stream s{i}]\nurl = {self.clip720}\nloop = true\nwidth = 1280\n"
                           f"height = 720\nformat = bgr24\n" for i in range(n))
        daemon, sock = self.framebusd(sections, f"paced{n}")
        try:
            time.sleep(self.args.warmup)
            c0, f0, t0 = cpu_seconds(daemon.pid), self.published(sock), time.monotonic()
            time.sleep(self.args.seconds)
            c1, f1, t1 = cpu_seconds(daemon.pid), self.published(sock), time.monotonic()
            rss, pss = memory_kib(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait()
        return {"cpu_s": c1 - c0, "frames": f1 - f0, "wall_s": t1 - t0,
                "rss_mib": rss / 1024, "pss_mib": pss / 1024}

    def paced_ffmpeg(self, n):
        procs, progress = [], []
        for i in range(n):
            path = os.path.join(self.tmp, f"progress{i}")
            progress.append(path)
            procs.append(subprocess.Popen(
                ["ffmpeg", "-nostdin", "-loglevel", "error", "-progress", path,
                 "-stats_period", "0.25", "-re", "-stream_loop", "-1", "-i", self.clip720,
                 "-pix_fmt", "bgr24", "-f", "null", "-"]))

        def frames():
            total = 0
            for path in progress:
                with open(path) as f:
                    total += max((int(line.split("=")[1]) for line in f
                                  if line.startswith("frame=")), default=0)
            return total

        def cpu():
            return sum(cpu_seconds(p.pid) for p in procs)

        try:
            time.sleep(self.args.warmup)
            c0, f0, t0 = cpu(), frames(), time.monotonic()
            time.sleep(self.args.seconds)
            c1, f1, t1 = cpu(), frames(), time.monotonic()
            mem = [memory_kib(p.pid) for p in procs]
            for p in procs:
                if p.poll() is not None:
                    sys.exit(f"decode-bench: ffmpeg exited (status {p.returncode})")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait()
        return {"cpu_s": c1 - c0, "frames": f1 - f0, "wall_s": t1 - t0,
                "rss_mib": sum(m[0] for m in mem) / 1024, "pss_mib": sum(m[1] for m in mem) / 1024}

    def flat_ffmpeg(self):
        t0 = time.monotonic()
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", self.clip1080,
                        "-pix_fmt", "bgr24", "-f", "null", "-"], check=True)
        return self.args.flat_frames / (time.monotonic() - t0)

    def flat_framebus(self):
        daemon, sock = self.framebusd(
            f"[stream dec]\nurl = {self.clip1080}\nwidth = 1920\nheight = 1080\n"
            "format = bgr24\npolicy = block\npacing = fast\nloop = true\nslots = 8\n", "flat")
        try:
            out = subprocess.run([os.path.join(self.build, "bench", "decode-consumer"), sock,
                                  "dec", str(self.args.flat_frames)], stdout=subprocess.PIPE,
                                 text=True, check=True).stdout.split()
        finally:
            daemon.terminate()
            daemon.wait()
        return float(out[0])


def per_frame_ms(r):
    return r["cpu_s"] / r["frames"] * 1e3 if r["frames"] else float("inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--streams", default="1,4,8", help="N simultaneous 720p30 streams")
    ap.add_argument("--seconds", type=float, default=10, help="measured window of each case")
    ap.add_argument("--warmup", type=float, default=3, help="seconds before the window")
    ap.add_argument("--flat-frames", type=int, default=600,
                    help="frames of the 1080p file decoded flat out (0: skip that part)")
    args = ap.parse_args()
    try:
        streams = [int(n) for n in args.streams.split(",")]
    except ValueError:
        streams = []
    if not streams or min(streams) < 1:
        ap.error("--streams: numbers of streams, 1 or more")
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"decode-bench: {os.cpu_count()} CPUs, load average {load} at the start")
    bench = Bench(args)
    paced = {(n, side): [] for n in streams for side in ("framebus", "ffmpeg")}
    flat = {"framebus": [], "ffmpeg": []}
    try:
        for rep in range(args.runs):
            for ci, n in enumerate(streams):
                sides = ("framebus", "ffmpeg") if (rep + ci) % 2 == 0 else ("ffmpeg", "framebus")
                for side in sides:
                    r = bench.paced_framebus(n) if side == "framebus" else bench.paced_ffmpeg(n)
                    paced[(n, side)].append(r)
                    print(f"run {rep + 1}/{args.runs} {n} x 720p30 {side:8s} "
                          f"CPU {r['cpu_s'] / r['wall_s']:.3f} cores, "
                          f"{per_frame_ms(r):.2f} ms/frame, "
                          f"{r['frames'] / r['wall_s'] / n:.1f} fps a stream, "
                          f"RSS {r['rss_mib']:.0f} MiB, PSS {r['pss_mib']:.0f} MiB", flush=True)
            if args.flat_frames:
                sides = ("framebus", "ffmpeg") if rep % 2 == 0 else ("ffmpeg", "framebus")
                for side in sides:
                    fps = bench.flat_framebus() if side == "framebus" else bench.flat_ffmpeg()
                    flat[side].append(fps)
                    print(f"run {rep + 1}/{args.runs} flat out 1080p {side:8s} {fps:.1f} fps",
                          flush=True)
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    with open("/proc/loadavg") as f:
        load_end = " ".join(f.read().split()[:3])

    med = statistics.median
    print(f"\nmedians of {args.runs} runs; {args.seconds:g} s windows after {args.warmup:g} s")
    print(f"  {'streams':>7s} {'framebusd cores':>15s} {'ffmpeg cores':>12s} "
          f"{'fbd ms/frame':>12s} {'ffmpeg ms/frame':>15s} {'ratio':>6s} "
          f"{'fbd RSS/PSS MiB':>16s} {'ffmpeg RSS/PSS MiB':>19s}")
    fields, ratios, mem = [], {}, {}
    for n in streams:
        fb, ff = paced[(n, "framebus")], paced[(n, "ffmpeg")]
        ratios[n] = med(per_frame_ms(a) / per_frame_ms(b) for a, b in zip(fb, ff))
        mem[n] = (med(r["rss_mib"] for r in fb), med(r["pss_mib"] for r in fb))
        print(f"  {n:7d} {med(r['cpu_s'] / r['wall_s'] for r in fb):15.3f} "
              f"{med(r['cpu_s'] / r['wall_s'] for r in ff):12.3f} "
              f"{med(per_frame_ms(r) for r in fb):12.2f} {med(per_frame_ms(r) for r in ff):15.2f} "
              f"{ratios[n]:6.3f} {mem[n][0]:7.0f} / {mem[n][1]:<7.0f} "
              f"{med(r['rss_mib'] for r in ff):8.0f} / {med(r['pss_mib'] for r in ff):<8.0f}")
    fields.append(f"cpu_ratio={max(ratios.values()):.3f}")
    fields += [f"cpu_ratio_{n}={ratios[n]:.3f}" for n in streams]
    lo, hi = min(streams), max(streams)
    if hi > lo:
        rss_step = (mem[hi][0] - mem[lo][0]) / (hi - lo)
        pss_step = (mem[hi][1] - mem[lo][1]) / (hi - lo)
        print(f"  framebusd's memory per further stream ({lo} -> {hi} streams): "
              f"RSS {rss_step:.1f} MiB, PSS {pss_step:.1f} MiB")
        fields += [f"rss_per_stream_mib={rss_step:.1f}", f"pss_per_stream_mib={pss_step:.1f}"]
    print("  (ratio: framebusd's CPU per frame over ffmpeg's, the median of the runs' ratios)")
    if args.flat_frames:
        fb, ff = med(flat["framebus"]), med(flat["ffmpeg"])
        print(f"flat out, {args.flat_frames} frames of 1920x1080 H.264 to bgr24: framebusd "
              f"{fb:.1f} fps, ffmpeg {ff:.1f} fps")
        fields += [f"flat_framebus_fps={fb:.1f}", f"flat_ffmpeg_fps={ff:.1f}",
                   f"flat_ratio={fb / ff:.3f}"]
    print(f"load average {load} at the start, {load_end} at the end")
    print("decode-bench " + " ".join(fields))


if __name__ == "__main__":
    main()
