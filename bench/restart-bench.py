#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The gap a subscriber sees when framebusd restarts (systemctl restart).

Starts its own framebusd (FRAMEBUSD, default build/daemon/framebusd) with
one lavfi stream, cam0 (1280x720 bgr24 at 30 fps, the embedded default's
size), and a Python subscriber iterating over it in a thread of its own, as
an analytic would.  The daemon runs as under systemd with a file-descriptor
store (tests/python/systemd_peer.py).  Then, 2 x RUNS times, alternately
without the store (systemd drops what the daemon stores, as with
FileDescriptorStoreMax=0) and with it: SIGTERM to the daemon, wait for it to
exit, start it again.  For each restart it measures, from the SIGTERM:
stop (the old daemon gone), start (the new one listening) and gap (the first
frame of the new daemon in the subscriber's hands: it subscribes again by
itself).  The new daemon makes new rings either way (docs/daemon.md,
"Restarts"), so the gap includes opening the source and its first frame.
Last line, medians per mode:
restart-bench runs=N gap_p50_ms=X gap_store_p50_ms=Y gap_max_ms=.. gap_store_max_ms=..
  stop_p50_ms=.. start_p50_ms=.. start_store_p50_ms=.. seq_continued=yes|no
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import framebus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "python"))
from systemd_peer import FdStore, start_service  # noqa: E402

CONFIG = """[daemon]
socket = {socket}
[stream cam0]
url = testsrc2=size=1280x720:rate=30
input_format = lavfi
width = 1280
height = 720
"""


def ms(ns):
    return ns / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    framebusd = os.environ.get("FRAMEBUSD", "build/daemon/framebusd")
    with tempfile.TemporaryDirectory(prefix="restart-bench-") as tmp:
        sock = os.path.join(tmp, "fb.sock")
        conf = os.path.join(tmp, "framebusd.conf")
        log = open(os.path.join(tmp, "framebusd.log"), "w")
        with open(conf, "w") as f:
            f.write(CONFIG.format(socket=sock))

        store = FdStore(tmp)

        def start(with_store):
            passed = store.passed() if with_store else []
            if not with_store:  # what a manager without a store does
                store.forget_all()
            proc = start_service([framebusd, "--config", conf], store.path, passed,
                                 stdout=log, stderr=subprocess.STDOUT)
            while True:  # listening: a client gets its hello answered
                try:
                    framebus.connect(sock, name="probe").close()
                    return proc
                except (framebus.Error, OSError):
                    if proc.poll() is not None:
                        sys.exit("restart-bench: framebusd did not start")
                    time.sleep(0.005)

        daemon = start(False)
        frames = []  # (monotonic ns when in hand, discontinuity, seq)
        done = threading.Event()

        def subscriber():
            bus = framebus.connect(sock, name="restart-bench")
            for frame in bus.subscribe("cam0"):
                frames.append((time.monotonic_ns(), frame.discontinuity, frame.seq))
                frame.release()
                if done.is_set():
                    break
            bus.close()

        thread = threading.Thread(target=subscriber, daemon=True)
        thread.start()
        try:
            while len(frames) < 30:
                time.sleep(0.01)
            gaps = {False: [], True: []}
            starts = {False: [], True: []}
            stops, continued = [], []
            for run in range(2 * args.runs):
                with_store = run % 2 == 1
                time.sleep(0.5)
                seen = len(frames)
                t0 = time.monotonic_ns()
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=10)
                stops.append(time.monotonic_ns() - t0)
                daemon = start(with_store)
                starts[with_store].append(time.monotonic_ns() - t0)
                deadline = time.monotonic() + 20
                while not any(d for _, d, _ in frames[seen:]):
                    if time.monotonic() > deadline:
                        sys.exit("restart-bench: no frame after the restart")
                    time.sleep(0.001)
                i = next(i for i in range(seen, len(frames)) if frames[i][1])
                gaps[with_store].append(frames[i][0] - t0)
                if with_store:  # numbered on from the last daemon's frames
                    continued.append(frames[i][2] > frames[i - 1][2])
                print(f"restart {'with' if with_store else 'without'} the store: stopped in "
                      f"{ms(stops[-1]):7.1f} ms, listening after {ms(starts[with_store][-1]):7.1f}"
                      f" ms, first frame after {ms(gaps[with_store][-1]):7.1f} ms")
            done.set()
            thread.join(5)
        finally:
            daemon.terminate()
            daemon.wait()
            store.close()
            log.close()
    print(f"restart-bench runs={args.runs} "
          f"gap_p50_ms={ms(statistics.median(gaps[False])):.1f} "
          f"gap_store_p50_ms={ms(statistics.median(gaps[True])):.1f} "
          f"gap_max_ms={ms(max(gaps[False])):.1f} gap_store_max_ms={ms(max(gaps[True])):.1f} "
          f"stop_p50_ms={ms(statistics.median(stops)):.1f} "
          f"start_p50_ms={ms(statistics.median(starts[False])):.1f} "
          f"start_store_p50_ms={ms(statistics.median(starts[True])):.1f} "
          f"seq_continued={'yes' if all(continued) else 'no'}")


if __name__ == "__main__":
    main()
