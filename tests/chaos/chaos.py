# SPDX-License-Identifier: MIT
"""Chaos: a real framebusd with several streams, Python and C subscribers
and publishers, and SIGKILL at random moments, round after round: a client
killed (and started again), or the daemon itself (and started again).

After every round, within a deadline:
- every subscriber, old or new, gets frames again (clients connect and
  subscribe again by themselves after a daemon restart);
- every published stream is on the bus again, publishing;
- no subscription is left of a killed client, no subscriber holds more
  than its limit, and every stream goes on publishing (no slot is pinned);
- the daemon's open descriptors are back to their baseline, and its memory
  within a margin of it.

Prints TAP, one line per round, and a summary line.

    chaos.py [--rounds N] [--seed S]
Environment: FRAMEBUSD, FRAMEBUSCTL, CHAOS_CLIENT (the C client), PYTHONPATH
with the framebus package.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
from conftest import Daemon  # noqa: E402

FRAMEBUSCTL = os.environ.get("FRAMEBUSCTL", "framebusctl")
CHAOS_CLIENT = os.environ.get("CHAOS_CLIENT", "chaos-client")
PY_CLIENT = os.path.join(os.path.dirname(__file__), "chaos_client.py")

STREAMS = """
[stream cam0]
url = testsrc2=size=160x120:rate=30
input_format = lavfi
format = bgr24
slots = 4

[stream cam1]
url = testsrc=size=160x120:rate=30
input_format = lavfi
format = gray8
slots = 4
policy = block
"""

# (language, role, stream)
CLIENTS = [
    ("py", "sub", "cam0"), ("c", "sub", "cam0"), ("py", "sub", "cam1"), ("c", "sub", "cam1"),
    ("py", "pub", "py.out"), ("c", "pub", "c.out"), ("py", "sub", "c.out"),
    ("c", "sub", "py.out"),
]

SETTLE_TIMEOUT = 30  # seconds for everything to be served again after a kill
RSS_MARGIN_KB = 16 * 1024


class Client:
    """One client process and what its output says."""

    def __init__(self, daemon, lang, role, stream):
        self.lang, self.role, self.stream = lang, role, stream
        self.name = f"{lang}-{role}-{stream}"
        cmd = ([CHAOS_CLIENT] if lang == "c" else [sys.executable, PY_CLIENT])
        self.proc = subprocess.Popen(cmd + [daemon.socket, role, stream],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.count = 0  # frames read or published
        self.errors = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            word, _, rest = line.strip().partition(" ")
            if word in ("frames", "published"):
                self.count = int(rest)
            elif word == "error" or "Traceback" in line or "Error" in word:
                self.errors.append(line.strip())

    @property
    def pid(self):
        return self.proc.pid

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def daemon_fds(daemon):
    return len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))


def daemon_rss_kb(daemon):
    with open(f"/proc/{daemon.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def status(daemon):
    out = subprocess.run([FRAMEBUSCTL, "--socket", daemon.socket, "status", "--json"],
                         capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        return None
    return {s["name"]: s for s in json.loads(out.stdout)["streams"]}


def problems(daemon, clients, since, baseline_fds):
    """What is still wrong, as a list of sentences (empty: all is well)."""
    wrong = []
    for c in clients:
        if c.proc.poll() is not None:
            wrong.append(f"{c.name} exited ({c.proc.returncode}): {c.errors}")
        elif c.errors:
            wrong.append(f"{c.name}: {c.errors}")
        elif c.count < since[c] + (10 if c.role == "sub" else 30):
            wrong.append(f"{c.name} is stuck at {c.count} (was {since[c]})")
    streams = status(daemon)
    if streams is None:
        return wrong + ["framebusctl status failed"]
    live = {c.pid for c in clients}
    for c in clients:
        if c.role == "pub" and c.stream not in streams:
            wrong.append(f"{c.stream} is not published again")
    for name, s in streams.items():
        for sub in s["subscribers"]:
            pid = int(sub["client"].rsplit("[", 1)[-1].rstrip("]").split()[0])
            if pid not in live:
                wrong.append(f"{name}: a subscription of dead pid {pid} is left")
            if sub["held"] >= s["slots"]:
                wrong.append(f"{name}: {sub['client']} holds {sub['held']} slots")
        want = sum(1 for c in clients if c.role == "sub" and c.stream == name)
        if len(s["subscribers"]) != want:
            wrong.append(f"{name}: {len(s['subscribers'])} subscriptions, want {want}")
    fds = daemon_fds(daemon)
    if baseline_fds is not None and fds != baseline_fds:
        wrong.append(f"the daemon has {fds} descriptors open, baseline {baseline_fds}")
    return wrong


def settle(daemon, clients, baseline_fds):
    """Wait until nothing is wrong; the problems left at the deadline."""
    since = {c: c.count for c in clients}
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        wrong = problems(daemon, clients, since, baseline_fds)
        if not wrong or time.monotonic() > deadline:
            return wrong
        time.sleep(0.25)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"TAP version 13\n1..{args.rounds + 1}\n# seed {seed}", flush=True)

    daemon = Daemon(STREAMS)
    clients = []
    failed = 0
    kills = restarts = 0
    try:
        clients = [Client(daemon, *spec) for spec in CLIENTS]
        # The baseline: every client served, counted once things are quiet.
        wrong = settle(daemon, clients, None)
        time.sleep(1)
        baseline_fds, baseline_rss = daemon_fds(daemon), daemon_rss_kb(daemon)
        wrong = wrong or settle(daemon, clients, baseline_fds)
        print(f"{'not ok' if wrong else 'ok'} 1 - every client served at the start "
              f"(daemon: {baseline_fds} fds, {baseline_rss} kB)", flush=True)
        for w in wrong:
            print(f"# {w}")
        failed += bool(wrong)
        rss = baseline_rss
        for n in range(1, args.rounds + 1):
            time.sleep(rng.uniform(0, 1.5))  # a random moment of the streams
            if rng.random() < 0.35:
                what = "framebusd"
                daemon.kill()
                time.sleep(rng.uniform(0, 1.0))
                daemon.start()
                restarts += 1
            else:
                i = rng.randrange(len(clients))
                what = clients[i].name
                clients[i].kill()
                clients[i] = Client(daemon, clients[i].lang, clients[i].role,
                                    clients[i].stream)
                kills += 1
            wrong = settle(daemon, clients, baseline_fds)
            rss = daemon_rss_kb(daemon)
            if rss > baseline_rss + RSS_MARGIN_KB:
                wrong.append(f"the daemon's memory grew from {baseline_rss} to {rss} kB")
            print(f"{'not ok' if wrong else 'ok'} {n + 1} - round {n}: killed {what}; "
                  f"{daemon_fds(daemon)} fds, {rss} kB", flush=True)
            for w in wrong:
                print(f"# {w}", flush=True)
            failed += bool(wrong)
        print(f"# chaos rounds={args.rounds} daemon_restarts={restarts} client_kills={kills} "
              f"fds_baseline={baseline_fds} rss_baseline_kb={baseline_rss} rss_end_kb={rss} "
              f"failed={failed} seed={seed}", flush=True)
    finally:
        for c in clients:
            c.kill()
        daemon.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
