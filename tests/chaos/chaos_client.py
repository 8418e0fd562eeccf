# SPDX-License-Identifier: MIT
"""The Python client of tests/chaos/chaos.py: subscribes to a stream (the
blocking iteration an analytic uses) or publishes one at 30 fps, and goes on
across daemon restarts by itself.  Prints the same lines as chaos-client.c.

    chaos_client.py SOCKET sub STREAM
    chaos_client.py SOCKET pub NAME
"""
import sys
import time

import framebus


def subscribe(bus, stream):
    while True:
        try:
            return bus.subscribe(stream)
        except (framebus.NoSuchStream, ConnectionError):
            time.sleep(0.1)
        except framebus.Error as e:  # a stream that is starting: its size is not known yet
            if "is starting" not in str(e):
                raise
            time.sleep(0.1)


def run_subscriber(bus, stream):
    count = 0
    while True:  # a published stream ends with its publisher: wait for it
        sub = subscribe(bus, stream)
        print("subscribed", flush=True)
        try:
            for frame in sub:
                int(frame.array.sum())  # touch the whole frame
                count += 1
                if frame.discontinuity:
                    print("subscribed", flush=True)
                if count % 10 == 0:
                    print(f"frames {count}", flush=True)
        except framebus.StreamRemoved:
            pass
        sub.close()
        print("ended", flush=True)


def run_publisher(bus, name):
    pub = bus.publish(name, width=160, height=120, format="gray8", slots=4)
    count = 0
    next_frame = time.monotonic()
    while True:
        try:
            with pub.frame() as out:
                out.array[:] = count & 0xff
                out.source_seq = count
        except framebus.FrameDropped:
            pass
        count += 1
        if count % 30 == 0:
            print(f"published {count}", flush=True)
        next_frame += 1 / 30
        time.sleep(max(0.0, next_frame - time.monotonic()))


def main():
    socket, role, stream = sys.argv[1:4]
    bus = framebus.connect(socket)
    if role == "sub":
        run_subscriber(bus, stream)
    else:
        run_publisher(bus, stream)


if __name__ == "__main__":
    main()
