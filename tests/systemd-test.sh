#!/usr/bin/env bash
# The systemd units and the installation, as a TAP test: the units pass
# `systemd-analyze verify`, the service's hardening keeps its exposure low,
# and `meson install` into a DESTDIR puts every file where it belongs.
# usage: systemd-test.sh BUILD_DIR
set -uo pipefail
build=$1
work=$(mktemp -d /tmp/framebus-systemd-XXXXXX)
trap 'rm -rf "$work"' EXIT
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=1; echo "not ok $n - $1"; sed 's/^/# /' "$work/out"; }

echo "TAP version 13"
echo "1..6"

# The unit as installed, but starting the daemon of this build tree.
mkdir -p "$work/units"
sed "s|^ExecStart=.*|ExecStart=$(realpath "$build/daemon/framebusd")|" \
    "$build/systemd/framebusd.service" >"$work/units/framebusd.service"
sed "s|^ExecStart=.*|ExecStart=$(realpath "$build/tools/framebus-mqtt")|" \
    "$build/systemd/framebus-mqtt.service" >"$work/units/framebus-mqtt.service"
sed "s|^ExecStart=.*|ExecStart=$(realpath "$build/tools/framebus-output")|" \
    "$build/systemd/framebus-output.service" >"$work/units/framebus-output.service"
cp "$(dirname "$0")/../systemd/framebusd.socket" "$work/units/"
sed "s|^ExecStart=[^ ]*|ExecStart=$(realpath "$build/tools/framebus-record")|" \
    "$build/systemd/framebus-record@.service" >"$work/units/framebus-record@.service"
# --man=no: the units name man pages that are built, not installed on this host.
# The template is verified as an instance of it.
if systemd-analyze verify --man=no "$work/units/framebusd.service" "$work/units/framebusd.socket" \
    "$work/units/framebus-mqtt.service" "$work/units/framebus-output.service" \
    "$work/units/framebus-record@cam0.service" >"$work/out" 2>&1 && ! grep -q . "$work/out"; then
    ok "systemd-analyze verify accepts framebusd.service, framebusd.socket, framebus-mqtt.service, framebus-output.service and framebus-record@.service"
else
    not_ok "systemd-analyze verify"
fi

# exposed UNIT LIMIT: the unit's exposure level is below LIMIT.
exposed() {
    systemd-analyze security --offline=true --no-pager "$work/units/$1" >"$work/out" 2>&1
    local level
    level=$(sed -n "s/.*Overall exposure level for $1: \([0-9.]*\).*/\1/p" "$work/out")
    if [ -n "$level" ] && awk -v l="$level" -v max="$2" 'BEGIN { exit !(l < max) }'; then
        ok "systemd-analyze security: $1 exposure $level (below $2)"
    else
        not_ok "systemd-analyze security: $1 exposure '${level:-?}'"
    fi
}
exposed framebusd.service 2.5
exposed framebus-mqtt.service 2.5
exposed framebus-output.service 2.5
# The recorder needs no network and no devices.
exposed framebus-record@cam0.service 1.5

meson install -C "$build" --no-rebuild --destdir "$work/root" >"$work/out" 2>&1
missing=()
for f in sbin/framebusd bin/framebusctl bin/framebus-record bin/framebus-mqtt bin/framebus-output include/framebus/framebus.h \
         etc/framebus/framebusd.conf etc/framebus/framebus-mqtt.conf etc/framebus/framebus-output.conf \
         lib/sysusers.d/framebus.conf lib/tmpfiles.d/framebus.conf; do
    compgen -G "$work/root/*/$f" >/dev/null || compgen -G "$work/root/*/*/$f" >/dev/null \
        || compgen -G "$work/root/$f" >/dev/null || missing+=("$f")
done
for f in framebusd.service framebusd.socket framebus-mqtt.service framebus-output.service 'framebus-record@.service' \
         'libframebus.so.0' 'pkgconfig/framebus.pc' 'gstreamer-1.0/libgstframebus.so' \
         man8/framebusd.8 man5/framebusd.conf.5 man1/framebusctl.1 man1/framebus-record.1 man1/framebus-mqtt.1 man1/framebus-output.1 \
         'framebus/__init__.py' 'framebus/_framebus.pyi' 'framebus/py.typed' \
         'framebus/_framebus.cpython-*.so'; do
    [ -n "$(find "$work/root" -path "*/$f" -print -quit)" ] || missing+=("$f")
done
if [ ${#missing[@]} -eq 0 ]; then
    ok "meson install puts the daemon, tools, library, header, pkg-config file, config, units, man pages, GStreamer plugin and Python package in place"
else
    echo "missing: ${missing[*]}" >>"$work/out"
    not_ok "meson install: missing ${missing[*]}"
fi
exit $failed
