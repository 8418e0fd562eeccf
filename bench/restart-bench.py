#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The gap a subscriber sees when framebusd restarts (systemctl restart).

Starts its own framebusd (FRAMEBUSD, default build/daemon/framebusd) with
one lavfi stream, cam0 (1280x720 bgr24 at 30 fps, the embedded default's
size), and a Python subscriber iterating over it in a thread of its own, as
an analytic would.  Then, RUNS times: SIGTERM to the daemon, wait for it to
exit, start it again.  For each restart it measures, from the SIGTERM:
stop (the old daemon gone), start (the new one listening) and gap (the first
frame of the new daemon in the subscriber's hands: it subscribes again by
itself).  Without systemd's fd store the new daemon makes new rings, so the
gap includes opening the source and its first frame.  Last line:
restart-bench runs=N store=no gap_p50_ms=X gap_max_ms=Y stop_p50_ms=S start_p50_ms=T
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

        def start():
            proc = subprocess.Popen([framebusd, "--config", conf], stdout=log,
                                    stderr=subprocess.STDOUT)
            while True:  # listening: a client gets its hello answered
                try:
                    framebus.connect(sock, name="probe").close()
                    return proc
                except (framebus.Error, OSError):
                    if proc.poll() is not None:
                        sys.exit("restart-bench: framebusd did not start")
                    time.sleep(0.005)

        daemon = start()
        frames = []  # (monotonic ns when in hand, discontinuity)
        done = threading.Event()

        def subscriber():
            bus = framebus.connect(sock, name="restart-bench")
            for frame in bus.subscribe("cam0"):
                frames.append((time.monotonic_ns(), frame.discontinuity))
                frame.release()
                if done.is_set():
                    break
            bus.close()

        thread = threading.Thread(target=subscriber, daemon=True)
        thread.start()
        try:
            while len(frames) < 30:
                time.sleep(0.01)
            gaps, stops, starts = [], [], []
            for _ in range(args.runs):
                time.sleep(0.5)
                seen = len(frames)
                t0 = time.monotonic_ns()
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=10)
                stops.append(time.monotonic_ns() - t0)
                daemon = start()
                starts.append(time.monotonic_ns() - t0)
                deadline = time.monotonic() + 20
                while not any(d for _, d in frames[seen:]):
                    if time.monotonic() > deadline:
                        sys.exit("restart-bench: no frame after the restart")
                    time.sleep(0.001)
                first = next(t for t, d in frames[seen:] if d)
                gaps.append(first - t0)
                print(f"restart: stopped in {ms(stops[-1]):7.1f} ms, listening after "
                      f"{ms(starts[-1]):7.1f} ms, first frame after {ms(gaps[-1]):7.1f} ms")
            done.set()
            thread.join(5)
        finally:
            daemon.terminate()
            daemon.wait()
            log.close()
    print(f"restart-bench runs={args.runs} store=no "
          f"gap_p50_ms={ms(statistics.median(gaps)):.1f} gap_max_ms={ms(max(gaps)):.1f} "
          f"stop_p50_ms={ms(statistics.median(stops)):.1f} "
          f"start_p50_ms={ms(statistics.median(starts)):.1f}")


if __name__ == "__main__":
    main()
