#!/usr/bin/env bash
# decode-bench: framebusd decoding a 1920x1080 H.264 file as fast as it can
# into a `block` stream read by one C subscriber, against
# `ffmpeg -i FILE -pix_fmt bgr24 -f null -` on the same file, in the same run.
# Both decode and convert to BGR; three rounds, interleaved; medians reported.
#
# usage: scripts/bench decode [--rounds N] [--frames N]
# Last line: decode-bench framebus_fps=A ffmpeg_fps=B ratio=R
set -euo pipefail
build=${FRAMEBUS_BUILD:-build}
rounds=3
frames=600
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --frames) frames=$2; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "decode-bench: unknown option '$1'" >&2; exit 2 ;;
    esac
done

source "$(dirname "$0")/h264-clip.sh"
file=$(h264_clip "$build/bench-data" "$frames")

work=$(mktemp -d /tmp/framebus-decode-XXXXXX)
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
cat >"$work/framebusd.conf" <<CONF
[stream dec]
url = $(realpath "$file")
width = 1920
height = 1080
format = bgr24
policy = block
pacing = fast
loop = true
slots = 8
CONF

now() { date +%s.%N; }

ffmpeg_round() {
    local t0 t1
    t0=$(now)
    ffmpeg -loglevel error -i "$file" -pix_fmt bgr24 -f null - 
    t1=$(now)
    echo "$frames / ($t1 - $t0)" | bc -l
}

framebus_round() {
    "$build/daemon/framebusd" --config "$work/framebusd.conf" --socket "$work/sock" \
        2>"$work/framebusd.log" &
    daemon=$!
    for _ in $(seq 100); do [ -S "$work/sock" ] && break; sleep 0.05; done
    local out
    out=$("$build/bench/decode-consumer" "$work/sock" dec "$frames")
    kill "$daemon"; wait "$daemon" || true; daemon=
    echo "$out"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

ff=()
fb=()
printf '%-6s %14s %14s %8s\n' round framebus_fps ffmpeg_fps missed
for r in $(seq "$rounds"); do
    f=$(ffmpeg_round)
    read -r b missed < <(framebus_round)
    ff+=("$f")
    fb+=("$b")
    printf '%-6s %14.1f %14.1f %8s\n' "$r" "$b" "$f" "$missed"
done
fbm=$(printf '%s\n' "${fb[@]}" | median)
ffm=$(printf '%s\n' "${ff[@]}" | median)
echo "medians of $rounds rounds; $frames frames of 1920x1080 H.264 decoded to bgr24; $(nproc) cores"
printf 'decode-bench framebus_fps=%.1f ffmpeg_fps=%.1f ratio=%.3f\n' "$fbm" "$ffm" \
    "$(echo "$fbm / $ffm" | bc -l)"
