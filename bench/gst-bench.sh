#!/usr/bin/env bash
# gst-bench: the GStreamer plugin's framebussink -> framebussrc against
# shmsink -> shmsrc (gst-plugins-bad), the same frames in the same run, on a
# framebusd of its own (bench/gst-bench.c says how it measures).
#
# usage: scripts/bench gst [gst-bench options; --help lists them]
# Last line: gst-bench p50_us_framebus=A p50_us_shm=B p50_ratio=R ... fps_ratio=F
set -euo pipefail
build=${FRAMEBUS_BUILD:-build}
work=$(mktemp -d /tmp/framebus-gst-bench-XXXXXX)
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
printf '[daemon]\n' >"$work/framebusd.conf"
"$build/daemon/framebusd" --config "$work/framebusd.conf" --socket "$work/framebus.sock" \
    >"$work/framebusd.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do
    [ -S "$work/framebus.sock" ] && break
    sleep 0.05
done
GST_PLUGIN_PATH=$build/gst GST_REGISTRY=$work/registry.bin \
    "$build/bench/gst-bench" --socket "$work/framebus.sock" "$@"
