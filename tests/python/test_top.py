# SPDX-License-Identifier: MIT
"""What each subscriber does with its frames, as framebusd sees it without
the subscriber's help (wait: publish to acquire; busy: acquire to release),
rates over fixed windows, and framebusctl top on a real terminal (tmux)."""
import json
import subprocess
import time

import pytest

import framebus
from conftest import FRAMEBUSCTL, wait_running


def status(daemon):
    out = subprocess.run([FRAMEBUSCTL, "--socket", daemon.socket, "status", "--json"],
                         check=True, capture_output=True, text=True, timeout=10).stdout
    return {s["name"]: s for s in json.loads(out)["streams"]}


def test_a_subscribers_wait_and_busy_times_are_measured_for_it(daemon, slow_subscriber):
    time.sleep(3)
    cam0 = status(daemon)["cam0"]
    [sub] = [s for s in cam0["subscribers"] if s["client"].startswith("slowpoke")]
    # It keeps each frame 20 ms (buckets are half octaves: 16.4 to 24.6 ms).
    assert 15000 <= sub["busy_p50_us"] <= 25000, sub
    assert sub["busy_p99_us"] < 50000, sub
    # A 30 fps stream it keeps up with: each frame is in its hands at once.
    assert sub["wait_p50_us"] < 10000, sub
    assert sub["frames"] >= 60
    # One look, and the rates are those of the last second and 10 s, not 0.
    assert 25 <= sub["fps"] <= 35 and 25 <= sub["fps_10s"] <= 35, sub
    assert 25 <= cam0["fps"] <= 35 and 25 <= cam0["fps_10s"] <= 35, cam0
    # A test pattern is read one frame ahead of its due time.
    assert 0 < cam0["capture_latency_us"] < 100000, cam0
    assert cam0["capture_age_us"] >= cam0["capture_latency_us"], cam0


def test_top_shows_streams_and_subscribers_on_a_terminal(daemon, slow_subscriber, tmp_path):
    session = f"fbtop{id(tmp_path) % 100000}"
    tmux = ["tmux", "-L", session]
    subprocess.run(tmux + ["new-session", "-d", "-s", session, "-x", "140", "-y", "30",
                           FRAMEBUSCTL, "--socket", daemon.socket, "top", "--interval", "0.5"],
                   check=True, timeout=10)
    try:
        deadline = time.monotonic() + 10
        screen = ""
        while time.monotonic() < deadline:
            time.sleep(0.5)
            screen = subprocess.run(tmux + ["capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True, timeout=10).stdout
            if "slowpoke" in screen and " 0.0/0.0" not in screen:
                break
        assert "framebus top" in screen and "1 streams, 1 subscribers" in screen, screen
        row = next(line for line in screen.splitlines() if line.startswith("cam0 "))
        assert "running" in row, screen
        assert "slowpoke" in screen and "queue" in screen, screen
        # 'q' quits, and gives the terminal back (the session ends with it).
        subprocess.run(tmux + ["send-keys", "-t", session, "q"], check=True, timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if subprocess.run(tmux + ["has-session", "-t", session],
                              capture_output=True).returncode != 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("framebusctl top did not quit on 'q'")
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)


def test_top_once_and_json_are_for_scripts(daemon, slow_subscriber):
    time.sleep(1.5)
    once = subprocess.run([FRAMEBUSCTL, "--socket", daemon.socket, "top", "--once"],
                          check=True, capture_output=True, text=True, timeout=10).stdout
    assert "\033[" not in once and "slowpoke" in once and "cam0" in once, once
    doc = json.loads(subprocess.run([FRAMEBUSCTL, "--socket", daemon.socket, "top", "--json"],
                                    check=True, capture_output=True, text=True,
                                    timeout=10).stdout)
    assert doc["streams"][0]["subscribers"][0]["busy_p50_us"] > 0
    bad = subprocess.run([FRAMEBUSCTL, "--socket", daemon.socket, "top", "--interval", "0"],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "--interval 0: at least 0.1 s" in bad.stderr
