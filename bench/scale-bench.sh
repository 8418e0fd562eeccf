#!/usr/bin/env bash
# scale-bench: a derived stream's shrink (1920x1080 -> 640x360 rgb24,
# daemon/shrink.c) against ffmpeg -vf scale on the same raw frames: CPU time
# per frame, medians of ROUNDS, rounds interleaved.  ffmpeg's is its
# run with the scale filter less the same run without it (reading the file,
# starting up), with its default scaler (bicubic) and with bilinear; the
# faster one counts.  The frames are the camera-like clip's
# (bench/h264-clip.sh), decoded once to a raw file.
#
# usage: scripts/bench scale [--rounds N] [--frames N] [--input FORMAT]
#   --input: the frames' format, bgr24 (default: a parent's ring) or yuv420p
#   (the decoder's picture, what a derived stream of a decoding parent reads)
# Last line: scale-bench input=FORMAT framebus_fps=A ffmpeg_fps=B ratio=A/B
set -euo pipefail
build=${FRAMEBUS_BUILD:-build}
rounds=3
frames=60
input=bgr24
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --frames) frames=$2; shift 2 ;;
        --input) input=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "scale-bench: unknown option '$1'" >&2; exit 2 ;;
    esac
done

source "$(dirname "$0")/h264-clip.sh"
clip=$(h264_clip "$build/bench-data" 300 noise)
raw=$(mktemp /tmp/framebus-scale-XXXXXX.raw)
trap 'rm -f "$raw"' EXIT
ffmpeg -loglevel error -y -i "$clip" -frames:v "$frames" -f rawvideo -pix_fmt "$input" "$raw"

# ffmpeg_cpu ARGS...: user + system seconds of an ffmpeg run on the raw file
# (-benchmark says them).
ffmpeg_cpu() {
    ffmpeg -nostdin -benchmark -f rawvideo -pix_fmt "$input" -s 1920x1080 -i "$raw" "$@" \
        -f null - 2>&1 | sed -nE 's/.*bench: utime=([0-9.]+)s stime=([0-9.]+)s.*/\1 \2/p' |
        awk '{print $1 + $2}'
}

median() {
    sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'
}

ours_all=()
ffmpeg_all=()
for round in $(seq "$rounds"); do
    ours=$("$build/bench/scale-bench" "$raw" 1 "$input" | tail -1)
    bare=$(ffmpeg_cpu)
    faster=0
    for flags in bicubic bilinear; do
        cpu=$(ffmpeg_cpu -vf "scale=640:360:flags=$flags" -pix_fmt rgb24)
        fps=$(awk -v n="$frames" -v t="$cpu" -v b="$bare" 'BEGIN {printf "%.1f", n / (t - b)}')
        echo "round $round: ffmpeg -vf scale flags=$flags $fps frames/s (CPU, ${cpu}s less ${bare}s)"
        awk -v a="$fps" -v b="$faster" 'BEGIN {exit !(a > b)}' && faster=$fps
    done
    echo "round $round: framebus derived stream shrink $ours frames/s (CPU)"
    ours_all+=("$ours")
    ffmpeg_all+=("$faster")
done
ours=$(printf '%s\n' "${ours_all[@]}" | median)
theirs=$(printf '%s\n' "${ffmpeg_all[@]}" | median)
echo "scale-bench input=$input framebus_fps=$ours ffmpeg_fps=$theirs" \
    "ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN {printf "%.2f", a / b}')"
