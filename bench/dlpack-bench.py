#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What a DLPack export of a 1920x1080 bgr24 frame costs, per call.

One frame is held; each call makes a tensor (or array) over it and frees it
again (the deleter runs, the frame's export count goes back), CALLS calls in
a row, REPEAT times; the median of the repeats is printed:

capsule:     frame.__dlpack__() and the capsule dropped unconsumed
torch:       torch.from_dlpack(frame)
numpy:       numpy.from_dlpack(frame)
from_numpy:  torch.from_numpy(numpy.asarray(frame)), the way without DLPack

Starts its own framebusd (FRAMEBUSD, default build/daemon/framebusd).  Last
line: dlpack-bench capsule_us=.. torch_us=.. numpy_us=.. from_numpy_us=..
"""
import argparse
import statistics
import sys
import time
import warnings

import numpy as np
import torch

import framebus
from bench_daemon import framebusd


def per_call_us(fn, calls, repeat):
    runs = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter_ns() - start) / calls / 1000)
    return statistics.median(runs)


def measure(sock, args):
    bus = framebus.connect(sock, name="dlpack-bench")
    pub = bus.publish("bench", 1920, 1080, format="bgr24", slots=4)
    sub = bus.subscribe("bench")
    with pub.frame() as out:
        out.array[:] = 128
    frame = sub.acquire(timeout=2)
    ptr = frame.array.ctypes.data
    if torch.from_dlpack(frame).data_ptr() != ptr or np.from_dlpack(frame).ctypes.data != ptr:
        sys.exit("dlpack-bench: the tensor is not the frame's own memory")
    # torch.from_numpy warns once that the array is read-only.
    warnings.simplefilter("ignore", UserWarning)
    figures = {
        "capsule": lambda: frame.__dlpack__(),
        "torch": lambda: torch.from_dlpack(frame),
        "numpy": lambda: np.from_dlpack(frame),
        "from_numpy": lambda: torch.from_numpy(np.asarray(frame)),
    }
    result = {name: per_call_us(fn, args.calls, args.repeat) for name, fn in figures.items()}
    if sub.held != 1:
        sys.exit(f"dlpack-bench: {sub.held} frames held after the calls, not 1")
    frame.release()
    if sub.held != 0:
        sys.exit("dlpack-bench: an export was not given back (a deleter did not run)")
    bus.close()
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with framebusd("dlpack-bench") as sock:
        result = measure(sock, args)
    print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, numpy "
          f"{np.__version__}; {args.calls} calls, median of {args.repeat}, per call:")
    for name, us in result.items():
        print(f"  {name:<11} {us:7.2f} us")
    print("dlpack-bench " + " ".join(f"{name}_us={us:.2f}" for name, us in result.items()))


if __name__ == "__main__":
    main()
