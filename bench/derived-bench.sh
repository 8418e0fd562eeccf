#!/usr/bin/env bash
# derived-bench: the CPU framebusd spends on a 1920x1080 30 fps H.264 camera
# (a file paced at its own rate) plus a 640x360 rgb24 copy of it, made two
# ways: a derived stream (one decode, then a scale of each frame) against a
# second [stream] section that decodes the same input again.  Daemon CPU
# (user + system, /proc) over the same wall time; rounds interleaved;
# medians reported.
#
# usage: scripts/bench derived [--rounds N] [--seconds S] [--noise] [--scale METHOD]
#   --noise: a camera-like picture (grain and motion in every pixel, H.264 at
#   a camera's bitrate), which costs the decoder far more than testsrc2.
#   --scale: the small streams' scale key, the same for both ways
#   (bilinear, the default, fast_bilinear, area, bicubic).
# Also the derived stream's own thread's CPU per frame it made (framebusd
# names each stream's thread after it), steadier than the daemon's on a busy
# host.
# Last line: derived-bench derived_cpu_s=A two_decodes_cpu_s=B ratio=R
#   derived_thread_ms=T
set -euo pipefail
build=${FRAMEBUS_BUILD:-build}
rounds=3
seconds=10
noise=
scale=bilinear
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --noise) noise=1; shift ;;
        --scale) scale=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "derived-bench: unknown option '$1'" >&2; exit 2 ;;
    esac
done

source "$(dirname "$0")/h264-clip.sh"
if [ -n "$noise" ]; then
    file=$(h264_clip "$build/bench-data" 300 noise)
else
    file=$(h264_clip "$build/bench-data" 600)
fi
work=$(mktemp -d /tmp/framebus-derived-XXXXXX)
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

camera="url = $(realpath "$file")
loop = true
width = 1920
height = 1080
format = bgr24"
cat >"$work/derived.conf" <<CONF
[daemon]
socket = $work/fb.sock
[stream cam]
$camera
[stream cam.small]
from = cam
width = 640
height = 360
format = rgb24
scale = $scale
CONF
cat >"$work/two.conf" <<CONF
[daemon]
socket = $work/fb.sock
[stream cam]
$camera
[stream cam2]
url = $(realpath "$file")
loop = true
width = 640
height = 360
format = rgb24
scale = $scale
CONF

# thread_ticks NAME: the CPU ticks of the daemon's threads named NAME.
thread_ticks() {
    local t stat sum=0
    for t in /proc/"$daemon"/task/*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = "$1" ] || continue
        stat=$(cat "$t/stat") && stat=${stat##*) }
        sum=$((sum + $(echo "$stat" | awk '{print $12 + $13}')))
    done
    echo "$sum"
}

# published NAME: the frames stream NAME published.
published() {
    "$build/tools/framebusctl" --socket "$work/fb.sock" status --json |
        "${FRAMEBUS_PYTHON:-/usr/bin/python3}" -c "import json, sys; print(next(s['published'] for s in json.load(sys.stdin)['streams'] if s['name'] == sys.argv[1]))" "$1"
}

# cpu_seconds CONFIG [STREAM]: the daemon's CPU time over $seconds s once
# both streams run; with STREAM, its thread's ms of CPU a frame into
# $work/thread_ms.
cpu_seconds() {
    "$build/daemon/framebusd" --config "$1" >"$work/log" 2>&1 &
    daemon=$!
    for _ in $(seq 200); do
        [ "$("$build/tools/framebusctl" --socket "$work/fb.sock" status 2>/dev/null |
            grep -c ': running')" = 2 ] && break
        sleep 0.05
    done
    sleep 1
    local ticks=$(getconf CLK_TCK) a b ta tb fa fb
    if [ -n "${2:-}" ]; then
        ta=$(thread_ticks "$2")
        fa=$(published "$2")
    fi
    a=$(awk '{print $14 + $15}' /proc/$daemon/stat)
    sleep "$seconds"
    b=$(awk '{print $14 + $15}' /proc/$daemon/stat)
    if [ -n "${2:-}" ]; then
        tb=$(thread_ticks "$2")
        fb=$(published "$2")
        if [ "$fb" -gt "$fa" ]; then
            echo "scale=3; ($tb - $ta) * 1000 / $ticks / ($fb - $fa)" | bc
        else
            echo "none" # it made no frame
        fi >"$work/thread_ms"
    fi
    kill "$daemon"
    wait "$daemon" || true
    daemon=
    echo "scale=2; ($b - $a) / $ticks" | bc
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
derived=() two=() thread=()
for r in $(seq "$rounds"); do
    derived+=("$(cpu_seconds "$work/derived.conf" cam.small)")
    thread+=("$(cat "$work/thread_ms")")
    two+=("$(cpu_seconds "$work/two.conf")")
    echo "round $r: derived stream ${derived[-1]} s CPU (its thread ${thread[-1]} ms a" \
        "frame), two decodes ${two[-1]} s CPU (over $seconds s)"
done
d=$(printf '%s\n' "${derived[@]}" | median)
t=$(printf '%s\n' "${two[@]}" | median)
th=$(printf '%s\n' "${thread[@]}" | median)
input=testsrc2
[ -n "$noise" ] && input=noise
echo "derived-bench input=$input scale=$scale derived_cpu_s=$d two_decodes_cpu_s=$t" \
    "ratio=$(echo "scale=3; $d / $t" | bc) derived_thread_ms=$th"
