#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The Python consumer side of bench/compare for five transports (PROTOCOL.md).

    consumer.py framebus --socket PATH          zero-copy numpy view of a ring slot
    consumer.py pipe                            frames read from stdin into one
                                                preallocated numpy buffer
    consumer.py zmq --endpoint ipc://...        SUB, recv(copy=False) + numpy.frombuffer
    consumer.py shm --name /NAME --index K      the named block (mmap + numpy.frombuffer)
                                                and this consumer's named semaphores
    consumer.py floor --name /NAME              no frame: the bare futex wake-up of this
                                                process (floor.h), through ctypes

common options: --frames N --out PATH [--sched-slice NS]
"""
import argparse
import ctypes
import errno
import mmap
import os
import resource
import sys
import time

import numpy as np

WIDTH, HEIGHT = 1920, 1080
FRAME_SIZE = WIDTH * HEIGHT * 3
IDLE_S, FIRST_S = 3.0, 15.0
clock = time.monotonic_ns


class Recorder:
    """Collects (seq, t_pub, t_recv) and touches each frame once."""

    def __init__(self, frames):
        self.records = np.zeros((frames, 3), np.uint64)
        self.n = 0
        self.touched = 0

    def frame(self, flat, t_recv):
        """flat: the frame as a flat uint8 array, in hand at t_recv."""
        seq, t_pub = flat[:16].view("<u8")
        self.touched += int(flat[::64].sum())  # every cache line, once
        return self.stamp(seq, t_pub, t_recv)

    def stamp(self, seq, t_pub, t_recv):
        self.records[self.n] = (seq, t_pub, t_recv)
        self.n += 1
        return self.n == len(self.records)

    def save(self, path):
        self.records[:self.n].astype("<u8").tofile(path)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(f"cpu={usage.ru_utime + usage.ru_stime:.3f}", flush=True)


def ready():
    print("ready", flush=True)


def run_framebus(args, rec):
    import framebus  # from PYTHONPATH: the runner points it at the build tree
    bus = framebus.connect(args.socket, name="compare-consumer")
    sub = bus.subscribe("compare", mode="queue")
    ready()
    timeout = FIRST_S
    while True:
        try:
            frame = sub.acquire(timeout=timeout)
        except (framebus.StreamEnded, TimeoutError):
            return
        with frame:
            a = frame.array
            t = clock()
            done = rec.frame(a.reshape(-1), t)
            del a
        timeout = IDLE_S
        if done:
            return


def run_pipe(args, rec):
    buf = np.empty(FRAME_SIZE, np.uint8)
    view = memoryview(buf)
    stdin = sys.stdin.buffer.raw
    ready()
    while True:
        got = 0
        while got < FRAME_SIZE:
            n = stdin.readinto(view[got:])
            if not n:
                return
            got += n
        if rec.frame(buf, clock()):
            return


def run_zmq(args, rec):
    import zmq
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 8)
    sub.connect(args.endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    ready()
    timeout = FIRST_S
    while True:
        if not sub.poll(int(timeout * 1000)):
            return
        msg = sub.recv(copy=False)
        a = np.frombuffer(msg.buffer, np.uint8)
        if rec.frame(a, clock()):
            return
        timeout = IDLE_S


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def run_shm(args, rec):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sem_open.restype = ctypes.c_void_p
    libc.sem_open.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.sem_timedwait.argtypes = [ctypes.c_void_p, ctypes.POINTER(Timespec)]
    libc.sem_post.argtypes = [ctypes.c_void_p]

    def sem(what, k):
        s = libc.sem_open(f"{args.name}-{what}{k}".encode(), 0)
        if not s:
            sys.exit(f"consumer.py: sem_open {what}{k}: {os.strerror(ctypes.get_errno())}")
        return s

    fd = os.open(f"/dev/shm{args.name}", os.O_RDONLY)
    block = mmap.mmap(fd, FRAME_SIZE, prot=mmap.PROT_READ)
    frame = np.frombuffer(block, np.uint8)
    ready_sem, done, attached = sem("ready", args.index), sem("done", 0), sem("attached", 0)
    libc.sem_post(attached)
    ready()
    timeout = FIRST_S
    while True:
        deadline = time.clock_gettime(time.CLOCK_REALTIME) + timeout
        ts = Timespec(int(deadline), int((deadline % 1) * 1e9))
        if libc.sem_timedwait(ready_sem, ctypes.byref(ts)) != 0:
            return
        full = rec.frame(frame, clock())
        libc.sem_post(done)
        if full:
            return
        timeout = IDLE_S


FUTEX_WAIT = 0
SYS_FUTEX = {"x86_64": 202, "aarch64": 98}
FLOOR_PAGE_SIZE, FLOOR_STAMPS = 4096, 64  # floor.h


def run_floor(args, rec):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.sem_open.restype = ctypes.c_void_p
    libc.sem_open.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.sem_post.argtypes = [ctypes.c_void_p]
    futex = SYS_FUTEX[os.uname().machine]
    fd = os.open(f"/dev/shm{args.name}", os.O_RDWR)
    page = mmap.mmap(fd, FLOOR_PAGE_SIZE)
    os.close(fd)
    word = ctypes.c_uint32.from_buffer(page, 0)
    addr = ctypes.c_void_p(ctypes.addressof(word))
    t_pub = np.frombuffer(page, "<u8", FLOOR_STAMPS, 8)
    attached = libc.sem_open(f"{args.name}-attached0".encode(), 0)
    if not attached:
        sys.exit(f"consumer.py: sem_open attached0: {os.strerror(ctypes.get_errno())}")
    last = word.value
    libc.sem_post(attached)
    ready()
    timeout = FIRST_S
    while True:
        ts = Timespec(int(timeout), 0)
        while word.value == last:
            if libc.syscall(futex, addr, FUTEX_WAIT, ctypes.c_uint32(last), ctypes.byref(ts),
                            None, 0) < 0 and ctypes.get_errno() == errno.ETIMEDOUT:
                return
        t = clock()
        last = word.value
        if rec.stamp(last, t_pub[last % FLOOR_STAMPS], t):
            return
        timeout = IDLE_S


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("transport", choices=["framebus", "pipe", "zmq", "shm", "floor"])
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--socket")
    ap.add_argument("--endpoint")
    ap.add_argument("--name")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--sched-slice", type=int, default=0, metavar="NS",
                    help="this thread's fair-scheduler slice (compare.py's TRANSPORT+slice)")
    args = ap.parse_args()
    if args.sched_slice:
        # framebus's helper (fb_thread_set_sched_slice()), whatever the transport.
        from framebus._framebus import _sched_slice
        if _sched_slice(args.sched_slice / 1e9) is None:
            sys.exit("consumer.py: --sched-slice: not a fair-scheduler thread")
    rec = Recorder(args.frames)
    {"framebus": run_framebus, "pipe": run_pipe, "zmq": run_zmq, "shm": run_shm,
     "floor": run_floor}[args.transport](args, rec)
    rec.save(args.out)


if __name__ == "__main__":
    main()
