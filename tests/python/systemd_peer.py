# SPDX-License-Identifier: MIT
"""systemd's side of a service's life, for tests and benchmarks that cannot
run systemd as PID 1: starting a service as systemd does, and the service
manager's end of $NOTIFY_SOCKET with its file-descriptor store."""
import array
import fcntl
import os
import socket
import subprocess
import time


def start_service(argv, notify_socket=None, passed=(), **popen_kw):
    """Popen argv as systemd starts a service: notify_socket becomes
    $NOTIFY_SOCKET, and passed, (name, fd) pairs, are its descriptors from 3
    on, with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (the service's own pid:
    a shell that execs it sets it)."""
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    if notify_socket:
        env["NOTIFY_SOCKET"] = notify_socket
    if passed:
        env["LISTEN_FDS"] = str(len(passed))
        env["LISTEN_FDNAMES"] = ":".join(name for name, _ in passed)
        argv = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"] + list(argv)
    fds = [fd for _, fd in passed]

    def pass_fds():
        # Out of the way first, then to 3, 4, ...: the targets may be taken
        # by the sources.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
        for i, fd in enumerate(high):
            os.dup2(fd, 3 + i)
            os.close(fd)

    return subprocess.Popen(argv, env=env, preexec_fn=pass_fds if passed else None,
                            close_fds=not passed, **popen_kw)


class FdStore:
    """The service manager's end of $NOTIFY_SOCKET with a descriptor store, as
    sd_notify(3) and sd_listen_fds(3) document it: FDSTORE=1 with FDNAME keeps
    descriptors, FDSTOREREMOVE=1 drops those of a name; Daemon.start(passed=
    store.fds) hands them to the next daemon."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.fds = []  # (name, fd), in the order they came
        self.messages = []

    def pump(self):
        """Take in every message the daemon sent so far."""
        while True:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(64 * 4))
            except BlockingIOError:
                return
            fds = array.array("i")
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            for fd in fds:  # received descriptors are inheritable: not into the daemon
                os.set_inheritable(fd, False)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)
            name = fields.get("FDNAME", "stored")
            if fields.get("FDSTORE") == "1":
                self.fds += [(name, fd) for fd in fds]
                continue
            for fd in fds:  # systemd closes descriptors it was not asked to keep
                os.close(fd)
            if fields.get("FDSTOREREMOVE") == "1":
                for kept in [k for k in self.fds if k[0] == name]:
                    os.close(kept[1])
                    self.fds.remove(kept)

    def passed(self):
        """What the next start gets: every descriptor kept so far."""
        self.pump()
        return list(self.fds)

    def names(self):
        return sorted(name for name, _ in self.passed())

    def wait_for(self, key, value, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            if any(m.get(key) == value for m in self.messages):
                return
            time.sleep(0.02)
        raise AssertionError(f"no {key}={value} from framebusd: {self.messages}")

    def forget_all(self):
        """Drop every kept descriptor, as a manager without a store does."""
        self.pump()
        for _, fd in self.fds:
            os.close(fd)
        self.fds = []

    def close(self):
        self.forget_all()
        self.sock.close()
