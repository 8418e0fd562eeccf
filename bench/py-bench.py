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
         against asyncio (async for frame in sub.frames_async(), or with
         --no-slice sched_slice=None): LATENCY
         frames each way in each of LATENCY_ROUNDS rounds, the ways in turn
         (which goes first alternates), each on a subscription of its own
         whose first WARM_UP frames are not counted.  While the asyncio
         way's frames flow, a 1 ms timer on its loop notes how late each tick
         comes and, of that, how long the loop was held (late, but not
         waiting for a CPU: the thread's schedstat run delay taken off);
         then the same timer runs as long on a loop without framebus.

Starts its own framebusd (FRAMEBUSD, default build/daemon/framebusd), runs
ROUNDS rounds of BATCH frames and prints medians and p99s.  Last line:
py-bench acquire_us=X publish_us=Y blocking_p50_us=B blocking_p99_us=..
  async_p50_us=A async_p99_us=.. async_ratio_p50=A/B async_ratio_p99=..
  async_caught=N async_missed=M (asyncio frames caught on the ring's futex;
  frames that beat the loop's planned catch through the pipe)
  loop_late_p99_ms=.. loop_late_max_ms=.. loop_held_max_ms=.. (the 1 ms
  timer on the asyncio loop) bare_late_p99_ms=.. bare_late_max_ms=..
  bare_held_max_ms=.. (the same timer on a loop with no framebus on it, in
  the same rounds: what the host does to any loop)
  loop_call_max_ms=.. (the longest subscribe() or close() on the loop)
"""
import asyncio
import argparse
import os
import statistics
import sys
import time

import numpy as np

import framebus
from bench_daemon import framebusd

WARM_UP = 6  # frames of a subscription not counted: waiting already, or pace unknown


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--batch", type=int, default=50, help="frames per round (< slots)")
    ap.add_argument("--latency", type=int, default=30,
                    help="frames per way and round for the latency")
    ap.add_argument("--latency-rounds", type=int, default=10,
                    help="rounds of the latency, each way in turn")
    ap.add_argument("--no-slice", action="store_true",
                    help="frames_async(sched_slice=None): the loop thread keeps its "
                         "scheduler slice (docs/python.md, 'Event loops')")
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
    ticks = {"async": [], "bare": []}  # (late, held) per tick, seconds
    calls = []  # subscribe() and close() on the loop, seconds
    paces = []

    class CountingPace(framebus._Pace):  # frames caught on the futex, or not
        def __init__(self):
            super().__init__()
            paces.append(self)

    framebus._Pace = CountingPace

    def blocking():
        sub = bus.subscribe("live", mode="queue")
        for i, frame in enumerate(sub):
            if i >= WARM_UP:
                waits["blocking"].append(time.monotonic_ns() - frame.monotonic_ns)
            if i + 1 == WARM_UP + args.latency:
                break
        sub.close()

    async def ticker(stop, out):
        """A 1 ms timer on the same loop: how late its ticks come, and of
        that how long the loop was held rather than waiting for a CPU."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t, r = loop.time(), run_delay()
            await asyncio.sleep(0.001)
            late = loop.time() - t - 0.001
            out.append((late, max(0.0, late - (run_delay() - r))))

    async def bare(seconds):
        """The ticker alone, for as long as the asyncio way's frames flowed."""
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop, ticks["bare"]))
        await asyncio.sleep(seconds)
        stop.set()
        await tick

    async def asynchronous():
        t = time.monotonic()
        sub = bus.subscribe("live", mode="queue")
        calls.append(time.monotonic() - t)
        stop = asyncio.Event()
        tick = None
        i = 0
        options = {"sched_slice": None} if args.no_slice else {}
        async for frame in sub.frames_async(**options):
            if i >= WARM_UP:
                waits["async"].append(time.monotonic_ns() - frame.monotonic_ns)
            elif i + 1 == WARM_UP:  # from here on frames flow at the stream's pace
                tick = asyncio.create_task(ticker(stop, ticks["async"]))
                flowing = time.monotonic()
            i += 1
            if i == WARM_UP + args.latency:
                break
        stop.set()
        await tick
        t = time.monotonic()
        sub.close()
        calls.append(time.monotonic() - t)
        return t - flowing

    for r in range(args.latency_rounds):  # which way goes first alternates
        if r % 2 == 0:
            blocking()
        seconds = asyncio.run(asynchronous())
        asyncio.run(bare(seconds))
        if r % 2 == 1:
            blocking()
    bus.close()
    out = []
    for way in ("blocking", "async"):
        w = waits[way]
        p50, p99 = statistics.median(w) / 1e3, percentile(w, 99) / 1e3
        print(f"publish to frame in hand, {way:8}: p50 {p50:7.1f} us  p99 {p99:7.1f} us "
              f"({len(w)} frames at 30 fps)")
        out.append((p50, p99))
    (b50, b99), (a50, a99) = out
    caught, missed = sum(p.caught for p in paces), sum(p.missed for p in paces)
    print(f"asyncio frames caught on the futex: {caught} of {len(paces) * (WARM_UP + args.latency)}"
          f" taken; {missed} came through the pipe before the catch began")
    line = (f"blocking_p50_us={b50:.1f} blocking_p99_us={b99:.1f} async_p50_us={a50:.1f} "
            f"async_p99_us={a99:.1f} async_ratio_p50={a50 / b50:.2f} "
            f"async_ratio_p99={a99 / b99:.2f} async_caught={caught} async_missed={missed}")
    for way, name in (("async", "loop"), ("bare", "bare")):
        late = [t[0] for t in ticks[way]]
        held = max(t[1] for t in ticks[way]) * 1e3
        l99, lmax = percentile(late, 99) * 1e3, max(late) * 1e3
        print(f"a 1 ms timer on {'the asyncio loop' if way == 'async' else 'a loop without framebus'}"
              f": late by p99 {l99:.2f} ms, max {lmax:.2f} ms, held (late but not waiting "
              f"for a CPU) max {held:.2f} ms ({len(late)} ticks)")
        line += f" {name}_late_p99_ms={l99:.2f} {name}_late_max_ms={lmax:.2f} {name}_held_max_ms={held:.2f}"
    cmax = max(calls) * 1e3
    print(f"subscribe() and close() on the loop: max {cmax:.2f} ms (a round trip to framebusd)")
    return line + f" loop_call_max_ms={cmax:.2f}"


_schedstat = None


def run_delay():
    """Seconds this thread has spent waiting for a CPU (schedstat)."""
    global _schedstat
    if _schedstat is None:
        _schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    return int(os.pread(_schedstat, 64, 0).split()[1]) / 1e9


if __name__ == "__main__":
    main()
