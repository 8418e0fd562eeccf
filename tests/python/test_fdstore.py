# SPDX-License-Identifier: MIT
"""Restarts with systemd's file-descriptor store: framebusd keeps its
listening socket and its streams' frame numbers there, and the next daemon
takes them back.  The store is conftest's fd_store, the service manager's side of
the protocol."""
import os
import socket

import framebus
from conftest import Daemon, wait_running


def daemon_fds(pid):
    """What each of the daemon's descriptors is."""
    return [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]


def frames(sub, n):
    """The next n frames' (seq, discontinuity)."""
    out = []
    for frame in sub:
        out.append((frame.seq, frame.discontinuity))
        if len(out) == n:
            return out


def test_a_restart_with_the_store_keeps_the_socket_and_numbers_frames_on(fd_store):
    d = Daemon(notify_socket=fd_store.path)
    try:
        fd_store.wait_for("READY", "1")
        # Stored once bound: a crash keeps it too.
        assert fd_store.names() == ["listen"], fd_store.messages

        bus = framebus.connect(d.socket, name="pytest")
        wait_running(bus, "cam0")
        sub = bus.subscribe("cam0", mode="queue")
        before = frames(sub, 10)
        d.terminate()
        assert "kept the frame numbers of 1 streams" in d.read_log()
        assert fd_store.names() == ["listen", "state"]
        # No daemon runs, yet the socket is there and takes connections: they
        # wait in its backlog for the next daemon.
        waiting = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        waiting.connect(d.socket)
        waiting.close()

        bogus_r, bogus_w = os.pipe()
        d.start(notify_socket=fd_store.path, passed=fd_store.passed() + [("bogus", bogus_r)])
        os.close(bogus_r)
        os.close(bogus_w)
        log = d.read_log()
        assert f"listening on {d.socket} (the socket systemd passed, 'listen')" in log, log
        assert "fd store: dropping descriptor 'bogus': not one framebusd stores" in log, log
        assert "1 streams to number on" in log, log
        fd_store.wait_for("READY", "1")
        # The state was taken (it is written again at the next stop), the
        # bogus descriptor dropped; the socket stays stored.
        assert fd_store.names() == ["listen"], fd_store.messages
        assert not [f for f in daemon_fds(d.proc.pid) if "framebusd-state" in f]

        # The subscriber goes on: every frame the old daemon published (it
        # is a queue subscriber), then the new daemon's, numbered on from
        # them (it misses those published before it subscribed again), the
        # first one marked.
        after = frames(sub, 40)
        seqs = [seq for seq, _ in before + after]
        gap = next(i for i, (_, disc) in enumerate(after) if disc)
        assert seqs[:len(before) + gap] == list(range(seqs[0], seqs[0] + len(before) + gap))
        last_old = after[gap - 1][0] if gap else before[-1][0]
        d.wait_for_log(f"frames numbered on after {last_old}, the last daemon's last")
        assert after[gap][0] > last_old, (before, after)
        assert not any(disc for _, disc in after[gap + 1:])
        assert seqs[len(before) + gap:] == list(range(after[gap][0], after[-1][0] + 1))
        bus.close()
    finally:
        d.stop()


def test_a_state_framebusd_did_not_write_is_dropped_and_named(fd_store):
    bad = os.memfd_create("not-framebusd")
    os.write(bad, b"cam0\t999999\n")
    d = Daemon()
    try:
        d.terminate()
        d.start(notify_socket=fd_store.path, passed=[("state", bad)])
        os.close(bad)
        log = d.read_log()
        assert "dropping descriptor 'state': does not start with 'framebusd-state 1'" in log, log
        assert "numbered on" not in log
        fd_store.wait_for("FDSTOREREMOVE", "1")
        bus = framebus.connect(d.socket)
        wait_running(bus, "cam0")
        with bus.subscribe("cam0").acquire(timeout=10) as frame:
            assert frame.seq < 1000
        bus.close()
    finally:
        d.stop()


def test_without_a_store_the_socket_goes_with_the_daemon():
    d = Daemon()
    try:
        assert os.path.exists(d.socket)
        d.terminate()
        assert not os.path.exists(d.socket)
        assert "fd store" not in d.read_log()
    finally:
        d.stop()
