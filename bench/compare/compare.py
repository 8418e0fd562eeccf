#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""framebus against the usual ways to move frames, same workload, same run.

Transports (bench/compare/PROTOCOL.md has the workload):
  framebus    framebusd + a C publisher, Python consumers (zero-copy numpy views)
  pipe        a C producer writing raw frames to one pipe per consumer, Python
              reading into a preallocated numpy buffer (ffmpeg -f rawvideo pipe: | python)
  zeromq      a C PUB over ipc://, Python SUB with recv(copy=False) + numpy.frombuffer
  shm+sem     the seeds' named shared-memory block with a POSIX named semaphore
              per consumer, read in Python with mmap + numpy.frombuffer
  gstreamer   appsrc ! shmsink, Python shmsrc ! appsink
  framebus/C  framebus with a C consumer, the row to compare with iceoryx
  iceoryx/C   iceoryx 2 (RouDi) C publisher and subscriber: no Python binding
  floor       the wake-up floor: no frame, only a futex wake-up of each sleeping
              consumer process at the same moments, Python consumers (ctypes)
  floor/C     the same with C consumers
TRANSPORT+slice (framebus/C+slice, iceoryx/C+slice, floor/C+slice, ...; not
gstreamer) runs TRANSPORT with its consumers' threads on a 0.1 ms fair-scheduler
slice (Linux 6.12), beside TRANSPORT itself in the same run.

Every producer writes every pixel of every frame, then stamps it.
Phases: latency (L): --frames frames at --fps to K=1 and K=4 consumers,
publish-to-array latency p50/p99/max and lost frames; throughput (T): frames
as fast as possible to one consumer, frames per second and CPU seconds (not
for the floor).  Every (transport, phase) runs --runs times, interleaved;
medians reported.  Last line: compare-bench KEY=VALUE ... (see summary_line).
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
PYTHON_PEERS = ["pipe", "zeromq", "shm+sem", "gstreamer"]
COPY_PEERS = ["pipe", "zeromq"]
FLOORS = ["floor", "floor/C"]
# TRANSPORT+slice: the same transport, its consumers' threads with a 0.1 ms
# fair-scheduler slice (fb_thread_set_sched_slice(), docs/performance.md,
# "The wake-ahead at K=4"), to compare with and without in one run.
SLICED, SLICE_NS = "+slice", 100000


def base(transport):
    """The transport a --transports name runs (framebus/C+slice: framebus/C)."""
    return transport.removesuffix(SLICED)


class Run:
    """One producer and K consumers of one transport, bounded in time, every
    process killed at the end whatever happens."""

    def __init__(self, bench, transport, consumers, frames, fps):
        self.b, self.k = bench, consumers
        self.transport, self.sliced = base(transport), transport.endswith(SLICED)
        self.frames, self.fps = frames, fps
        self.dir = tempfile.mkdtemp(prefix="compare-", dir=bench.tmp)
        self.procs = []

    def spawn(self, cmd, **kw):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def expect_ready(self, p, what):
        line = p.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{self.transport}: {what} did not start: {line!r} "
                               f"{p.stderr.read()[-2000:]}")

    def common(self):
        return ["--frames", str(self.frames), "--fps", str(self.fps),
                "--consumers", str(self.k)]

    def consumer_cmd(self, i):
        out = ["--frames", str(self.frames), "--out", os.path.join(self.dir, f"c{i}.bin")]
        if self.sliced:
            out += ["--sched-slice", str(SLICE_NS)]
        py = [PYTHON, os.path.join(HERE, "consumer.py")]
        b = self.b
        if self.transport == "framebus":
            return py + ["framebus", "--socket", b.socket] + out
        if self.transport == "pipe":
            return py + ["pipe"] + out
        if self.transport == "zeromq":
            return py + ["zmq", "--endpoint", self.endpoint()] + out
        if self.transport == "shm+sem":
            return py + ["shm", "--name", self.shm_name(), "--index", str(i)] + out
        if self.transport == "floor":
            return py + ["floor", "--name", self.shm_name()] + out
        if self.transport == "floor/C":
            return [b.program("floor-consumer"), "--name", self.shm_name()] + out
        if self.transport == "gstreamer":
            return [PYTHON, os.path.join(HERE, "gst-consumer.py"),
                    "--socket", self.gst_socket()] + out
        if self.transport == "framebus/C":
            return [b.program("compare-fb-consumer"), "--socket", b.socket] + out
        return [b.program("iox-consumer")] + out

    def endpoint(self):
        return f"ipc://{self.dir}/zmq.ipc"

    def shm_name(self):
        return f"/framebus-compare-{os.getpid()}"

    def gst_socket(self):
        return os.path.join(self.dir, "gst.sock")

    def execute(self):
        t = self.transport
        producer = self.b.program("compare-producer")
        env = dict(os.environ, PYTHONPATH=os.path.join(self.b.build, "python"))
        consumers = []
        if t == "pipe":
            pipes = [os.pipe() for _ in range(self.k)]
            for i, (r, _) in enumerate(pipes):
                consumers.append(self.spawn(self.consumer_cmd(i), stdin=r, env=env))
                os.close(r)
            for i, c in enumerate(consumers):
                self.expect_ready(c, f"consumer {i}")
            fds = [w for _, w in pipes]
            prod = self.spawn([producer, "pipe", "--fds", ",".join(map(str, fds))]
                              + self.common(), pass_fds=fds)
            for w in fds:
                os.close(w)
            self.expect_ready(prod, "the producer")
        else:
            if t == "iceoryx/C":
                # Subscribers first: iceoryx connects them when the publisher
                # offers, and the publisher waits for all K (see iox-producer.c).
                consumers = [self.spawn(self.consumer_cmd(i)) for i in range(self.k)]
                for i, c in enumerate(consumers):
                    self.expect_ready(c, f"consumer {i}")
                prod = self.spawn([self.b.program("iox-producer")] + self.common())
                self.expect_ready(prod, "the producer")
            else:
                if t in ("framebus", "framebus/C"):
                    prod_cmd = [producer, "framebus", "--socket", self.b.socket,
                                "--slots", str(self.b.args.slots)]
                elif t == "zeromq":
                    prod_cmd = [producer, "zmq", "--endpoint", self.endpoint()]
                elif t == "shm+sem":
                    prod_cmd = [producer, "shm", "--name", self.shm_name()]
                elif t in FLOORS:
                    prod_cmd = [producer, "floor", "--name", self.shm_name()]
                else:
                    prod_cmd = [self.b.program("gst-producer"), "--socket", self.gst_socket()]
                prod_cmd += self.common()
                prod = self.spawn(prod_cmd)
                self.expect_ready(prod, "the producer")
                consumers = [self.spawn(self.consumer_cmd(i), env=env) for i in range(self.k)]
                for i, c in enumerate(consumers):
                    self.expect_ready(c, f"consumer {i}")
        limit = time.monotonic() + 30 + self.frames / (self.fps or 200)
        while True:
            pid, status, usage = os.wait4(prod.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > limit:
                raise RuntimeError(f"{t}: the producer did not finish in time")
            time.sleep(0.01)
        prod.returncode = status
        self.procs.remove(prod)
        producer_cpu = usage.ru_utime + usage.ru_stime
        if status != 0:
            raise RuntimeError(f"{t}: the producer failed: {prod.stderr.read()[-2000:]}")
        cpu = producer_cpu
        for i, c in enumerate(consumers):
            out, err = c.communicate(timeout=max(1, limit - time.monotonic()))
            if c.returncode != 0:
                raise RuntimeError(f"{t}: consumer {i} failed: {err[-2000:]}")
            cpu += float(out.strip().splitlines()[-1].split("=")[1])
        records = [np.fromfile(os.path.join(self.dir, f"c{i}.bin"), "<u8").reshape(-1, 3)
                   for i in range(self.k)]
        return records, cpu

    def run(self):
        try:
            records, cpu = self.execute()
        finally:
            for p in self.procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            shutil.rmtree(self.dir, ignore_errors=True)
        lat = np.concatenate([(r[:, 2] - r[:, 1]).astype(np.int64) for r in records]) / 1e3
        lost = sum(self.frames - len(np.unique(r[:, 0])) for r in records)
        first = records[0]
        span = (int(first[-1, 2]) - int(first[0, 2])) / 1e9 if len(first) > 1 else 0
        return {"latency_us": lat, "lost": int(lost), "cpu_s": cpu,
                "fps": (len(first) - 1) / span if span > 0 else 0.0}


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.tmp = tempfile.mkdtemp(prefix="framebus-compare-")
        self.socket = os.path.join(self.tmp, "framebus.sock")
        self.daemon = None

    def program(self, name):
        path = os.path.join(self.build, "bench", "compare", name)
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"{path} is not built")
        return path

    def __enter__(self):
        conf = os.path.join(self.tmp, "framebusd.conf")
        with open(conf, "w") as f:
            f.write(f"[daemon]\nsocket = {self.socket}\n")
        self.daemon = subprocess.Popen([os.path.join(self.build, "daemon", "framebusd"),
                                        "--config", conf], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
        self.roudi = None
        if "iceoryx/C" in map(base, self.args.transports):
            self.roudi = subprocess.Popen(["iox-roudi", "-c", os.path.join(HERE, "roudi.toml")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline or self.daemon.poll() is not None:
                raise RuntimeError("framebusd did not start")
            time.sleep(0.02)
        time.sleep(1 if self.roudi else 0)  # RouDi takes a moment to set up its shm
        return self

    def __exit__(self, *exc):
        for p in (self.daemon, self.roudi):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def summarize(runs):
    """Medians over the (successful) runs of one (transport, phase)."""
    med = lambda key: statistics.median(key(r) for r in runs)  # noqa: E731
    return {
        "p50_us": med(lambda r: float(np.percentile(r["latency_us"], 50))),
        "p99_us": med(lambda r: float(np.percentile(r["latency_us"], 99))),
        "max_us": med(lambda r: float(r["latency_us"].max())),
        "lost": max(r["lost"] for r in runs),
        "fps": med(lambda r: r["fps"]),
        "cpu_s": med(lambda r: r["cpu_s"]),
        "latency_us": runs[len(runs) // 2]["latency_us"].tolist(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--frames", type=int, default=300, help="frames per latency run")
    ap.add_argument("--fps", type=float, default=30)
    ap.add_argument("--throughput-frames", type=int, default=600)
    ap.add_argument("--slots", type=int, default=2,
                    help="framebus ring depth: 2 (double buffering); a flat-out lossless "
                    "stream cycles through every slot, and each one more is 6.2 MB more "
                    "for the CPU caches to hold (docs/performance.md has the sweep)")
    ap.add_argument("--transports", default="floor,framebus,pipe,zeromq,shm+sem,gstreamer,"
                    "floor/C,framebus/C,iceoryx/C")
    ap.add_argument("--results", help="write every figure and latency sample as JSON here")
    ap.add_argument("--plots", help="draw PNG plots into this directory (matplotlib)")
    args = ap.parse_args()
    args.transports = args.transports.split(",")
    known = set(PYTHON_PEERS + FLOORS + ["framebus", "framebus/C", "iceoryx/C"])
    if set(map(base, args.transports)) - known:
        ap.error(f"--transports: no transport "
                 f"{', '.join(sorted(set(map(base, args.transports)) - known))}"
                 f" (known: {', '.join(sorted(known))})")
    if "gstreamer" + SLICED in args.transports:
        ap.error(f"--transports: gstreamer{SLICED}: its consumer sets no slice")
    phases = [("L", 1, args.frames, args.fps), ("L", 4, args.frames, args.fps),
              ("T", 1, args.throughput_frames, 0)]
    runs, failed = {}, {}
    with Bench(args) as bench:
        for rep in range(args.runs):
            for phase, k, frames, fps in phases:
                for t in args.transports:
                    if phase == "T" and base(t) in FLOORS:
                        continue  # no frames to move
                    runs.setdefault((t, phase, k), [])
                    try:
                        r = Run(bench, t, k, frames, fps).run()
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        # Out of the medians, and counted in the table.
                        failed[(t, phase, k)] = failed.get((t, phase, k), 0) + 1
                        print(f"run {rep + 1}/{args.runs} {phase} K={k} {t:11s} failed: "
                              f"{str(e).splitlines()[0][:300]}", flush=True)
                        continue
                    runs[(t, phase, k)].append(r)
                    print(f"run {rep + 1}/{args.runs} {phase} K={k} {t:11s} "
                          f"p50 {np.percentile(r['latency_us'], 50):9.1f} us  "
                          f"p99 {np.percentile(r['latency_us'], 99):9.1f} us  "
                          f"lost {r['lost']:4d}  {r['fps']:7.1f} fps", flush=True)
    res = {f"{t} {phase} K={k}": dict(summarize(v), failed=failed.get((t, phase, k), 0))
           for (t, phase, k), v in runs.items() if v}
    report(args, res, failed)


def floor_of(t):
    """The floor a transport's latency is judged against: the same consumer
    language's."""
    return "floor/C" if base(t).endswith("/C") else "floor"


def report(args, res, failed):
    print()
    print(f"{'transport':12s} {'consumer':8s} | {'K=1 p50':>8s} {'p99':>8s} {'max':>8s} "
          f"{'lost':>4s} {'-floor':>7s} {'/floor':>6s} | {'K=4 p50':>8s} {'p99':>8s} "
          f"{'max':>8s} {'lost':>4s} {'-floor':>7s} {'/floor':>6s} | "
          f"{'T fps':>7s} {'cpu s':>6s} {'lost':>4s}")
    for t in args.transports:
        who = "C" if base(t).endswith("/C") else "Python"
        row = f"{t:12s} {who:8s} |"
        for k in (1, 4):
            lat, fl = res.get(f"{t} L K={k}"), res.get(f"{floor_of(t)} L K={k}")
            if not lat:
                row += f" {'every run failed':>52s} |"
                continue
            row += (f" {lat['p50_us']:8.1f} {lat['p99_us']:8.1f} {lat['max_us']:8.1f} "
                    f"{lat['lost']:4d}")
            if fl and base(t) not in FLOORS:
                row += (f" {lat['p50_us'] - fl['p50_us']:+7.1f} "
                        f"{lat['p99_us'] / fl['p99_us']:5.2f}x |")
            else:
                row += f" {'':7s} {'':6s} |"
        tp = res.get(f"{t} T K=1")
        row += (f" {tp['fps']:7.1f} {tp['cpu_s']:6.2f} {tp['lost']:4d}" if tp else
                f" {'-':>7s} {'-':>6s} {'-':>4s}")
        print(row)
    for (t, phase, k), n in sorted(failed.items()):
        print(f"({t} {phase} K={k}: {n} of {args.runs} runs failed, out of the medians)")
    print(f"(latency in us from publish to the array in the consumer's hands; {args.runs} runs, "
          "medians; lost: the most any run lost; -floor: p50 minus the floor's p50, /floor: "
          "p99 over the floor's p99, against the floor of the same consumer language)")
    print("(every producer wrote every pixel of every frame; the floor's consumers get a "
          "futex wake-up and no frame)")
    if args.results:
        with open(args.results, "w") as f:
            json.dump(res, f)
    if args.plots:
        plot(args, res)
    line = summary_line(args, res)
    if line:
        print("compare-bench " + line)


def summary_line(args, res):
    """KEY=VALUE pairs of the last line, for what ran:
    framebus_p50_us, framebus_p99_us (Python, K=1) and framebus_k4_p50_us,
    framebus_k4_p99_us; the same with framebus_c_ for framebus/C; floor_p50_us,
    floor_p99_us (Python floor, K=1), floor_c_... (C floor), floor_k4_...;
    floor_gap_us = framebus p50 - floor p50 and floor_p99_ratio = framebus p99 /
    floor p99 (Python, K=1; target <= 15 us and <= 1.5); best_peer (the Python
    zero-copy or copying peer with the lowest K=1 p99), best_peer_p99_us,
    latency_ratio = its p99 / framebus's, copy_peer_p99_us, copy_ratio,
    framebus_fps, best_peer_fps, fps_ratio."""
    kv = []

    def add(key, value, fmt="{:.1f}"):
        kv.append(f"{key}={fmt.format(value)}")

    for t, prefix in (("framebus", "framebus"), ("framebus/C", "framebus_c"),
                      ("floor", "floor"), ("floor/C", "floor_c")):
        for k, infix in ((1, ""), (4, "_k4")):
            r = res.get(f"{t} L K={k}")
            if r:
                add(f"{prefix}{infix}_p50_us", r["p50_us"])
                add(f"{prefix}{infix}_p99_us", r["p99_us"])
    fb, fl = res.get("framebus L K=1"), res.get("floor L K=1")
    if fb and fl:
        add("floor_gap_us", fb["p50_us"] - fl["p50_us"])
        add("floor_p99_ratio", fb["p99_us"] / fl["p99_us"], "{:.2f}")
    peers = [p for p in PYTHON_PEERS if p in args.transports]
    peers = [p for p in peers if f"{p} L K=1" in res and f"{p} T K=1" in res]
    if fb and peers and "framebus T K=1" in res:
        best = min(peers, key=lambda p: res[f"{p} L K=1"]["p99_us"])
        b = res[f"{best} L K=1"]["p99_us"]
        kv.append(f"best_peer={best}")
        add("best_peer_p99_us", b)
        add("latency_ratio", b / fb["p99_us"], "{:.2f}")
        copies = [p for p in COPY_PEERS if f"{p} L K=1" in res]
        if copies:
            c = min(res[f"{p} L K=1"]["p99_us"] for p in copies)
            add("copy_peer_p99_us", c)
            add("copy_ratio", c / fb["p99_us"], "{:.2f}")
        d, e = res["framebus T K=1"]["fps"], res[f"{best} T K=1"]["fps"]
        add("framebus_fps", d)
        add("best_peer_fps", e)
        add("fps_ratio", d / e, "{:.2f}")
    return " ".join(kv)


def plot(args, res):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(args.plots, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, k in zip(axes, (1, 4)):
        ran = [t for t in args.transports if f"{t} L K={k}" in res]
        data = [res[f"{t} L K={k}"]["latency_us"] for t in ran]
        ax.boxplot(data, labels=ran, whis=(1, 99), showfliers=False)
        ax.set_yscale("log")
        ax.set_ylabel("publish to array in hand (µs, log)")
        ax.set_title(f"1920x1080 bgr24 at {args.fps:g} fps, K={k} consumers "
                     "(box: p25-p75, whiskers: p1-p99)", fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.plots, "compare-latency.png"), dpi=110)
    fig, ax = plt.subplots(figsize=(7, 4))
    movers = [t for t in args.transports if f"{t} T K=1" in res]
    ax.bar(movers, [res[f"{t} T K=1"]["fps"] for t in movers])
    ax.set_ylabel("frames per second, one consumer")
    ax.set_title("1920x1080 bgr24 as fast as possible", fontsize=9)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.plots, "compare-fps.png"), dpi=110)


if __name__ == "__main__":
    sys.exit(main())
