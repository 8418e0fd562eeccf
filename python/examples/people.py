#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""People detection on the bus: a detector's loop, its results and its picture.

Takes the newest frame of a stream (default street.detect: framebusd scales
the street video to 640x480 gray for it, one decode for every consumer), runs
OpenCV's HOG people detector on it (no model to download), and publishes
  - a results stream (default street.people): one JSON record per frame,
        {"people": 2, "boxes": [[x, y, w, h, score], ...], "width": 640,
         "height": 480, "detect_ms": 41.3}
    made from the frame, so its source_seq, origin and capture time say which
    picture it is about;
  - an annotated stream (default street.annotated): the frame in bgr24 with
    the boxes drawn, for framebus-record or a viewer.
Every second it prints results per second, people per frame and the capture-
to-result latency.  A source wider than --width is scaled down here first.

    python/examples/people.py [--socket PATH] [--source street.detect]
                              [--results NAME] [--annotated NAME] [--width 640]
                              [--frames N]
"""
import argparse
import json
import signal
import statistics
import sys
import time

import cv2
import numpy as np

import framebus


class Detector:
    """OpenCV's HOG people detector (Dalal and Triggs' pedestrian model,
    built into OpenCV): boxes of people at least 64x128 pixels tall in the
    picture it is given."""

    def __init__(self) -> None:
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def __call__(self, image: np.ndarray) -> list[list[float]]:
        boxes, weights = self.hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8),
                                                   scale=1.05)
        return [[int(x), int(y), int(w), int(h), round(float(s), 2)]
                for (x, y, w, h), s in zip(boxes, np.ravel(weights))]


def as_bgr(image: np.ndarray, format: str) -> np.ndarray:
    if format == "gray8":
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if format == "rgb24":
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return image


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", help="framebusd's socket (default: $FRAMEBUS_SOCKET, "
                    f"else {framebus.DEFAULT_SOCKET})")
    ap.add_argument("--source", default="street.detect",
                    help="stream to read (gray8, bgr24 or rgb24)")
    ap.add_argument("--results", default="street.people", help="results stream to publish")
    ap.add_argument("--annotated", default="street.annotated",
                    help="stream of annotated frames to publish")
    ap.add_argument("--width", type=int, default=640,
                    help="scale a wider source down to this width before detecting")
    ap.add_argument("--frames", type=int, default=0, help="stop after N frames (0: never)")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bus = framebus.connect(args.socket, name="people.py")
    sub = bus.subscribe(args.source)  # latest: a detector keeps up by skipping
    if sub.format not in ("gray8", "bgr24", "rgb24"):
        print(f"people.py: {args.source} is {sub.format}; this example reads gray8, bgr24 "
              "or rgb24", file=sys.stderr)
        return 2
    scale = min(1.0, args.width / sub.width)
    width, height = round(sub.width * scale) // 2 * 2, round(sub.height * scale) // 2 * 2
    results = bus.publish_results(args.results, meta_max=4096)
    annotated = bus.publish(args.annotated, width=width, height=height, format="bgr24",
                            slots=6, meta_max=4096)
    print(f"people.py: {args.source} {sub.width}x{sub.height} -> {args.results}, "
          f"{args.annotated} {width}x{height}", flush=True)
    detect = Detector()

    def handle(frame: framebus.Frame) -> int:
        """Detect, publish the record and the annotated frame; the number of
        people.  (A function of its own, so that no array of the frame
        outlives it: an array holds its slot, and one left in a variable of
        the loop would hold it while the next frame is taken, one hold more
        against the subscription's limit.)"""
        image = frame.array
        if scale < 1.0:
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        t0 = time.perf_counter()
        boxes = detect(image)
        record = json.dumps({"people": len(boxes), "boxes": boxes, "width": width,
                             "height": height,
                             "detect_ms": round((time.perf_counter() - t0) * 1e3, 1)},
                            separators=(",", ":"))
        results.send(record, made_from=frame)
        try:
            with annotated.frame() as out:
                out.array[:] = as_bgr(image, sub.format)
                for x, y, w, h, _ in boxes:
                    cv2.rectangle(out.array, (x, y), (x + w, y + h), (0, 255, 0), 2)
                out.made_from(frame)
                out.pts = frame.pts
                out.meta = record
        except framebus.FrameDropped:
            pass  # every slot held by slow readers: the record went out anyway
        return len(boxes)

    done = people = 0
    second = {"results": 0, "people": 0, "latency": [], "start": time.monotonic()}
    try:
        for frame in sub:
            found = handle(frame)
            done += 1
            people += found
            second["results"] += 1
            second["people"] += found
            if frame.capture_ns:
                second["latency"].append((time.monotonic_ns() - frame.capture_ns) / 1e6)
            now = time.monotonic()
            if now - second["start"] >= 1.0:
                lat = sorted(second["latency"]) or [0.0]
                print(f"people.py: {second['results'] / (now - second['start']):4.1f} "
                      f"results/s  {second['people'] / max(1, second['results']):4.1f} people "
                      f"per frame  capture-to-result p50 {statistics.median(lat):6.1f} ms  "
                      f"max {lat[-1]:6.1f} ms", flush=True)
                second = {"results": 0, "people": 0, "latency": [], "start": now}
            if args.frames and done >= args.frames:
                break
    except KeyboardInterrupt:
        pass
    except framebus.StreamRemoved as e:
        print(f"people.py: {e}", file=sys.stderr)
    finally:
        results.close()
        annotated.close()
        bus.close()
    print(f"people.py: {done} frames, {people} people found", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
