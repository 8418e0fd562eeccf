#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""MQTT messages a second framebus-mqtt sustains, publisher to subscriber.

Starts its own framebusd (FRAMEBUSD, default build/daemon/framebusd), a
mosquitto broker on 127.0.0.1 (a free port, a config of its own),
framebus-mqtt (FRAMEBUS_MQTT, default build/tools/framebus-mqtt) for one
results stream, and mosquitto_sub on its result topic.  A Python publisher
sends JSON records (about 60 bytes, like a detector's boxes) into the
results stream as fast as it can for --seconds (policy block: a record waits
for framebus-mqtt rather than be lost in the ring); the subscriber counts
what arrives.  msgs_per_s is what arrived over the time between the first
and the last message; dropped is what framebus-mqtt's own queue dropped
(the broker or the subscriber slower than the stream); cpu_pct is
framebus-mqtt's CPU time over the run, in percent of one core.  Last line:
mqtt-bench msgs_per_s=X sent=N received=N dropped=N cpu_pct=Y qos=Q
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import framebus
from bench_daemon import cpu_seconds, framebusd, free_port


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--qos", type=int, default=0, choices=[0, 1, 2])
    args = ap.parse_args()
    mqtt_program = os.environ.get("FRAMEBUS_MQTT", "build/tools/framebus-mqtt")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mqtt-bench-") as tmp, \
            framebusd("mqtt-bench") as sock:
        conf = os.path.join(tmp, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"max_queued_messages 100000\n")
        broker = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        procs = [broker]
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit("mqtt-bench: mosquitto did not start")
                    time.sleep(0.05)
            bus = framebus.connect(sock, name="mqtt-bench")
            records = bus.publish_results("res", slots=64, policy="block", meta_max=256)
            mconf = os.path.join(tmp, "framebus-mqtt.conf")
            with open(mconf, "w") as f:
                f.write(f"[mqtt]\nbroker = mqtt://127.0.0.1:{port}\nprefix = bench\n"
                        f"client_id = mqtt-bench-{os.getpid()}\nqos = {args.qos}\n"
                        f"queue = 10000\nstreams = res\n")
            log_path = os.path.join(tmp, "framebus-mqtt.log")
            log = open(log_path, "w")
            mqtt = subprocess.Popen([mqtt_program, "--config", mconf, "--socket", sock],
                                    stdout=log, stderr=subprocess.STDOUT)
            procs.append(mqtt)
            sub = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", str(args.qos),
                                    "-t", "bench/#", "-F", "%t"], stdout=subprocess.PIPE,
                                   text=True)
            procs.append(sub)
            # Ready: framebus-mqtt connected and the subscriber got the
            # retained availability.
            assert sub.stdout.readline().strip() == "bench/availability"
            times = []

            def count():
                for line in sub.stdout:
                    if line.startswith("bench/res/result"):
                        times.append(time.monotonic())
            reader = threading.Thread(target=count, daemon=True)
            reader.start()

            cpu0, start = cpu_seconds(mqtt.pid), time.monotonic()
            sent = 0
            end = start + args.seconds
            while time.monotonic() < end:
                for _ in range(100):
                    records.send(json.dumps({"seq": sent, "boxes": [[10, 20, 30, 40]],
                                             "label": "person"}))
                    sent += 1
            # What is still on its way arrives, or never will.
            last = -1
            while len(times) != last:
                last = len(times)
                time.sleep(1)
            cpu = cpu_seconds(mqtt.pid) - cpu0
            records.close()
            mqtt.terminate()
            mqtt.wait(10)
            log.close()
            dropped = 0
            with open(log_path) as f:
                for line in f:
                    if line.startswith("framebus-mqtt: res:"):
                        dropped = int(line.split(" sent, ")[1].split()[0])
            received = len(times)
            if received < 2:
                sys.exit(f"mqtt-bench: {received} messages arrived")
            rate = (received - 1) / (times[-1] - times[0])
            # Its CPU from the first record sent to the last message received
            # (the second after it, waiting for more, costs it nothing).
            cpu_pct = 100 * cpu / (times[-1] - start)
            print(f"sent {sent} records in {args.seconds:.1f} s ({sent / args.seconds:.0f}/s), "
                  f"received {received} at {rate:.0f}/s, framebus-mqtt dropped {dropped}, "
                  f"CPU {cpu_pct:.0f}% of a core")
            print(f"mqtt-bench msgs_per_s={rate:.0f} sent={sent} received={received} "
                  f"dropped={dropped} cpu_pct={cpu_pct:.0f} qos={args.qos}")
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.terminate()
                    p.wait(10)


if __name__ == "__main__":
    main()
