# SPDX-License-Identifier: MIT
"""What the Python benchmarks share: a framebusd of a benchmark's own, a free
port, a process's CPU time."""
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time


@contextlib.contextmanager
def framebusd(name, streams=""):
    """Start FRAMEBUSD (default build/daemon/framebusd) on a private socket
    with streams (config sections) and yield the socket's path once it
    listens; stop it at the end.  name is the benchmark's, for its errors."""
    program = os.environ.get("FRAMEBUSD", "build/daemon/framebusd")
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
        sock = os.path.join(tmp, "fb.sock")
        conf = os.path.join(tmp, "framebusd.conf")
        with open(conf, "w") as f:
            f.write(f"[daemon]\nsocket = {sock}\n{streams}")
        daemon = subprocess.Popen([program, "--config", conf], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(sock):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"{name}: framebusd did not start")
                time.sleep(0.02)
            yield sock
        finally:
            daemon.terminate()
            daemon.wait()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """The CPU time (user + system) process pid has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
