# SPDX-License-Identifier: MIT
# Sourced by bench/e2e/e2e.py's caller or run: the clips the e2e cameras serve.
# shellcheck shell=bash

# e2e_clip DIR WIDTH HEIGHT SECONDS: the path of a WIDTHxHEIGHT 30 fps H.264
# clip in DIR, made (and cached) the first time it is asked for: testsrc2
# with camera-like grain in every pixel, then the frame's index burned into
# its top-left corner as a row of 32 16x16 blocks (16 bits, least
# significant first, white for 1, then the same 16 bits inverted, so a
# reader can tell a good read from a damaged one).  No B-frames (the order
# of access units is the order of pictures) and a keyframe every second, as
# IP cameras send; the bit rate of such a camera (4 Mb/s at 720p, 8 at 1080p).
e2e_clip() {
    local dir=$1 w=$2 h=$3 secs=$4 file rate
    file=$dir/e2e-${w}x${h}-30fps-${secs}s.mp4
    rate=$((w * h >= 1920 * 1080 ? 8 : 4))M
    mkdir -p "$dir"
    if [ ! -s "$file" ]; then
        echo "making $file ($secs s of testsrc2 with grain and burned-in frame numbers, libx264)..." >&2
        local bits="255*if(lt(X,256),mod(floor(N/pow(2,floor(X/16))),2),1-mod(floor(N/pow(2,floor((X-256)/16))),2))"
        ffmpeg -loglevel error -y \
            -f lavfi -i "testsrc2=size=${w}x${h}:rate=30" \
            -f lavfi -i "color=black:size=512x16:rate=30" \
            -filter_complex "[0:v]noise=alls=24:allf=t[bg];[1:v]format=gray,geq=lum='$bits'[bits];[bg][bits]overlay=0:0:shortest=1,format=yuv420p" \
            -t "$secs" -c:v libx264 -preset veryfast -bf 0 -g 30 -b:v "$rate" \
            -maxrate "$rate" -bufsize "$rate" -movflags +faststart "$file.tmp.mp4"
        mv "$file.tmp.mp4" "$file"
    fi
    echo "$file"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    e2e_clip "$@"
fi
