# SPDX-License-Identifier: MIT
# Sourced by bench/e2e/e2e.py's caller or run: the clips the e2e cameras serve.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

# e2e_clip DIR WIDTH HEIGHT SECONDS: the path of a WIDTHxHEIGHT 30 fps H.264
# clip in DIR, made (and cached) the first time it is asked for: testsrc2
# with camera-like grain in every pixel, then the frame's index burned into
# its top-left corner as a row of 32 16x16 blocks (16 bits, least
# significant first, white for 1, then the same 16 bits inverted, so a
# reader can tell a good read from a damaged one).  Encoded as IP cameras
# send H.264 (fb_camera_clip, scripts/lib.sh), at such a camera's bit rate
# (4 Mb/s at 720p, 8 at 1080p).
e2e_clip() {
    local dir=$1 w=$2 h=$3 secs=$4 file
    file=$dir/e2e-${w}x${h}-30fps-${secs}s.mp4
    if [ ! -s "$file" ]; then
        echo "making $file ($secs s of testsrc2 with grain and burned-in frame numbers, libx264)..." >&2
        local bits="255*if(lt(X,256),mod(floor(N/pow(2,floor(X/16))),2),1-mod(floor(N/pow(2,floor((X-256)/16))),2))"
        fb_camera_clip "$file" 30 "$((w * h >= 1920 * 1080 ? 8 : 4))M" \
            -f lavfi -i "testsrc2=size=${w}x${h}:rate=30" \
            -f lavfi -i "color=black:size=512x16:rate=30" \
            -filter_complex "[0:v]noise=alls=24:allf=t[bg];[1:v]format=gray,geq=lum='$bits'[bits];[bg][bits]overlay=0:0:shortest=1,format=yuv420p" \
            -t "$secs"
    fi
    echo "$file"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    e2e_clip "$@"
fi
