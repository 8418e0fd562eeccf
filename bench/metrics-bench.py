#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What Prometheus metrics cost with 64 streams of 16 subscribers each.

Starts its own framebusd (FRAMEBUSD, default build/daemon/framebusd) twice,
with metrics and without, interleaved ROUNDS times.  Each time one process
publishes STREAMS streams (64x64 gray8, FPS frames a second each) and SUBS
clients subscribe to every one of them (16 x 64 = 1024 subscriptions, each
reading every frame in a thread of the process).  It measures the daemon's
CPU (user + system, /proc/PID/stat) over SECONDS, and, with metrics, the time
a GET /metrics takes (20 scrapes, a second apart so that each one finds a
new page) and the page's size.  Last line, medians:
metrics-bench streams=N subscriptions=M scrape_p50_ms=X scrape_max_ms=Y bytes=B
  daemon_cpu_pct_on=A daemon_cpu_pct_off=C
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import framebus
from bench_daemon import cpu_seconds, free_port


def one_round(args, metrics):
    framebusd = os.environ.get("FRAMEBUSD", "build/daemon/framebusd")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="metrics-bench-") as tmp:
        sock = os.path.join(tmp, "fb.sock")
        conf = os.path.join(tmp, "framebusd.conf")
        with open(conf, "w") as f:
            f.write(f"[daemon]\nsocket = {sock}\nmax_clients = 64\n"
                    f"max_subscriptions_per_client = {args.streams}\n"
                    f"max_streams_per_client = {args.streams}\n")
            if metrics:
                f.write(f"metrics = 127.0.0.1:{port}\n")
        log = open(os.path.join(tmp, "log"), "w")
        daemon = subprocess.Popen([framebusd, "--config", conf], stdout=log,
                                  stderr=subprocess.STDOUT)
        stop = threading.Event()
        threads = []
        try:
            for _ in range(100):
                try:
                    framebus.connect(sock, name="probe").close()
                    break
                except (framebus.Error, OSError):
                    time.sleep(0.05)
            # A client publishes at most 16 streams (libframebus).
            pub_buses = [framebus.connect(sock, name=f"publisher{k}")
                         for k in range((args.streams + 15) // 16)]
            pubs = [pub_buses[i // 16].publish(f"s{i}", width=64, height=64, format="gray8",
                                               slots=4)
                    for i in range(args.streams)]
            buses = [framebus.connect(sock, name=f"sub{j}") for j in range(args.subs)]
            subs = [b.subscribe(f"s{i}") for b in buses for i in range(args.streams)]

            def publish():
                while not stop.is_set():
                    t = time.monotonic()
                    for p in pubs:
                        try:
                            with p.frame() as out:
                                out.array[0, 0] = 1
                        except framebus.FrameDropped:
                            pass
                    time.sleep(max(0, 1 / args.fps - (time.monotonic() - t)))

            def read(group):
                while not stop.is_set():
                    for s in group:
                        f = s.try_acquire()
                        if f is not None:
                            f.release()
                    time.sleep(0.01)

            threads = [threading.Thread(target=publish)] + [
                threading.Thread(target=read, args=(subs[k::4],)) for k in range(4)]
            for t in threads:
                t.start()
            time.sleep(2)
            c0, t0 = cpu_seconds(daemon.pid), time.monotonic()
            scrapes, size = [], 0
            while time.monotonic() - t0 < args.seconds:
                if metrics:
                    s = time.monotonic()
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                timeout=10) as r:
                        size = len(r.read())
                    scrapes.append((time.monotonic() - s) * 1e3)
                time.sleep(1)
            cpu = (cpu_seconds(daemon.pid) - c0) / (time.monotonic() - t0) * 100
        finally:
            stop.set()
            for t in threads:
                t.join(5)
            daemon.terminate()
            daemon.wait(10)
            log.close()
    return cpu, scrapes, size


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--subs", type=int, default=16)
    ap.add_argument("--fps", type=float, default=10)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    on, off, scrapes, sizes = [], [], [], []
    for r in range(args.rounds):
        cpu, s, size = one_round(args, True)
        on.append(cpu)
        scrapes += s
        sizes.append(size)
        cpu_off, _, _ = one_round(args, False)
        off.append(cpu_off)
        print(f"round {r + 1}: daemon CPU {cpu:.1f}% with metrics, {cpu_off:.1f}% without; "
              f"scrape p50 {statistics.median(s):.1f} ms, {size} bytes", flush=True)
    print(f"metrics-bench streams={args.streams} subscriptions={args.streams * args.subs} "
          f"scrape_p50_ms={statistics.median(scrapes):.1f} scrape_max_ms={max(scrapes):.1f} "
          f"bytes={int(statistics.median(sizes))} "
          f"daemon_cpu_pct_on={statistics.median(on):.1f} "
          f"daemon_cpu_pct_off={statistics.median(off):.1f}")


if __name__ == "__main__":
    sys.exit(main())
