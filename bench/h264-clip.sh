# SPDX-License-Identifier: MIT
# Sourced by the benchmarks that decode a camera-like file.
# shellcheck shell=bash

# h264_clip DIR FRAMES [noise]: the path of a 1920x1080 30 fps H.264 clip of
# testsrc2 in DIR, made the first time it is asked for; with "noise", grain
# in every pixel at a camera's 8 Mb/s, which costs a decoder far more.
h264_clip() {
    local dir=$1 frames=$2 noise=${3:-} file
    file=$dir/h264-1920x1080-30fps-${frames}f${noise:+-noise}.mp4
    mkdir -p "$dir"
    if [ ! -s "$file" ]; then
        echo "making $file ($frames frames of testsrc2${noise:+ with grain}, libx264)..." >&2
        # shellcheck disable=SC2086 # the noise options split on purpose
        ffmpeg -loglevel error -y -f lavfi -i "testsrc2=size=1920x1080:rate=30" \
            ${noise:+-vf noise=alls=24:allf=t -b:v 8M} -frames:v "$frames" \
            -c:v libx264 -preset veryfast -pix_fmt yuv420p "$file"
    fi
    echo "$file"
}
