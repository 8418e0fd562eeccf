# SPDX-License-Identifier: MIT
"""Two hosts on one machine: a network namespace each, joined by a veth pair,
for the tests and benchmarks of what crosses hosts (test_output.py,
bench/offhost-bench.py).  Needs root; without it both hosts are loopback."""
import json
import os
import random
import subprocess


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class Hosts:
    """Host A and host B: a network namespace each, joined by a veth pair
    (10.77.N.1 and 10.77.N.2), or both on loopback where namespaces cannot
    be made."""

    def __init__(self):
        tag = f"{os.getpid() % 100000}{random.randrange(100)}"
        self.ns = {"a": f"fbA{tag}", "b": f"fbB{tag}"}
        self.veth = {"a": f"fbvA{tag}", "b": f"fbvB{tag}"}
        net = f"10.77.{random.randrange(1, 250)}"
        self.addr = {"a": f"{net}.1", "b": f"{net}.2"}
        self.isolated = True
        try:
            for h in "ab":
                ip("netns", "add", self.ns[h])
            ip("link", "add", self.veth["a"], "type", "veth", "peer", "name", self.veth["b"])
            for h in "ab":
                ip("link", "set", self.veth[h], "netns", self.ns[h])
                ip("-n", self.ns[h], "addr", "add", f"{self.addr[h]}/24", "dev", self.veth[h])
                ip("-n", self.ns[h], "link", "set", self.veth[h], "up")
                ip("-n", self.ns[h], "link", "set", "lo", "up")
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            self.close()
            self.isolated = False
            self.addr = {"a": "127.0.0.1", "b": "127.0.0.1"}
            print(f"# network namespaces unavailable ({getattr(e, 'stderr', e)!s}): "
                  "both hosts on loopback")

    def prefix(self, host):
        return ["ip", "netns", "exec", self.ns[host]] if self.isolated else []

    def link(self, up):
        """Cut the link (host A's end down: B's carrier goes too) or bring it
        back.  On loopback, the same is done to B's framebusd by the caller."""
        ip("-n", self.ns["a"], "link", "set", self.veth["a"], "up" if up else "down")

    def tx_bytes(self, host):
        """Bytes HOST has sent on its veth end so far; None on loopback."""
        if not self.isolated:
            return None
        out = ip("-j", "-s", "-n", self.ns[host], "link", "show", self.veth[host]).stdout
        return json.loads(out)[0]["stats64"]["tx"]["bytes"]

    def close(self):
        for h in "ab":
            try:
                ip("netns", "del", self.ns[h], check=False)  # its veth end goes with it
            except FileNotFoundError:
                pass
