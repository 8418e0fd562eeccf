# Sourced by the scripts in this folder: what they share.
# shellcheck shell=bash

FRAMEBUS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The interpreter the Python package is built and tested for: Debian's, which
# has numpy, OpenCV and pytest (another python3 may come first on PATH).
FRAMEBUS_PYTHON=${FRAMEBUS_PYTHON:-/usr/bin/python3}

# Debian packages the build, the tests and the benchmarks need.
FRAMEBUS_PACKAGES=(
    meson ninja-build pkg-config gcc g++ libc6-dev
    libuv1-dev libsystemd-dev libinih-dev libmicrohttpd-dev
    libavcodec-dev libavformat-dev libavdevice-dev libavutil-dev libswscale-dev
    libcriterion-dev
    python3 python3-dev python3-numpy python3-pytest python3-opencv python3-mesonpy python3-pip
    ffmpeg bc systemd procps scdoc valgrind
    # framebusctl top, read from a terminal by tests/python/test_top.py
    tmux
    # the scraper of framebusd's metrics in tests/python/test_metrics.py
    prometheus
    # framebusctl trace --plot (python/framebus/plot.py)
    python3-matplotlib
    # OpenCV's pedestrian video (vtest.avi) for python/examples/people.py in
    # scripts/demo and tests/python/test_people.py
    opencv-doc
    # frames as DLPack tensors, tests/python/test_dlpack.py and scripts/bench dlpack
    python3-torch
    # scripts/rtsp-camera.py, the RTSP camera of scripts/demo and the tests
    # (its H.264 and H.265 cameras: h264parse, h265parse from plugins-bad;
    # the clips are encoded by ffmpeg's libx264 and libx265)
    python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad
    # the GStreamer plugin (gst/) and its tests: gst-check, gst-launch-1.0
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
    gstreamer1.0-plugins-base
    # framebus-mqtt (libmosquitto), and the broker, mosquitto_sub and the TLS
    # test's certificates of tests/python/test_mqtt.py
    libmosquitto-dev mosquitto mosquitto-clients openssl
)

# What scripts/bench compare and e2e run framebus against (bench/compare/, bench/e2e/),
# and the RTSP camera of e2e and offhost (bench/e2e/camera.py: h264parse, GstApp).
FRAMEBUS_BENCH_PACKAGES=(
    libzmq3-dev python3-zmq
    gstreamer1.0-plugins-bad python3-gst-1.0
    gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
    iceoryx libiceoryx-binding-c-dev cmake python3-matplotlib
    # scripts/bench e2e: GStreamer's FFmpeg decoders (avdec_h264) for its
    # uridecodebin consumers
    gstreamer1.0-libav
)

# Install whatever of FRAMEBUS_PACKAGES (and of the lists named as arguments)
# is missing; silent when nothing is.
fb_install_deps() {
    local missing=() p list all=("${FRAMEBUS_PACKAGES[@]}")
    for list in "$@"; do
        local -n more=$list
        all+=("${more[@]}")
    done
    for p in "${all[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
            || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    echo "framebus: installing ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# fb_camera_clip FILE FPS BITRATE FFMPEG_INPUT_ARGS...: make FILE (once: a
# FILE already there is kept) from what ffmpeg's input arguments give, encoded
# as an IP camera sends H.264: no B-frames (the order of access units is the
# order of pictures), a keyframe every second, 4:2:0, at a camera's bit rate;
# an .mp4 that scripts/rtsp-camera.py --clip serves (bench/e2e/clip.sh makes
# the e2e cameras' clips with it, scripts/demo its street camera's).
fb_camera_clip() {
    local file=$1 fps=$2 rate=$3
    shift 3
    [ -s "$file" ] && return 0
    mkdir -p "$(dirname "$file")"
    ffmpeg -loglevel error -y "$@" -pix_fmt yuv420p -c:v libx264 -preset veryfast -bf 0 \
        -g "$fps" -b:v "$rate" -maxrate "$rate" -bufsize "$rate" -movflags +faststart \
        "$file.tmp.mp4"
    mv "$file.tmp.mp4" "$file"
}

# fb_build DIR [meson options...]: configure DIR if needed (again if the
# options changed) and build it.
fb_build() {
    local dir=$1
    shift
    set -- -Dpython="$FRAMEBUS_PYTHON" "$@"
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1
    else
        rm -rf "$dir"
        meson setup "$dir" "$@" >"$dir.setup.log" 2>&1
    fi || { cat "$dir.setup.log" >&2; return 1; }
    rm -f "$dir.setup.log"
    meson compile -C "$dir" >/dev/null || meson compile -C "$dir"
}
