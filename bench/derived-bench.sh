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
# Last line: derived-bench derived_cpu_s=A two_decodes_cpu_s=B ratio=R
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
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

# cpu_seconds CONFIG: the daemon's CPU time over $seconds s once both
# streams run.
cpu_seconds() {
    "$build/daemon/framebusd" --config "$1" >"$work/log" 2>&1 &
    daemon=$!
    for _ in $(seq 200); do
        [ "$("$build/tools/framebusctl" --socket "$work/fb.sock" status 2>/dev/null |
            grep -c ': running')" = 2 ] && break
        sleep 0.05
    done
    sleep 1
    local ticks=$(getconf CLK_TCK) a b
    a=$(awk '{print $14 + $15}' /proc/$daemon/stat)
    sleep "$seconds"
    b=$(awk '{print $14 + $15}' /proc/$daemon/stat)
    kill "$daemon"
    wait "$daemon" || true
    daemon=
    echo "scale=2; ($b - $a) / $ticks" | bc
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
derived=() two=()
for r in $(seq "$rounds"); do
    derived+=("$(cpu_seconds "$work/derived.conf")")
    two+=("$(cpu_seconds "$work/two.conf")")
    echo "round $r: derived stream ${derived[-1]} s CPU, two decodes ${two[-1]} s CPU" \
        "(over $seconds s)"
done
d=$(printf '%s\n' "${derived[@]}" | median)
t=$(printf '%s\n' "${two[@]}" | median)
input=testsrc2
[ -n "$noise" ] && input=noise
echo "derived-bench input=$input scale=$scale derived_cpu_s=$d two_decodes_cpu_s=$t" \
    "ratio=$(echo "scale=3; $d / $t" | bc)"
