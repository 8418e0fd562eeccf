# SPDX-License-Identifier: MIT
"""Draw a trace as `framebusctl trace --json` writes it (on standard input)
into a PNG file: a waterfall of each frame's way from its capture to the
tracer, one bar per frame, one colour per hop, and beside it the median and
99th percentile of each hop.  `framebusctl trace STREAM --plot FILE.png`
runs it; it needs matplotlib (Debian's python3-matplotlib).

    python3 -m framebus.plot FILE.png < trace.json
"""
import json
import sys


def segments(frame):
    """[(name, start_ms, length_ms)] of a frame's known hops, from its first
    known point."""
    points = [(name, ns) for name, ns in frame["points"] if ns]
    if len(points) < 2:
        return []
    t0 = points[0][1]
    return [(f"{a}→{b}", (ta - t0) / 1e6, (tb - ta) / 1e6)
            for (a, ta), (b, tb) in zip(points, points[1:]) if tb >= ta]


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, len(values) * p // 100)] if values else 0.0


def draw(trace, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = trace["frames"]
    hops = []  # in path order, the first frame's first
    for frame in frames:
        for name, _, _ in segments(frame):
            if name not in hops:
                hops.append(name)
    colours = plt.get_cmap("tab10")
    fig, (waterfall, summary) = plt.subplots(
        1, 2, figsize=(13, 1.5 + 0.22 * max(len(frames), 8)),
        gridspec_kw={"width_ratios": [3, 2]})
    for y, frame in enumerate(frames):
        for name, start, length in segments(frame):
            waterfall.barh(y, length, left=start, color=colours(hops.index(name) % 10),
                           height=0.8)
    waterfall.set_yticks(range(len(frames)))
    waterfall.set_yticklabels([str(f["seq"]) for f in frames], fontsize=7)
    waterfall.invert_yaxis()
    waterfall.set_xlabel("ms since capture")
    waterfall.set_ylabel(f"frame of {trace['stream']}")
    waterfall.set_title(f"{trace['stream']}: each frame's way, from capture to the tracer")
    per_hop = {name: [length for f in frames for n, _, length in segments(f) if n == name]
               for name in hops}
    y = range(len(hops))
    summary.barh(y, [percentile(per_hop[h], 99) for h in hops], color="lightgrey",
                 label="p99")
    summary.barh(y, [percentile(per_hop[h], 50) for h in hops],
                 color=[colours(i % 10) for i in y], label="p50")
    summary.set_yticks(list(y))
    summary.set_yticklabels(hops, fontsize=8)
    summary.invert_yaxis()
    summary.set_xlabel("ms")
    summary.legend(loc="lower right")
    consumers = "; ".join(f"{c['client']}: wait {c['wait_p50_us'] / 1e3:.2f}, "
                          f"busy {c['busy_p50_us'] / 1e3:.2f} ms"
                          for c in trace.get("consumers", []))
    summary.set_title("each hop, p50 and p99" + (f"\nconsumers (p50): {consumers}"
                                                 if consumers else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    try:
        trace = json.load(sys.stdin)
    except ValueError as e:
        sys.stderr.write(f"framebus.plot: the trace is not JSON: {e}\n")
        return 1
    if not trace.get("frames"):
        sys.stderr.write("framebus.plot: the trace has no frame\n")
        return 1
    try:
        draw(trace, argv[1])
    except ImportError as e:
        sys.stderr.write(f"framebus.plot: {e} (Debian: apt install python3-matplotlib)\n")
        return 1
    except OSError as e:
        sys.stderr.write(f"framebus.plot: cannot write {argv[1]}: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
