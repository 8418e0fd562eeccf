#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The seeds' scenario done right: C captures, Python processes, C takes the result.

Subscribes to a stream (default cam0), converts each frame to gray with OpenCV
straight into a slot of a stream it publishes (default cam0.gray), sets
source_seq to the frame it came from and attaches a small JSON result (the
mean brightness and how long the processing took).  No copies besides the
conversion itself, no "press Enter" synchronisation: frames arrive as
zero-copy numpy views and leave as slots of a ring other processes read.

    python/examples/gray.py [--socket PATH] [--source cam0] [--output cam0.gray]
                            [--frames N] [--policy drop|block]
"""
import argparse
import json
import signal
import sys
import time

import cv2

import framebus


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", help="framebusd's socket (default: $FRAMEBUS_SOCKET, "
                    f"else {framebus.DEFAULT_SOCKET})")
    ap.add_argument("--source", default="cam0", help="stream to read (bgr24)")
    ap.add_argument("--output", help="stream to publish (default: SOURCE.gray)")
    ap.add_argument("--mode", default="queue", choices=["queue", "latest"],
                    help="queue: every frame in order; latest: skip to the newest")
    ap.add_argument("--policy", default="drop", choices=["drop", "block"],
                    help="block: wait for lossless readers of the output (a recorder)")
    ap.add_argument("--frames", type=int, default=0, help="stop after N frames (0: never)")
    args = ap.parse_args()
    output = args.output or f"{args.source}.gray"

    # SIGTERM ends the loop like Ctrl-C does, so the output stream ends cleanly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bus = framebus.connect(args.socket, name="gray.py")
    sub = bus.subscribe(args.source, mode=args.mode)
    if sub.format != "bgr24":
        print(f"gray.py: {args.source} is {sub.format}, this example reads bgr24",
              file=sys.stderr)
        return 2
    pub = bus.publish(output, width=sub.width, height=sub.height, format="gray8",
                      slots=8, policy=args.policy, meta_max=256)
    print(f"gray.py: {args.source} {sub.width}x{sub.height} -> {output}", flush=True)
    done = dropped = 0
    try:
        for frame in sub:
            t0 = time.perf_counter()
            try:
                with pub.frame(timeout=5) as out:
                    cv2.cvtColor(frame.array, cv2.COLOR_BGR2GRAY, dst=out.array)
                    out.made_from(frame)  # source_seq, capture time, hops
                    out.pts = frame.pts
                    result = {"mean": round(float(cv2.mean(out.array)[0]), 2),
                              "process_us": round((time.perf_counter() - t0) * 1e6)}
                    out.meta = json.dumps(result, separators=(",", ":"))
            except framebus.FrameDropped:
                dropped += 1  # every slot of the output held by slow readers
            done += 1
            if args.frames and done >= args.frames:
                break
    except KeyboardInterrupt:
        pass
    except framebus.StreamRemoved as e:
        print(f"gray.py: {e}", file=sys.stderr)
    finally:
        pub.close()  # readers of the output see the end of the stream
        bus.close()
    print(f"gray.py: {done} frames processed, {dropped} dropped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
