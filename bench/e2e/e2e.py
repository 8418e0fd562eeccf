#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""scripts/bench e2e: the whole job a user compares, end to end.

N RTSP cameras (bench/e2e/camera.py: gst-rtsp-server on 127.0.0.1 serving a
pre-encoded 30 fps H.264 clip live, over TCP) and K Python analytics
processes per camera (bench/e2e/consumer.py), each taking every frame as a
numpy array and touching it with frame[::4, ::4].mean(), by one of:
  cv2        cv2.VideoCapture(url) per process (OpenCV's FFmpeg backend)
  ffmpeg     Frigate's way: an `ffmpeg -i URL -f rawvideo -pix_fmt bgr24 pipe:`
             child per process, read into numpy
  gstreamer  uridecodebin ! videoconvert ! BGR ! appsink per process (PyGObject)
  framebus   one framebusd decoding each camera once (bgr24), K queue
             subscribers per camera taking zero-copy arrays
  framebus-ffmpeg  the same with rtsp_client = ffmpeg: FFmpeg's rtsp demuxer
             reads the camera instead of framebusd's own RTSP client
Every frame's index is burned into its picture (bench/e2e/clip.sh); the
camera logs when it sent each index, each consumer when it had each index's
array; joined afterwards, that is capture-to-array latency, and frames sent
in the window that a consumer never saw are lost.  CPU: utime + stime from
/proc of every process tree (consumers with their children, framebusd) over
the window, per frame delivered to a consumer; the cameras' own CPU apart.
Memory: the sum of VmRSS (and of Pss, which counts shared pages once) over
those processes, sampled every second, the largest sum.

Cases: K = 1, 2, 4 on one 720p30 and on one 1080p30 camera; N = 2, 4 720p30
cameras with K = 2 each.  Every case runs every transport, --runs times,
interleaved with the transport order rotated; medians reported.
Last line:
e2e-bench cpu_ratio_k4=FB/BEST_PEER cpu_ratio_k1_cv2=FB/CV2 latency_p99_ratio_k4=FB/BEST
... lost=FRAMES_LOST_BY_FRAMEBUS (the worse of 720p and 1080p for each ratio)
A run that fails is printed and left out; the benchmark then exits 1.
E2E_KEEP=1 keeps every run's directory (logs, records) under /tmp.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PYTHON = os.environ.get("FRAMEBUS_PYTHON", "/usr/bin/python3")
TRANSPORTS = ["cv2", "ffmpeg", "gstreamer", "framebus", "framebus-ffmpeg"]
PEERS = ["cv2", "ffmpeg", "gstreamer"]
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
CASES = ["720p:1x1", "720p:1x2", "720p:1x4", "1080p:1x1", "1080p:1x2", "1080p:1x4",
         "720p:2x2", "720p:4x2"]  # RES:NxK, N cameras with K consumers each
CLIP_SECONDS = 60
TICK = os.sysconf("SC_CLK_TCK")


class Failed(Exception):
    pass


def proc_table():
    """{pid: (ppid, cpu seconds)} of every process now."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(d)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / TICK)
    return table


def tree(table, root):
    """root and its descendants in table."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(pid)
            todo.extend(p for p, (pp, _) in table.items() if pp == pid)
    return out


def memory(pids):
    """(sum of VmRSS, sum of Pss) in MiB."""
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                rss += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            with open(f"/proc/{pid}/smaps_rollup") as f:
                pss += next(int(l.split()[1]) for l in f if l.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return rss / 1024, pss / 1024


class Run:
    """One case with one transport: cameras, framebusd if it is framebus'
    turn, N*K consumers; every process killed at the end whatever happens."""

    def __init__(self, bench, transport, res, n, k, port):
        self.b, self.t, self.res, self.n, self.k, self.port = bench, transport, res, n, k, port
        self.w, self.h = SIZES[res]
        self.dir = tempfile.mkdtemp(prefix="e2e-", dir=bench.tmp)
        self.procs = []

    def name(self):
        return f"{self.res} N={self.n} K={self.k} {self.t}"

    def spawn(self, cmd, what, **kw):
        err = open(os.path.join(self.dir, f"{what}.err"), "w")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                             start_new_session=True, **kw)
        p.what = what
        self.procs.append(p)
        return p

    def stderr(self, p):
        with open(os.path.join(self.dir, f"{p.what}.err")) as f:
            return f.read()[-1500:]

    def check_alive(self, procs):
        for p in procs:
            if p.poll() is not None:
                raise Failed(f"{self.name()}: {p.what} died (status {p.returncode}): "
                             f"{self.stderr(p)}")

    def url(self, cam):
        return f"rtsp://127.0.0.1:{self.port}/cam{cam}"

    def execute(self):
        args = self.b.args
        camera = self.spawn([PYTHON, os.path.join(HERE, "camera.py"), str(self.port),
                             self.b.clips[self.res], "--cameras", str(self.n),
                             "--log-dir", self.dir], "camera")
        if camera.stdout.readline().strip() != "ready":
            camera.wait()
            raise Failed(f"{self.name()}: the camera did not start: {self.stderr(camera)}")
        env = dict(os.environ, PYTHONPATH=os.path.join(self.b.build, "python"))
        daemon = None
        sock = os.path.join(self.dir, "fb.sock")
        framebus = self.t.startswith("framebus")
        if framebus:
            conf = os.path.join(self.dir, "framebusd.conf")
            with open(conf, "w") as f:
                f.write(f"[daemon]\nsocket = {sock}\n")
                for c in range(self.n):
                    f.write(f"[stream cam{c}]\nurl = {self.url(c)}\noption.rtsp_transport = tcp\n"
                            f"width = {self.w}\nheight = {self.h}\nformat = bgr24\n"
                            f"rtsp_client = {'ffmpeg' if self.t == 'framebus-ffmpeg' else 'builtin'}\n")
                    f.writelines(f"{o}\n" for o in args.framebus_option)
            daemon = self.spawn([os.path.join(self.b.build, "daemon", "framebusd"),
                                 "--config", conf], "framebusd")
            deadline = time.monotonic() + 10
            while not os.path.exists(sock):
                self.check_alive([daemon])
                if time.monotonic() > deadline:
                    raise Failed(f"{self.name()}: framebusd did not listen")
                time.sleep(0.02)
        consumers = []
        for c in range(self.n):
            for i in range(self.k):
                cmd = [PYTHON, os.path.join(HERE, "consumer.py"), "framebus" if framebus else self.t,
                       "--out", os.path.join(self.dir, f"cam{c}-{i}.bin")]
                if framebus:
                    cmd += ["--socket", sock, "--stream", f"cam{c}"]
                else:
                    cmd += ["--url", self.url(c), "--size", f"{self.w}x{self.h}"]
                p = self.spawn(cmd, f"consumer-cam{c}-{i}", env=env)
                p.cam = c
                consumers.append(p)
        watched = consumers + ([daemon] if daemon else []) + [camera]
        time.sleep(args.warmup)
        self.check_alive(watched)

        def cpu():
            table = proc_table()
            mine = [pid for p in consumers for pid in tree(table, p.pid)]
            fbd = tree(table, daemon.pid) if daemon else []
            return (sum(table[p][1] for p in mine), sum(table[p][1] for p in fbd),
                    sum(table[p][1] for p in tree(table, camera.pid)), mine + fbd)

        c0, d0, s0, _ = cpu()
        t0 = time.monotonic_ns()
        rss = pss = 0.0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            self.check_alive(watched)
            r, p = memory(cpu()[3])
            rss, pss = max(rss, r), max(pss, p)
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        c1, d1, s1, _ = cpu()
        t1 = time.monotonic_ns()
        time.sleep(1.5)  # frames sent before t1 may still be on their way
        self.check_alive(watched)
        for p in consumers:
            p.send_signal(signal.SIGTERM)
        self.killed = 0
        for p in consumers:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                # Its records up to a quarter of a second ago are on file.
                print(f"e2e: {self.name()}: {p.what} did not stop on SIGTERM, killed",
                      file=sys.stderr)
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                self.killed += 1
                continue
            if p.returncode != 0:
                raise Failed(f"{self.name()}: {p.what} failed (status {p.returncode}): "
                             f"{self.stderr(p)}")
        camera.send_signal(signal.SIGTERM)
        camera.wait(10)
        sent = []
        for c in range(self.n):
            log = np.loadtxt(os.path.join(self.dir, f"cam{c}.log"), dtype=np.int64, ndmin=2)
            if len(np.unique(log[:, 0])) != len(log):
                raise Failed(f"{self.name()}: camera {c} sent a frame index twice")
            sent.append(log)
        if sent and max(int(s[:, 0].max()) for s in sent) >= CLIP_SECONDS * 30 - 1:
            raise Failed(f"{self.name()}: the clip ran out: shorten --warmup/--seconds")
        return self.analyze(consumers, sent, t0, t1, c1 - c0, d1 - d0, s1 - s0, rss, pss)

    def analyze(self, consumers, sent, t0, t1, cpu_consumers, cpu_daemon, cpu_camera, rss, pss):
        lat, trace_lat, delivered, lost, unreadable = [], [], 0, 0, 0
        gap_consumer = max(float(np.diff(s[(s[:, 1] >= t0) & (s[:, 1] <= t1), 1]).max())
                           for s in sent) / 1e6
        gap_camera, gap_consumer = gap_consumer, 0.0
        for p in consumers:
            rec = np.fromfile(os.path.join(self.dir, f"cam{p.cam}-{p.what.rsplit('-', 1)[1]}.bin"),
                              "<i8").reshape(-1, 3)
            s = sent[p.cam]
            in_window = s[(s[:, 1] >= t0) & (s[:, 1] <= t1)]
            send = dict(zip(s[:, 0].tolist(), s[:, 1].tolist()))
            good = rec[rec[:, 0] >= 0]
            got = (good[:, 1] >= t0) & (good[:, 1] <= t1)
            if got.sum() > 1:
                gap_consumer = max(gap_consumer, float(np.diff(good[got, 1]).max()) / 1e6)
            delivered += int(got.sum())
            unreadable += int(((rec[:, 0] < 0) & (rec[:, 1] >= t0) & (rec[:, 1] <= t1)).sum())
            if not got.any():
                raise Failed(f"{self.name()}: {p.what} got no frame in the window")
            wanted = set(in_window[:, 0].tolist())
            lost += len(wanted - set(good[:, 0].tolist()))
            for idx, t, cap in good.tolist():
                if idx in wanted:
                    lat.append(t - send[idx])
                    if cap:
                        trace_lat.append(t - cap)
        if not lat:
            raise Failed(f"{self.name()}: no frame of the window reached a consumer")
        seconds = (t1 - t0) / 1e9
        lat = np.array(lat) / 1e6
        return {
            "cpu_ms_per_frame": (cpu_consumers + cpu_daemon) / delivered * 1e3,
            "cpu_cores": (cpu_consumers + cpu_daemon) / seconds,
            "daemon_cores": cpu_daemon / seconds,
            "camera_cores": cpu_camera / seconds,
            "fps_per_consumer": delivered / seconds / len(consumers),
            "rss_mib": rss, "pss_mib": pss,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "trace_p50_ms": float(np.percentile(trace_lat, 50)) / 1e6 if trace_lat else None,
            "trace_p99_ms": float(np.percentile(trace_lat, 99)) / 1e6 if trace_lat else None,
            "lost": lost, "unreadable": unreadable, "killed": self.killed,
            "camera_gap_ms": gap_camera, "consumer_gap_ms": gap_consumer,
        }

    def run(self):
        try:
            return self.execute()
        finally:
            for p in self.procs:  # consumers first, the camera last
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                p.wait()
            if not os.environ.get("E2E_KEEP"):
                shutil.rmtree(self.dir, ignore_errors=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.tmp = tempfile.mkdtemp(prefix="framebus-e2e-")
        self.clips = {}
        for res in sorted({c.split(":")[0] for c in args.cases}):
            w, h = SIZES[res]
            out = subprocess.run(["bash", os.path.join(HERE, "clip.sh"),
                                  os.path.join(self.build, "bench-data"), str(w), str(h),
                                  str(CLIP_SECONDS)], stdout=subprocess.PIPE, text=True,
                                 check=True)
            self.clips[res] = out.stdout.strip()


def parse_case(case):
    res, nk = case.split(":")
    n, k = nk.split("x")
    if res not in SIZES:
        raise ValueError(f"no size {res}")
    return res, int(n), int(k)


def summarize(runs):
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    out = {key: med(key) for key in ("cpu_ms_per_frame", "cpu_cores", "daemon_cores",
                                     "camera_cores", "fps_per_consumer", "rss_mib", "pss_mib",
                                     "p50_ms", "p99_ms")}
    for key in ("trace_p50_ms", "trace_p99_ms"):
        vals = [r[key] for r in runs if r[key] is not None]
        out[key] = statistics.median(vals) if vals else None
    out["lost"] = max(r["lost"] for r in runs)
    out["unreadable"] = max(r["unreadable"] for r in runs)
    out["runs"] = runs
    return out


def print_case(case, res, transports):
    print(f"\n{case}  (N cameras x K consumers; medians of the runs that did not fail)")
    print(f"  {'transport':15s} {'CPU ms/frame':>12s} {'cores':>6s} {'fbd':>5s} {'camera':>6s} "
          f"{'fps/cons':>8s} {'RSS MiB':>8s} {'PSS MiB':>8s} {'p50 ms':>7s} {'p99 ms':>7s} "
          f"{'lost':>5s}")
    for t in transports:
        if t not in res:
            print(f"  {t:15s} every run failed")
            continue
        r = res[t]
        print(f"  {t:15s} {r['cpu_ms_per_frame']:12.2f} {r['cpu_cores']:6.2f} "
              f"{r['daemon_cores']:5.2f} {r['camera_cores']:6.2f} {r['fps_per_consumer']:8.1f} "
              f"{r['rss_mib']:8.0f} {r['pss_mib']:8.0f} {r['p50_ms']:7.1f} {r['p99_ms']:7.1f} "
              f"{r['lost']:5d} {len(r['runs'])} runs" + (f"   (trace capture->array p50 {r['trace_p50_ms']:.1f} "
                                   f"p99 {r['trace_p99_ms']:.1f} ms)"
                                   if r["trace_p50_ms"] is not None else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20, help="measured window of each run")
    ap.add_argument("--warmup", type=float, default=6, help="seconds before the window")
    ap.add_argument("--cases", default=",".join(CASES),
                    help="RES:NxK,... (RES 720p or 1080p, N cameras, K consumers each)")
    ap.add_argument("--transports", default=",".join(TRANSPORTS))
    ap.add_argument("--framebus-option", action="append", default=[], metavar="KEY=VALUE",
                    help="one more key of framebusd's camera sections (e.g. decoder_threads=1)")
    ap.add_argument("--port", type=int, default=18600, help="first RTSP port to use")
    ap.add_argument("--results", help="write every figure as JSON here")
    ap.add_argument("--plots", help="draw PNG plots (CPU and latency against K) here")
    args = ap.parse_args()
    args.cases = args.cases.split(",")
    args.transports = args.transports.split(",")
    try:
        cases = [parse_case(c) for c in args.cases]
    except ValueError as e:
        ap.error(f"--cases: {e}")
    for t in args.transports:
        if t not in TRANSPORTS:
            ap.error(f"--transports: no transport {t}")
    if args.warmup + args.seconds + 15 > CLIP_SECONDS:
        ap.error(f"--warmup + --seconds must leave 15 s of the {CLIP_SECONDS} s clip")
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"e2e: {os.cpu_count()} CPUs, load average {' '.join(load)} at the start")
    bench = Bench(args)
    runs, port, failures = {}, args.port, []
    try:
        for rep in range(args.runs):
            for ci, (res, n, k) in enumerate(cases):
                order = args.transports[(rep + ci) % len(args.transports):] + \
                    args.transports[:(rep + ci) % len(args.transports)]
                for t in order:
                    port = args.port + (port + 1 - args.port) % 200
                    try:
                        r = Run(bench, t, res, n, k, port).run()
                    except Failed as e:
                        # The other cases go on; the run fails at the end.
                        print(f"run {rep + 1}/{args.runs} {args.cases[ci]:10s} {t:15s} "
                              f"FAILED: {e}", flush=True)
                        failures.append(str(e))
                        continue
                    runs.setdefault((args.cases[ci], t), []).append(r)
                    print(f"run {rep + 1}/{args.runs} {args.cases[ci]:10s} {t:15s} "
                          f"CPU {r['cpu_ms_per_frame']:6.2f} ms/frame ({r['cpu_cores']:.2f} "
                          f"cores)  p50 {r['p50_ms']:7.1f} p99 {r['p99_ms']:7.1f} ms  "
                          f"{r['fps_per_consumer']:5.1f} fps  lost {r['lost']}  longest gap "
                          f"camera {r['camera_gap_ms']:.0f} consumer {r['consumer_gap_ms']:.0f} ms"
                          + (f"  ({r['killed']} consumers killed at the end)" if r["killed"]
                             else ""), flush=True)
    finally:
        if not os.environ.get("E2E_KEEP"):
            shutil.rmtree(bench.tmp, ignore_errors=True)
    with open("/proc/loadavg") as f:
        load_end = f.read().split()[:3]
    res = {c: {t: summarize(runs[(c, t)]) for t in args.transports if (c, t) in runs}
           for c in args.cases}
    for c in args.cases:
        print_case(c, res[c], args.transports)
    print(f"\n(CPU: consumers with their children and framebusd, per frame delivered to a "
          f"consumer; 'cores' that CPU per second of the window; fbd: framebusd alone; camera: "
          f"the RTSP server, apart; latency from the camera handing a frame to its RTSP "
          f"media to the consumer holding its array; {args.seconds:g} s windows after "
          f"{args.warmup:g} s warm-up; load average {' '.join(load)} at the start, "
          f"{' '.join(load_end)} at the end)")
    if args.results:
        with open(args.results, "w") as f:
            json.dump({"args": vars(args), "load_start": load, "load_end": load_end,
                       "results": res}, f, indent=1)
    if args.plots:
        plot(args, res)
    summary(args, res)
    if failures:
        sys.exit(f"e2e-bench: {len(failures)} runs failed (medians above are of the runs that "
                 "did not):\n  " + "\n  ".join(failures))


def summary(args, res):
    peers = [p for p in PEERS if p in args.transports]
    if "framebus" not in args.transports or not peers:
        return
    fields, lost = [], 0
    for c in args.cases:
        lost += res[c]["framebus"]["lost"] if "framebus" in res[c] else 0

    def ratios(k, what, peer_pick):
        out = {}
        for r in ("720p", "1080p"):
            c = f"{r}:1x{k}"
            if c in res and "framebus" in res[c]:
                out[r] = res[c]["framebus"][what] / peer_pick(res[c], what)
        return out

    best = lambda rc, what: min(rc[p][what] for p in peers if p in rc)  # noqa: E731
    for label, k, what, pick in (("cpu_ratio_k4", 4, "cpu_ms_per_frame", best),
                                 ("cpu_ratio_k1_cv2", 1, "cpu_ms_per_frame",
                                  lambda rc, what: rc["cv2"][what] if "cv2" in rc else None),
                                 ("latency_p99_ratio_k4", 4, "p99_ms", best),
                                 ("latency_p99_ratio_k1", 1, "p99_ms", best)):
        try:
            r = ratios(k, what, pick)
        except (TypeError, ValueError, KeyError):
            continue
        if r:
            fields.append(f"{label}={max(r.values()):.3f}")
            fields += [f"{label}_{res_}={v:.3f}" for res_, v in r.items()]
    # latency against the best peer at every case
    worst = [res[c]["framebus"]["p99_ms"] / best(res[c], "p99_ms") for c in args.cases
             if "framebus" in res[c] and any(p in res[c] for p in peers)]
    if worst:
        fields.append(f"latency_p99_ratio_worst={max(worst):.3f}")
    print("e2e-bench " + " ".join(fields) + f" lost={lost}")


def plot(args, res):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(args.plots, exist_ok=True)
    for what, ylabel, fname in (
            ("cpu_ms_per_frame", "CPU ms per frame delivered (all processes)", "e2e-cpu.png"),
            ("p99_ms", "capture-to-array latency p99 (ms)", "e2e-latency.png")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, r in zip(axes, ("720p", "1080p")):
            ks = [k for k in (1, 2, 4) if f"{r}:1x{k}" in res]
            if not ks:
                continue
            for t in args.transports:
                if not all(t in res[f"{r}:1x{k}"] for k in ks):
                    continue  # a transport with a case whose every run failed
                ys = [res[f"{r}:1x{k}"][t][what] for k in ks]
                ax.plot(ks, ys, marker="o", label=t)
                if what == "p99_ms":
                    p50 = [res[f"{r}:1x{k}"][t]["p50_ms"] for k in ks]
                    ax.plot(ks, p50, marker=".", linestyle=":",
                            color=ax.lines[-1].get_color())
            ax.set_xticks(ks)
            ax.set_xlabel("K consumers of one camera")
            ax.set_ylabel(ylabel + (" (dotted: p50)" if what == "p99_ms" else ""))
            ax.set_title(f"one {r}30 RTSP camera, {args.runs} runs, medians", fontsize=9)
            if what == "p99_ms":
                ax.set_yscale("log")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(args.plots, fname), dpi=110)


if __name__ == "__main__":
    sys.exit(main())
