#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Soak: one framebusd, 8 streams at 30 fps, clients coming and going for
MINUTES; the daemon's memory, descriptors and drops sampled every second.

    soak.py run --minutes M [--out DIR] [--build DIR] [--clients N] [--seed S]
                [--warmup SECONDS] [--rss-tolerance-kb KB]
    soak.py sub ...   a Python subscriber    (the driver starts these)
    soak.py pub ...   a Python publisher     (the driver starts these)

scripts/soak is the entry point: it builds, bounds the run in time and kills
whatever is left of it.  The driver starts framebusd (built in --build) on a
private socket with 8 lavfi test-pattern streams (320x240 to 640x480, every
pixel format, one block-policy stream), waits until all run, and then keeps
about --clients clients alive, each started on a seeded schedule with a
lifetime of a few seconds and one of three ends: it stops by itself, it is
sent SIGTERM, or it is killed (SIGKILL, perhaps holding frames).  The clients are
Python subscribers (latest and queue mode, one to three streams, holding
frames and arrays, some unsubscribing and subscribing again), Python
publishers (drop and block policy, names reused), and the C tools:
framebusctl watch/snapshot/status, framebus-record, framebus-collector.
Subscribers read the configured streams and the published ones.

Once a second it writes a CSV row: the daemon's VmRSS (and its anonymous,
file and shared parts), its open descriptors (/proc/PID/fd), threads and
CPU, the clients alive, and every stream's published and dropped frames and
subscribers (framebus.Bus.streams()).  After MINUTES the clients are
stopped, and the driver waits (up to 20 s) for the daemon to settle.

It fails (exit 1) if framebusd died; if its RSS at the end exceeds the
highest RSS of the warm-up by more than --rss-tolerance-kb; if its open
descriptors are not back to the count before the first client; if a
published stream or a subscriber is left over; if a configured stream is not
running at the end; if a client failed in a way the schedule does not
explain (a Python traceback, a C tool's error other than its stream being
gone); or if framebusd does not stop cleanly on SIGTERM.

Outputs in --out: soak.csv, soak.png, clients.csv (one row per client),
client-errors.log (the output of clients that failed unexpectedly),
framebusd.log, summary.txt.  The last line printed:

soak minutes=M rss_start_kb=A rss_end_kb=B rss_max_kb=C fds_start=D fds_end=E
fds_max=F drops=G clients=H result=pass|fail
"""
import argparse
import collections
import csv
import importlib
import math
import os
import random
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PYTHON = os.environ.get("FRAMEBUS_PYTHON", "/usr/bin/python3")

# name, lavfi source, width, height, format, policy
STREAMS = [
    ("cam0", "testsrc", 320, 240, "bgr24", "drop"),
    ("cam1", "testsrc", 640, 480, "nv12", "drop"),
    ("cam2", "testsrc2", 480, 360, "gray8", "drop"),
    ("cam3", "testsrc", 640, 480, "bgr24", "drop"),
    ("cam4", "testsrc2", 320, 240, "yuv420p", "drop"),
    ("cam5", "testsrc", 400, 300, "bgra", "drop"),
    ("cam6", "testsrc", 640, 360, "rgb24", "drop"),
    ("cam7", "testsrc", 320, 240, "bgr24", "block"),
]
FPS = 30
CONFIGURED = [s[0] for s in STREAMS]
# Names the Python publishers take: reused, so a name is published again
# soon after its previous publisher went away.
PUBLISHED = ["soak.p0", "soak.p1", "soak.p2", "soak.p3"]

# kind: (weight, lifetime range in seconds; None: a one-shot command)
KINDS = {
    "py-sub": (30, (1.0, 15.0)),
    "py-pub": (12, (3.0, 25.0)),
    "watch": (18, (1.0, 12.0)),
    "record": (5, (2.0, 10.0)),
    "collector": (6, (1.0, 8.0)),
    "snapshot": (10, None),
    "status": (8, None),
}
# At most one client started per this many seconds.
START_INTERVAL_S = 0.25
# A client that ignores its own deadline by this much is killed and counted
# as hung.
GRACE_S = 20.0
# Python workers' exit status when their stream was not there (a published
# stream whose publisher had just gone, or a name still taken): a race the
# schedule makes on purpose, not a failure.
RACE = 3


# --- the workers ---------------------------------------------------------

def import_numpy_first():
    """Import numpy before SIGTERM becomes an exception.  The binding imports
    it by itself the first time it makes an array, ahead of any frame, and
    discards an error doing so (python/framebus/subscriber.c make_spares):
    a SIGTERM that landed during that import was lost, and the worker ran on
    with a half-imported numpy."""
    importlib.import_module("numpy")


def sub_main(a):
    """Subscribe to a.stream (one or more), read frames until a.seconds passed,
    holding the newest a.hold frames and their arrays."""
    import framebus
    import_numpy_first()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bus = framebus.connect(a.socket, name="soak-sub")
    subs, held = {}, {}
    frames = missed = gone = 0

    def subscribe_all():
        for name in a.stream:
            subs[name] = bus.subscribe(name, mode=a.mode)
            held[name] = collections.deque()

    def close_all():
        for name in list(subs):
            for frame, _array in held.pop(name, ()):
                frame.release()
            subs.pop(name).close()

    try:
        try:
            subscribe_all()
        except framebus.NoSuchStream:
            return RACE
        start = time.monotonic()
        deadline = start + a.seconds
        resubscribe_at = start + a.seconds / 2 if a.resubscribe else math.inf
        next_list = start
        while subs and time.monotonic() < deadline:
            if time.monotonic() >= resubscribe_at:
                resubscribe_at = math.inf
                close_all()
                try:
                    subscribe_all()
                except framebus.NoSuchStream:
                    return 0  # a published stream ended meanwhile
            # Wait for any of them, then read each dry: a queue subscriber
            # of a block-policy stream must keep up, or the stream waits.
            select.select([s.fileno() for s in subs.values()], [], [], 0.1)
            for name, sub in list(subs.items()):
                while True:
                    try:
                        frame = sub.try_acquire()
                    except (framebus.StreamEnded, framebus.StreamRemoved):
                        for f, _array in held.pop(name):
                            f.release()
                        subs.pop(name).close()
                        gone += 1
                        break
                    if frame is None:
                        break
                    array = frame.array
                    int(array[-1, -1].sum())  # read the slot's memory
                    frames += 1
                    missed += frame.missed
                    held[name].append((frame, array))
                    while len(held[name]) > a.hold:
                        held[name].popleft()[0].release()
            if time.monotonic() >= next_list:
                next_list += 1.0
                bus.streams()
                bus.process()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a late SIGTERM: end cleanly
        print(f"sub frames={frames} missed={missed} gone={gone}", flush=True)
        close_all()
        bus.close()


def pub_main(a):
    """Publish a.name at a.fps for a.seconds, each frame filled and tagged."""
    import framebus
    import_numpy_first()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bus = framebus.connect(a.socket, name="soak-pub")
    pub = None
    n = dropped = timeouts = 0
    try:
        try:
            pub = bus.publish(a.name, width=a.width, height=a.height, format=a.format,
                              slots=a.slots, policy=a.policy, meta_max=256)
        except framebus.StreamExists:
            return RACE
        period = 1.0 / a.fps
        next_t = start = time.monotonic()
        while time.monotonic() < start + a.seconds:
            try:
                with pub.frame(timeout=0.5) as out:
                    out.array[:] = n & 0xff
                    out.source_seq = n
                    out.meta = b'{"n": %d}' % n
            except framebus.FrameDropped:
                dropped += 1
            except TimeoutError:
                timeouts += 1
            n += 1
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"pub frames={n} dropped={dropped} timeouts={timeouts}", flush=True)
        if pub is not None:
            pub.close()
        bus.close()


# --- the driver ----------------------------------------------------------

class Client:
    """One process of the churn and what became of it."""

    def __init__(self, n, kind, argv, log, started, lifetime, fate, fate_at, targets,
                 publishes, owners):
        self.n, self.kind, self.argv, self.log = n, kind, argv, log
        self.started, self.lifetime = started, lifetime
        self.fate, self.fate_at = fate, fate_at  # "own", "term", "kill"
        self.targets, self.publishes = targets, publishes
        self.owners = owners  # the publishers of the published streams it reads
        self.proc = None
        self.signalled = None
        self.signalled_at = None
        self.ended = None
        self.rc = None
        self.output = ""
        self.outcome = None

    def ending(self):
        """When it began to end, at the earliest: its own deadline, our
        signal, or its exit (a loaded machine takes a while to reap an
        interpreter whose stream already ended)."""
        times = [self.started + self.lifetime if self.lifetime else math.inf]
        times += [t for t in (self.signalled_at, self.ended) if t is not None]
        return min(times)


class Churn:
    """Starts, ends and accounts for the clients."""

    def __init__(self, rng, socket, build, tmp, target):
        self.rng, self.socket, self.build, self.tmp = rng, socket, build, tmp
        self.target = target
        self.alive = []
        self.done = []
        self.count = 0
        self.env = dict(os.environ, PYTHONPATH=os.path.join(build, "python"))
        self.env.pop("JOURNAL_STREAM", None)
        self.next_start = 0.0

    def tool(self, *path):
        return os.path.join(self.build, *path)

    def live_publishers(self, now, min_age=1.0):
        return [c for c in self.alive
                if c.kind == "py-pub" and now - c.started >= min_age]

    def pick_streams(self, now, k):
        """k distinct streams, a published one now and then; with the
        publishers of those that are published."""
        pubs = self.live_publishers(now)
        names = set()
        owners = []
        while len(names) < k:
            if pubs and self.rng.random() < 0.3:
                p = self.rng.choice(pubs)
                if p.publishes not in names:
                    owners.append(p)
                names.add(p.publishes)
            else:
                names.add(self.rng.choice(CONFIGURED))
        return sorted(names), owners

    def plan(self, now):
        rng = self.rng
        kinds = [k for k in KINDS
                 if not (k == "py-pub" and not self.free_names())
                 and not (k == "record" and any(c.kind == "record" for c in self.alive))]
        kind = rng.choices(kinds, [KINDS[k][0] for k in kinds])[0]
        span = KINDS[kind][1]
        lifetime = rng.uniform(*span) if span else 0.0
        self.count += 1
        n = self.count
        sock = ["--socket", self.socket]
        targets, owners, publishes = [], [], None
        if kind == "py-sub":
            targets, owners = self.pick_streams(now, rng.choices([1, 2, 3], [7, 2, 1])[0])
            argv = [PYTHON, __file__, "sub", *sock, "--seconds", f"{lifetime:.2f}",
                    "--mode", rng.choice(["latest", "latest", "queue"]),
                    "--hold", str(rng.choice([0, 1]))]
            if rng.random() < 0.2:
                argv.append("--resubscribe")
            for t in targets:
                argv += ["--stream", t]
        elif kind == "py-pub":
            publishes = rng.choice(self.free_names())
            w, h = rng.choice([(160, 120), (320, 240)])
            argv = [PYTHON, __file__, "pub", *sock, "--name", publishes,
                    "--seconds", f"{lifetime:.2f}", "--width", str(w), "--height", str(h),
                    "--format", rng.choice(["gray8", "bgr24", "nv12"]),
                    "--policy", rng.choice(["drop", "drop", "block"]),
                    "--slots", str(rng.choice([4, 8]))]
        elif kind == "watch":
            targets, owners = self.pick_streams(now, 1)
            argv = [self.tool("tools", "framebusctl"), *sock, "watch", targets[0],
                    "--seconds", f"{lifetime:.2f}"]
            if rng.random() < 0.5:
                argv.append("--queue")
        elif kind == "record":
            targets, owners = self.pick_streams(now, 1)
            argv = [self.tool("tools", "framebus-record"), *sock,
                    "--duration", f"{lifetime:.2f}", targets[0],
                    os.path.join(self.tmp, f"record-{n}.mp4")]
        elif kind == "collector":
            pubs = self.live_publishers(now)
            owner = rng.choice(pubs) if pubs else None
            processed = owner.publishes if owner else rng.choice(PUBLISHED)
            targets = [rng.choice(CONFIGURED), processed]
            owners = [owner] if owner else []
            argv = [self.tool("examples", "framebus-collector"), *sock,
                    "--source", targets[0], "--processed", processed,
                    "--seconds", f"{lifetime:.2f}"]
        elif kind == "snapshot":
            targets, owners = self.pick_streams(now, 1)
            argv = [self.tool("tools", "framebusctl"), *sock, "snapshot", targets[0],
                    os.path.join(self.tmp, f"snapshot-{n}.png")]
        else:
            argv = [self.tool("tools", "framebusctl"), *sock, "status", "--json"]
        if span:
            fate = rng.choices(["own", "term", "kill"], [2, 1, 1])[0]
        else:
            fate = "own"
        fate_at = now + (lifetime * rng.uniform(0.2, 1.0) if fate != "own"
                         else lifetime + GRACE_S)
        log = os.path.join(self.tmp, f"client-{n}.log")
        return Client(n, kind, argv, log, now, lifetime, fate, fate_at, targets, publishes,
                      owners)

    def free_names(self):
        taken = {c.publishes for c in self.alive if c.publishes}
        return [p for p in PUBLISHED if p not in taken]

    def start(self, now):
        c = self.plan(now)
        with open(c.log, "w") as out:
            c.proc = subprocess.Popen(c.argv, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, env=self.env)
        self.alive.append(c)

    def step(self, now, churning):
        """Reap, apply fates, top the population up."""
        for c in list(self.alive):
            if c.proc.poll() is not None:
                self.finish(c, now)
            elif now >= c.fate_at:
                if c.fate == "own":
                    c.signalled = "hung"
                    c.proc.kill()
                elif c.signalled is None:
                    c.signalled = c.fate
                    c.signalled_at = now
                    if c.fate == "kill":
                        c.proc.kill()
                    else:
                        c.proc.terminate()
                elif now >= c.fate_at + GRACE_S:
                    c.signalled = "hung"
                    c.proc.kill()
        # At most one start per START_INTERVAL_S: a crowd of Python
        # interpreters starting at once would starve the daemon's sources
        # of CPU on a small machine.
        if churning and len(self.alive) < self.target and now >= self.next_start:
            self.start(now)
            self.next_start = now + START_INTERVAL_S

    def finish(self, c, now):
        c.rc = c.proc.returncode
        c.ended = now
        self.alive.remove(c)
        self.done.append(c)
        with open(c.log, errors="replace") as f:
            output = f.read()
        os.unlink(c.log)
        for name in (f"record-{c.n}.mp4", f"record-{c.n}.jsonl", f"snapshot-{c.n}.png"):
            path = os.path.join(self.tmp, name)
            if os.path.exists(path):
                os.unlink(path)
        c.output = output[-3000:]

    def classify(self, path):
        """Each client's outcome, once every publisher's end is known; the
        output of those that failed unexpectedly goes to path."""
        with open(path, "w") as errors:
            for c in self.done:
                c.outcome = self.outcome(c, c.output)
                if c.outcome in ("error", "hung"):
                    errors.write(f"--- client {c.n} ({c.kind}, {c.outcome}, status {c.rc}, "
                                 f"{c.started:.1f}..{c.ended:.1f} s): {' '.join(c.argv)}\n")
                    errors.write(c.output)
                    errors.write("\n")

    def outcome(self, c, output):
        if c.signalled == "hung":
            return "hung"
        if c.signalled == "kill" and c.rc == -signal.SIGKILL:
            return "killed"
        if c.signalled in ("term", "end") and c.rc in (0, -signal.SIGTERM):
            return "terminated"
        if c.rc == 0:
            return "ok"
        # Its published stream was gone before it came (or, for a
        # publisher, its name was still taken).
        reads_published = any(t in PUBLISHED for t in c.targets)
        if c.kind == "py-pub" and c.rc == RACE:
            return "race"
        if reads_published and (c.rc == RACE or "no stream named" in output):
            return "race"
        # Its published stream ended under it (the C tools say so with a
        # non-zero status).
        if any(o.ending() <= c.ended + 1.0 for o in c.owners):
            return "stream gone"
        return "error"

    def stop_all(self, now):
        for c in self.alive:
            c.signalled = "end"
            c.signalled_at = now
            c.proc.terminate()
        deadline = time.monotonic() + 5
        while self.alive and time.monotonic() < deadline:
            time.sleep(0.05)
            for c in list(self.alive):
                if c.proc.poll() is not None:
                    self.finish(c, now)
        for c in list(self.alive):
            c.signalled = "hung"
            c.proc.kill()
            c.proc.wait()
            self.finish(c, now)

    def kill_all(self):
        for c in self.alive:
            if c.proc.poll() is None:
                c.proc.kill()
            c.proc.wait()


def exited(proc):
    """Whether proc ended (waiting a second for it)."""
    try:
        proc.wait(timeout=1)
        return True
    except subprocess.TimeoutExpired:
        return False


def write_config(path, socket):
    with open(path, "w") as f:
        f.write(f"[daemon]\nsocket = {socket}\nlog_level = info\n")
        for name, src, w, h, fmt, policy in STREAMS:
            f.write(f"\n[stream {name}]\nurl = {src}=size={w}x{h}:rate={FPS}\n"
                    f"input_format = lavfi\nwidth = {w}\nheight = {h}\nformat = {fmt}\n"
                    f"policy = {policy}\nslots = 8\n")


def proc_sample(pid):
    """VmRSS and its parts (kB), threads, open descriptors and CPU ticks."""
    got = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
                got[key] = int(value.split()[0])
    got["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    got["ticks"] = int(fields[11]) + int(fields[12])  # utime + stime
    return got


class Sampler:
    """One CSV row a second; keeps the rows for the checks and the plot."""

    def __init__(self, path, daemon_pid, bus, churn):
        self.daemon_pid, self.bus, self.churn = daemon_pid, bus, churn
        self.rows = []
        self.columns = ["t_s", "phase", "rss_kb", "rss_anon_kb", "rss_file_kb",
                        "rss_shmem_kb", "fds", "threads", "cpu_pct", "load1", "clients_alive",
                        "clients_started", "published_streams", "published_subscribers",
                        "drops", "pub_drops"]
        for name in CONFIGURED:
            self.columns += [f"{name}_fps", f"{name}_published", f"{name}_dropped",
                             f"{name}_subscribers"]
        self.file = open(path, "w", newline="")
        self.csv = csv.DictWriter(self.file, self.columns)
        self.csv.writeheader()
        self.last = None  # (t, ticks, {stream: published})
        # Published streams come and go under reused names: their drops are
        # summed per instance (a new instance starts its counters at 0).
        self.pub_seen = {}
        self.pub_drops_done = 0

    def sample(self, t, phase):
        p = proc_sample(self.daemon_pid)
        streams = {s.name: s for s in self.bus.streams()}
        row = {"t_s": round(t, 2), "phase": phase, "rss_kb": p["VmRSS"],
               "rss_anon_kb": p["RssAnon"], "rss_file_kb": p["RssFile"],
               "rss_shmem_kb": p["RssShmem"], "fds": p["fds"], "threads": p["Threads"],
               "load1": os.getloadavg()[0],
               "clients_alive": len(self.churn.alive), "clients_started": self.churn.count}
        published = {n: s.published for n, s in streams.items()}
        if self.last:
            t0, ticks0, published0 = self.last
            dt = t - t0
            row["cpu_pct"] = round((p["ticks"] - ticks0) / os.sysconf("SC_CLK_TCK") / dt * 100, 1)
            for name in CONFIGURED:
                if name in streams and name in published0 and dt >= 0.5:
                    row[f"{name}_fps"] = round((published[name] - published0[name]) / dt, 2)
        self.last = (t, p["ticks"], published)
        for name in CONFIGURED:
            s = streams.get(name)
            if s:
                row[f"{name}_published"] = s.published
                row[f"{name}_dropped"] = s.dropped
                row[f"{name}_subscribers"] = s.subscribers
        row["drops"] = sum(streams[n].dropped for n in CONFIGURED if n in streams)
        others = {n: s for n, s in streams.items() if n not in CONFIGURED}
        for name, (pub0, drop0) in list(self.pub_seen.items()):
            if name not in others or others[name].published < pub0:
                self.pub_drops_done += drop0
                del self.pub_seen[name]
        for name, s in others.items():
            self.pub_seen[name] = (s.published, s.dropped)
        row["pub_drops"] = self.pub_drops_done + sum(d for _, d in self.pub_seen.values())
        row["published_streams"] = len(others)
        row["published_subscribers"] = sum(s.subscribers for s in others.values())
        self.csv.writerow(row)
        self.file.flush()
        self.rows.append(row)
        return row, streams


def plot(rows, path, title, warmup, rss_limit_kb):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] / 60 for r in rows]
    fig, ax = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    for a in ax:
        a.axvspan(0, warmup / 60, color="0.9", lw=0)
        a.grid(alpha=0.3)
    first = rows[0]
    for key, label in (("rss_kb", f"VmRSS (at start {first['rss_kb']} kB)"),
                       ("rss_anon_kb", f"RssAnon, heap ({first['rss_anon_kb']} kB)"),
                       ("rss_shmem_kb", f"RssShmem, rings ({first['rss_shmem_kb']} kB)")):
        ax[0].plot(t, [r[key] - first[key] for r in rows], label=label)
    ax[0].axhline(rss_limit_kb - first["rss_kb"], color="r", ls="--", lw=1,
                  label="VmRSS limit: warm-up's highest + tolerance")
    ax[0].set_ylabel("kB since the start")
    ax[0].legend(loc="center right", fontsize=8)
    ax[0].set_title(title, fontsize=10)
    ax[1].plot(t, [r["fds"] for r in rows], label="framebusd open fds")
    ax[1].plot(t, [r["clients_alive"] for r in rows], lw=0.8, label="clients alive")
    ax[1].axhline(rows[0]["fds"], color="k", ls=":", lw=1, label="fds before the first client")
    ax[1].set_ylim(bottom=0)
    ax[1].legend(loc="center right", fontsize=8)
    for name in CONFIGURED:
        fps = [r.get(f"{name}_fps") for r in rows]
        ax[2].plot(t, [math.nan if v is None else v for v in fps], lw=0.6, label=name)
    ax[2].set_ylabel("frames/s")
    ax[2].set_ylim(0, FPS * 1.5)
    ax[2].legend(loc="lower right", fontsize=7, ncol=8)
    ax[3].plot(t, [r["drops"] for r in rows], label="configured streams")
    ax[3].plot(t, [r["pub_drops"] for r in rows], label="published streams")
    ax[3].set_ylabel("frames dropped (total)")
    ax[3].set_xlabel("minutes (grey: warm-up)")
    ax[3].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    shrink_png(path)


def shrink_png(path):
    """The same picture in a palette of 64 colours: a quarter of the bytes."""
    try:
        from PIL import Image  # python3-pil, which matplotlib needs anyway
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)


def daemon_log_counts(path):
    with open(path, errors="replace") as f:
        text = f.read()
    problems = [line for line in text.splitlines() if re.match(r"<[0-4]>", line)]
    return {
        "connections": len(re.findall(r"\bconnected \(uid", text)),
        "disconnections": len(re.findall(r"\bdisconnected: ", text)),
        "subscriptions": len(re.findall(r" subscribed to ", text)),
        "publications": len(re.findall(r": published by ", text)),
        "problems": problems,
    }


def run(a):
    minutes = a.minutes
    duration = minutes * 60
    warmup = a.warmup if a.warmup is not None else min(60.0, max(10.0, duration / 10))
    if warmup >= duration:
        sys.exit("soak: the warm-up must be shorter than the run")
    os.makedirs(a.out, exist_ok=True)
    build = os.path.abspath(a.build)
    sys.path.insert(0, os.path.join(build, "python"))
    import framebus

    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="framebus-soak-")
    socket = os.path.join(tmp, "framebus.sock")
    config = os.path.join(tmp, "framebusd.conf")
    log_path = os.path.join(a.out, "framebusd.log")
    write_config(config, socket)
    failures = []
    daemon = bus = churn = sampler = None
    stopped_cleanly = False
    # SIGTERM (scripts/soak's timeout or trap) unwinds like Ctrl-C: the
    # finally below ends every process started here.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        with open(log_path, "w") as log:
            daemon = subprocess.Popen([os.path.join(build, "daemon", "framebusd"),
                                       "--config", config], stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 10
        while not os.path.exists(socket):
            if daemon.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"soak: framebusd did not start (see {log_path})")
            time.sleep(0.05)
        bus = framebus.connect(socket, name="soak-sampler")
        deadline = time.monotonic() + 20
        while any(s.state != "running" for s in bus.streams()):
            if time.monotonic() > deadline:
                sys.exit(f"soak: not every stream runs after 20 s: {bus.streams()}")
            time.sleep(0.1)
        time.sleep(1)  # every slot of every ring written once
        churn = Churn(rng, socket, build, tmp, a.clients)
        sampler = Sampler(os.path.join(a.out, "soak.csv"), daemon.pid, bus, churn)
        print(f"soak: {minutes:g} min, 8 streams at {FPS} fps, about {a.clients} clients "
              f"at a time, seed {seed}, warm-up {warmup:g} s; outputs in {a.out}", flush=True)
        t0 = time.monotonic()
        sampler.sample(0.0, "warmup")  # before the first client
        next_sample = 1.0
        next_report = 60.0
        while True:
            now = time.monotonic() - t0
            if now >= duration:
                break
            if daemon.poll() is not None:
                failures.append(f"framebusd died (status {daemon.returncode}) at {now:.0f} s")
                break
            churn.step(now, True)
            if now >= next_sample:
                try:
                    sampler.sample(now, "warmup" if now < warmup else "main")
                except OSError:  # /proc/PID gone, or the connection reset
                    if not exited(daemon):
                        raise
                    continue  # reported at the top of the loop
                next_sample = max(next_sample + 1.0, now + 0.5)
            if now >= next_report:
                r = sampler.rows[-1]
                print(f"soak: {now / 60:.0f} min: rss {r['rss_kb']} kB, fds {r['fds']}, "
                      f"drops {r['drops']}, {churn.count} clients started", flush=True)
                next_report += 60.0
            time.sleep(max(0.0, min(0.05, next_sample - (time.monotonic() - t0))))
        end = time.monotonic() - t0
        churn.stop_all(end)
        # Settle: until the descriptors are back and nothing published or
        # subscribed is left, at least 3 s, at most 20.
        baseline = sampler.rows[0]
        settle_end = time.monotonic() + 20
        while daemon.poll() is None:
            time.sleep(1.0)
            now = time.monotonic() - t0
            try:
                row, streams = sampler.sample(now, "settle")
            except OSError:
                if not exited(daemon):
                    raise
                break
            quiet = (row["fds"] == baseline["fds"] and row["published_streams"] == 0
                     and all(s.subscribers == 0 for s in streams.values()))
            if (quiet and now - end >= 3) or time.monotonic() > settle_end:
                break
        if daemon.poll() is not None:
            if not failures:
                failures.append(f"framebusd died (status {daemon.returncode})")
        else:
            for s in streams.values():
                if s.name not in CONFIGURED:
                    failures.append(f"published stream {s.name} left over after its "
                                    f"publisher ended")
                elif s.state != "running":
                    failures.append(f"stream {s.name} is {s.state} at the end: {s.detail}")
                if s.subscribers:
                    failures.append(f"stream {s.name} still counts {s.subscribers} "
                                    f"subscribers after every client ended")
        bus.close()
        bus = None
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                rc = daemon.wait(timeout=10)
                stopped_cleanly = rc == 0
                if rc != 0:
                    failures.append(f"framebusd exited with status {rc} on SIGTERM")
            except subprocess.TimeoutExpired:
                failures.append("framebusd did not stop within 10 s of SIGTERM")
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        failures.append("interrupted")
    finally:
        # One signal was enough (timeout and scripts/soak's trap may both
        # send one): clean up without being interrupted again.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if churn:
            churn.kill_all()
        if bus:
            bus.close()
        if daemon and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if sampler:
            sampler.file.close()
        shutil.rmtree(tmp, ignore_errors=True)

    if not sampler or len(sampler.rows) < 2:
        print("soak: no samples", file=sys.stderr)
        return 1
    return report(a, sampler.rows, churn, failures, warmup, seed, stopped_cleanly, log_path)


def report(a, rows, churn, failures, warmup, seed, stopped_cleanly, log_path):
    first, last = rows[0], rows[-1]
    warm = [r for r in rows if r["t_s"] <= warmup]
    main = [r for r in rows if r["phase"] == "main"]
    rss_warm_max = max(r["rss_kb"] for r in warm)
    rss_limit = rss_warm_max + a.rss_tolerance_kb
    rss_max = max(r["rss_kb"] for r in rows)
    fds_max = max(r["fds"] for r in rows)
    drops = last["drops"] - first["drops"]
    interrupted = "interrupted" in failures  # nothing to judge: clients were still there
    if last["rss_kb"] > rss_limit and not interrupted:
        failures.append(f"RSS grew: {last['rss_kb']} kB at the end, more than the warm-up's "
                        f"highest {rss_warm_max} kB + {a.rss_tolerance_kb} kB")
    if last["fds"] != first["fds"] and not interrupted:
        failures.append(f"open descriptors: {last['fds']} at the end, {first['fds']} before "
                        f"the first client")
    # The trend after warm-up (least squares), for the record.
    slope = 0.0
    if len(main) >= 2:
        xs = [r["t_s"] / 60 for r in main]
        ys = [r["rss_kb"] for r in main]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0

    churn.classify(os.path.join(a.out, "client-errors.log"))
    outcomes = collections.Counter(c.outcome for c in churn.done)
    kinds = collections.Counter(c.kind for c in churn.done)
    by_kind = collections.defaultdict(collections.Counter)
    for c in churn.done:
        by_kind[c.kind][c.outcome] += 1
    bad = outcomes["error"] + outcomes["hung"]
    if bad and not interrupted:
        failures.append(f"{bad} clients failed unexpectedly (client-errors.log)")
    with open(os.path.join(a.out, "clients.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["n", "kind", "started_s", "ended_s", "lifetime_s", "fate", "status",
                    "outcome", "command"])
        for c in churn.done:
            w.writerow([c.n, c.kind, f"{c.started:.2f}", f"{c.ended:.2f}", f"{c.lifetime:.2f}",
                        c.fate, c.rc, c.outcome, " ".join(c.argv[1:])])
    logged = daemon_log_counts(log_path)

    # Each stream's rate after warm-up: overall, and over its slowest 10 s.
    fps = {}
    for name in CONFIGURED:
        key = f"{name}_published"
        rates = []
        j = 0
        for i, r in enumerate(main):
            while j < len(main) and main[j]["t_s"] - r["t_s"] < 10:
                j += 1
            if j == len(main):
                break
            rates.append((main[j][key] - r[key]) / (main[j]["t_s"] - r["t_s"]))
        span = main[-1]["t_s"] - main[0]["t_s"] if len(main) > 1 else 0
        mean = (main[-1][key] - main[0][key]) / span if span else 0
        fps[name] = (mean, min(rates) if rates else mean)

    lines = [
        f"soak: {a.minutes:g} min (warm-up {warmup:g} s), seed {seed}, "
        f"{churn.count} clients started, about {a.clients} at a time",
        f"  framebusd RSS: start {first['rss_kb']} kB, highest in warm-up {rss_warm_max} kB, "
        f"end {last['rss_kb']} kB, max {rss_max} kB "
        f"(limit {rss_limit} kB; after warm-up {slope:+.1f} kB/min)",
        f"    end: anon {last['rss_anon_kb']} kB, shmem {last['rss_shmem_kb']} kB, "
        f"file {last['rss_file_kb']} kB; start: anon {first['rss_anon_kb']} kB, "
        f"shmem {first['rss_shmem_kb']} kB, file {first['rss_file_kb']} kB",
        f"  framebusd fds: start {first['fds']}, end {last['fds']}, max {fds_max}; "
        f"threads {first['threads']} -> {last['threads']}",
        f"  drops: {drops} on the configured streams, {last['pub_drops']} on published ones",
        "  frames/s after warm-up (mean/slowest 10 s): " + ", ".join(
            f"{n} {m:.1f}/{lo:.1f}" for n, (m, lo) in fps.items()),
        f"  framebusd CPU: median {statistics.median(r['cpu_pct'] for r in main):.0f}% "
        f"of one core; machine load average (1 min): median "
        f"{statistics.median(r['load1'] for r in main):.1f}, max "
        f"{max(r['load1'] for r in main):.1f} on {os.cpu_count()} CPUs"
        if main else "  framebusd CPU: -",
        "  clients: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
        "  ends: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
    ]
    for kind in sorted(by_kind):
        lines.append(f"    {kind}: " + ", ".join(
            f"{k} {v}" for k, v in sorted(by_kind[kind].items())))
    lines.append(f"  framebusd log: {logged['connections']} connections, "
                 f"{logged['disconnections']} disconnections, {logged['subscriptions']} "
                 f"subscriptions, {logged['publications']} streams published, "
                 f"{len(logged['problems'])} warnings or errors")
    for line in collections.Counter(re.sub(r"\d+", "N", p) for p in logged["problems"]
                                    ).most_common(5):
        lines.append(f"    {line[1]} x {line[0]}")
    lines.append(f"  stopped on SIGTERM: {'yes' if stopped_cleanly else 'no'}")
    for f in failures:
        lines.append(f"  FAIL: {f}")
    result = "fail" if failures else "pass"
    lines.append(f"soak minutes={a.minutes:g} rss_start_kb={first['rss_kb']} "
                 f"rss_end_kb={last['rss_kb']} rss_max_kb={rss_max} fds_start={first['fds']} "
                 f"fds_end={last['fds']} fds_max={fds_max} drops={drops} "
                 f"clients={churn.count} result={result}")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "summary.txt"), "w") as f:
        f.write(text)
    title = (f"framebusd soak: {a.minutes:g} min, 8 streams at {FPS} fps, "
             f"{churn.count} clients started and ended (seed {seed})")
    try:
        plot(rows, os.path.join(a.out, "soak.png"), title, warmup, rss_limit)
    except ImportError as e:
        print(f"soak: no plot: {e}", file=sys.stderr)
    sys.stdout.write(text)
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="the soak itself")
    r.add_argument("--minutes", type=float, required=True)
    r.add_argument("--out", default=os.path.join(ROOT, "soak-out"))
    r.add_argument("--build", default=os.path.join(ROOT, "build-soak"))
    r.add_argument("--clients", type=int, default=10, help="clients alive at a time")
    r.add_argument("--seed", type=int, help="the schedule's seed (default: a random one)")
    r.add_argument("--warmup", type=float,
                   help="seconds before RSS is judged (default: a tenth of the run, 10 to 60)")
    r.add_argument("--rss-tolerance-kb", type=int, default=1024,
                   help="RSS growth over the warm-up's highest that fails (default 1024)")
    s = sub.add_parser("sub", help="a Python subscriber")
    s.add_argument("--socket", required=True)
    s.add_argument("--stream", action="append", required=True)
    s.add_argument("--mode", choices=["latest", "queue"], default="latest")
    s.add_argument("--hold", type=int, default=0, help="frames kept held (with arrays)")
    s.add_argument("--resubscribe", action="store_true", help="subscribe again half-way")
    s.add_argument("--seconds", type=float, required=True)
    p = sub.add_parser("pub", help="a Python publisher")
    p.add_argument("--socket", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--format", default="bgr24")
    p.add_argument("--policy", choices=["drop", "block"], default="drop")
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--fps", type=float, default=FPS)
    p.add_argument("--seconds", type=float, required=True)
    a = ap.parse_args()
    if a.command == "run":
        if not a.minutes > 0:
            ap.error("--minutes must be positive")
        return run(a)
    return sub_main(a) if a.command == "sub" else pub_main(a)


if __name__ == "__main__":
    sys.exit(main())
