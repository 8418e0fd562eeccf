#!/usr/bin/env bash
# record-bench: framebus-record's CPU per 1920x1080 30 fps bgr24 stream,
# three ways: libx264 veryfast (the default, fragmented MP4 with a keyframe,
# a fragment and an fsync every second), the same in one fragment (one
# keyframe, nothing synced until the end: what a plain MP4 costs), and
# --lossless (ffv1 in Matroska).  The recorder's CPU (user + system, /proc)
# over the same wall time once it runs; rounds interleaved; medians.
#
# usage: scripts/bench record [--rounds N] [--seconds S] [--noise]
#   --noise: a camera-like picture (grain in every pixel, from an H.264 clip
#   at 8 Mb/s) instead of testsrc2, which encoders find easy.
# Last line: record-bench ... x264_cpu=A onefrag_cpu=B lossless_cpu=C
#   fragment_cost=A/B (CPU seconds per second of video; *_frames: frames
#   recorded, *_skipped: frames it could not keep up with; *_full: the CPU
#   all 30 frames a second would take, *_cpu scaled by the share recorded;
#   *_mbps: the file's bit rate)
set -euo pipefail
build=${FRAMEBUS_BUILD:-build}
rounds=3
seconds=10
noise=
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --noise) noise=1; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "record-bench: unknown option '$1'" >&2; exit 2 ;;
    esac
done

if [ -n "$noise" ]; then
    source "$(dirname "$0")/h264-clip.sh"
    camera="url = $(realpath "$(h264_clip "$build/bench-data" 300 noise)")
loop = true"
else
    camera="url = testsrc2=size=1920x1080:rate=30
input_format = lavfi"
fi
work=$(mktemp -d /tmp/framebus-record-bench-XXXXXX)
daemon=
recorder=
cleanup() {
    [ -n "$recorder" ] && kill "$recorder" 2>/dev/null && wait "$recorder" 2>/dev/null
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/fb.conf" <<CONF
[daemon]
socket = $work/fb.sock
[stream cam]
$camera
width = 1920
height = 1080
format = bgr24
slots = 8
CONF
"$build/daemon/framebusd" --config "$work/fb.conf" >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 200); do
    "$build/tools/framebusctl" --socket "$work/fb.sock" status 2>/dev/null |
        grep -q ': running' && break
    sleep 0.05
done

# record MODE: "CPU-per-second skipped frames Mb/s" of one recording.
record() {
    local args=() out=$work/r.mp4 ticks a b
    case $1 in
        onefrag) args=(--fragment 3600) ;;
        lossless) args=(--lossless); out=$work/r.mkv ;;
    esac
    "$build/tools/framebus-record" --socket "$work/fb.sock" "${args[@]}" cam "$out" \
        2>"$work/record.log" &
    recorder=$!
    sleep 1
    ticks=$(getconf CLK_TCK)
    a=$(awk '{print $14 + $15}' "/proc/$recorder/stat")
    sleep "$seconds"
    b=$(awk '{print $14 + $15}' "/proc/$recorder/stat")
    kill -TERM "$recorder"
    wait "$recorder"
    recorder=
    local summary frames skipped bytes
    summary=$(grep 'stopped (' "$work/record.log")
    frames=$(sed -n 's/.*: \([0-9]*\) frames in.*/\1/p' <<<"$summary")
    skipped=$(sed -n 's/.* \([0-9]*\) skipped.*/\1/p' <<<"$summary")
    bytes=$(stat -c %s "$out")
    rm -f "$out" "${out%.*}.jsonl"
    echo "$(echo "scale=3; ($b - $a) / $ticks / $seconds" | bc) $skipped $frames" \
        "$(echo "scale=2; $bytes * 8 * 30 / $frames / 1000000" | bc)"
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
modes=(x264 onefrag lossless)
declare -A cpu skipped frames full mbps
for r in $(seq "$rounds"); do
    for m in "${modes[@]}"; do
        read -r c s n b < <(record "$m")
        f=$(echo "scale=3; $c * ($n + $s) / $n" | bc)
        cpu[$m]+="$c " skipped[$m]+="$s " frames[$m]+="$n " full[$m]+="$f " mbps[$m]+="$b "
        echo "round $r: $m ${c} s CPU per s of video, $s of $((n + s)) frames skipped" \
            "(all would take $f), $b Mb/s"
    done
done
line="record-bench input=${noise:+noise}${noise:-testsrc2} size=1920x1080 fps=30 format=bgr24"
for m in "${modes[@]}"; do
    for v in cpu skipped frames full mbps; do
        declare -n values=$v
        line+=" ${m}_$v=$(tr ' ' '\n' <<<"${values[$m]}" | grep . | median)"
    done
done
x=$(tr ' ' '\n' <<<"${cpu[x264]}" | grep . | median)
o=$(tr ' ' '\n' <<<"${cpu[onefrag]}" | grep . | median)
echo "$line fragment_cost=$(echo "scale=3; $x / $o" | bc)"
