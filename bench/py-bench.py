#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Python per-frame costs on 1920x1080 bgr24 frames.

acquire: Subscriber.acquire() + numpy.asarray(frame) + release, per frame,
         with the frame already published (what the binding costs, not the
         wait for the next frame).
publish: Publisher.frame() + setting source_seq + publishing (the with block),
         per frame, without writing pixels (that is the user's own work).

latency: from framebusd's publish of a frame of a 30 fps stream (lavfi) to
         the frame in a queue subscriber's hands, blocking (for frame in sub)
         against asyncio (async for frame in sub.frames_async()), LATENCY
         frames each way, interleaved in 3 rounds.

Starts its own framebusd (FRAMEBUSD, default build/daemon/framebusd), runs
ROUNDS rounds of BATCH frames and prints medians and p99s.  Last line:
py-bench acquire_us=X publish_us=Y blocking_p50_us=B blocking_p99_us=..
  async_p50_us=A async_p99_us=.. async_ratio_p50=A/B async_ratio_p99=..
  loop_late_p99_ms=.. loop_late_max_ms=.. (a 1 ms timer on the asyncio loop)
  bare_late_p99_ms=.. bare_late_max_ms=.. (the same timer on a loop with no
  framebus on it, in the same rounds: what the host does to any loop)
"""
import asyncio
import argparse
import statistics
import sys
import time

import numpy as np

import framebus
from bench_daemon import framebusd


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--batch", type=int, default=50, help="frames per round (< slots)")
    ap.add_argument("--latency", type=int, default=150,
                    help="frames per way and round for the latency")
    args = ap.parse_args()
    live = ("[stream live]\nurl = testsrc2=size=320x240:rate=30\ninput_format = lavfi\n"
            "format = gray8\nslots = 8\n")
    with framebusd("py-bench", live) as sock:
        costs = run(sock, args)
        waits = latency(sock, args)
        print(f"py-bench {costs} {waits}")


def run(sock, args):
    bus = framebus.connect(sock, name="py-bench")
    pub = bus.publish("bench", 1920, 1080, format="bgr24", slots=args.batch + 2,
                      policy="block")
    sub = bus.subscribe("bench", mode="queue")
    with pub.frame() as out:  # the pages are touched once, as a camera would
        out.array[:] = 128
    sub.acquire().release()
    clock = time.perf_counter_ns
    acquire_ns, publish_ns = [], []
    for _ in range(args.rounds):
        for i in range(args.batch):
            t0 = clock()
            with pub.frame() as out:
                out.source_seq = i
            publish_ns.append(clock() - t0)
        for _ in range(args.batch):
            t0 = clock()
            frame = sub.acquire()
            a = np.asarray(frame)
            frame.release()
            del a
            acquire_ns.append(clock() - t0)
        assert sub.held == 0
    pub.close()
    bus.close()
    a50, a99 = statistics.median(acquire_ns) / 1e3, percentile(acquire_ns, 99) / 1e3
    p50, p99 = statistics.median(publish_ns) / 1e3, percentile(publish_ns, 99) / 1e3
    n = len(acquire_ns)
    print(f"{n} frames of 1920x1080 bgr24, Python {sys.version.split()[0]}, "
          f"numpy {np.__version__}")
    print(f"acquire + numpy.asarray + release: p50 {a50:.2f} us  p99 {a99:.2f} us")
    print(f"publish (frame() + with block):    p50 {p50:.2f} us  p99 {p99:.2f} us")
    return f"acquire_us={a50:.2f} publish_us={p50:.2f}"


def latency(sock, args):
    """Publish-to-hand latency of 'live', blocking against asyncio."""
    bus = framebus.connect(sock, name="py-bench-latency")
    deadline = time.monotonic() + 10
    while bus.stream("live").state != "running":
        if time.monotonic() > deadline:
            sys.exit("py-bench: the live stream did not start")
        time.sleep(0.05)
    waits = {"blocking": [], "async": []}

    def blocking():
        sub = bus.subscribe("live", mode="queue")
        for i, frame in enumerate(sub):
            waits["blocking"].append(time.monotonic_ns() - frame.monotonic_ns)
            if i + 1 == args.latency:
                break
        sub.close()

    async def ticker(stop, lateness):
        """A 1 ms timer on the same loop: how late its ticks come."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.001)
            lateness.append(loop.time() - t - 0.001)

    async def bare(seconds):
        """The ticker alone, for as long as the asyncio way took."""
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop, bare_lateness))
        await asyncio.sleep(seconds)
        stop.set()
        await tick

    async def asynchronous():
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop, lateness))
        sub = bus.subscribe("live", mode="queue")
        i = 0
        async for frame in sub.frames_async():
            waits["async"].append(time.monotonic_ns() - frame.monotonic_ns)
            i += 1
            if i == args.latency:
                break
        sub.close()
        stop.set()
        await tick

    lateness, bare_lateness = [], []

    for _ in range(3):
        blocking()
        t = time.monotonic()
        asyncio.run(asynchronous())
        asyncio.run(bare(time.monotonic() - t))
    bus.close()
    out = []
    for way in ("blocking", "async"):
        w = waits[way][5:]  # a subscription's first frames were waiting already
        p50, p99 = statistics.median(w) / 1e3, percentile(w, 99) / 1e3
        print(f"publish to frame in hand, {way:8}: p50 {p50:7.1f} us  p99 {p99:7.1f} us "
              f"({len(w)} frames at 30 fps)")
        out.append((p50, p99))
    (b50, b99), (a50, a99) = out
    l99, lmax = percentile(lateness, 99) * 1e3, max(lateness) * 1e3
    print(f"a 1 ms timer on the asyncio loop meanwhile: late by p99 {l99:.2f} ms, "
          f"max {lmax:.2f} ms ({len(lateness)} ticks)")
    c99, cmax = percentile(bare_lateness, 99) * 1e3, max(bare_lateness) * 1e3
    print(f"the same timer on a loop without framebus:  late by p99 {c99:.2f} ms, "
          f"max {cmax:.2f} ms ({len(bare_lateness)} ticks)")
    return (f"blocking_p50_us={b50:.1f} blocking_p99_us={b99:.1f} async_p50_us={a50:.1f} "
            f"async_p99_us={a99:.1f} async_ratio_p50={a50 / b50:.2f} "
            f"async_ratio_p99={a99 / b99:.2f} loop_late_p99_ms={l99:.2f} "
            f"loop_late_max_ms={lmax:.2f} bare_late_p99_ms={c99:.2f} "
            f"bare_late_max_ms={cmax:.2f}")


if __name__ == "__main__":
    main()
