#!/usr/bin/python3
"""Folds `perf script` output into stacks and draws a flame graph PNG with matplotlib.

Debian 12 packages no FlameGraph scripts, so this does what stackcollapse-perf.pl and
flamegraph.pl do, in one small file:

    perf script -i perf.data | bench/flame/flamegraph.py --title "serve" --out flame.png

It also prints the functions with the most samples of their own ("self") and in total, which
is what a report quotes. Frames narrower than --min-percent of all samples are not drawn (their
samples still count in their parents' width).
"""

import argparse
import collections
import re
import sys
import zlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.patches import Rectangle  # noqa: E402

OFFSET = re.compile(r"\+0x[0-9a-f]+$")


def clean(symbol: str) -> str:
    symbol = OFFSET.sub("", symbol).replace("(anonymous namespace)", "{anon}")
    # Template arguments and parameter lists make C++ names unreadable in a box.
    depth = 0
    out = []
    for c in symbol:
        if c == "<":
            if depth == 0:
                out.append("<…>")
            depth += 1
        elif c == ">" and depth > 0:
            depth -= 1
        elif depth == 0:
            out.append(c)
    symbol = "".join(out)
    paren = symbol.find("(")
    if paren > 0 and not symbol.startswith("("):
        symbol = symbol[:paren]
    return symbol or "[unknown]"


def fold(lines):
    """perf script text -> Counter of stacks (tuples, root first)."""
    stacks = collections.Counter()
    comm = None
    frames = []

    def flush():
        if comm is not None:
            stacks[tuple([comm] + list(reversed(frames)))] += 1

    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            flush()
            comm, frames = None, []
            continue
        if not line[0].isspace():
            flush()
            # "comm  pid/tid [cpu] time: period event:" ; comm may contain spaces
            comm = re.split(r"\s+\d+(/\d+)?\s", line, maxsplit=1)[0].strip() or "?"
            frames = []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        symbol = parts[1]
        dso = ""
        if symbol.endswith(")") and " (" in symbol:
            symbol, dso = symbol.rsplit(" (", 1)
            dso = dso[:-1]
        if symbol == "[unknown]" and dso:
            symbol = "[" + dso.rsplit("/", 1)[-1] + "]"
        frames.append(clean(symbol))
    flush()
    return stacks


def build_tree(stacks):
    root = {"name": "all", "value": 0, "children": {}}
    for stack, count in stacks.items():
        root["value"] += count
        node = root
        for frame in stack:
            child = node["children"].setdefault(frame, {"name": frame, "value": 0, "children": {}})
            child["value"] += count
            node = child
    return root


def colour(name):
    h = zlib.crc32(name.encode())
    return (0.85 + (h % 15) / 100.0, 0.35 + (h >> 8) % 45 / 100.0, 0.1 + (h >> 16) % 15 / 100.0)


def draw(root, out, title, min_percent, max_depth):
    total = root["value"]
    boxes = []

    def walk(node, x, depth):
        boxes.append((x, depth, node["value"], node["name"]))
        if depth >= max_depth:
            return
        offset = x
        for child in sorted(node["children"].values(), key=lambda c: c["name"]):
            if child["value"] * 100.0 / total >= min_percent:
                walk(child, offset, depth + 1)
            offset += child["value"]

    walk(root, 0, 0)
    depth_max = max(b[1] for b in boxes) + 1
    figure = plt.figure(figsize=(20, max(4, 0.22 * depth_max + 1.2)), dpi=100)
    axes = figure.add_axes([0.005, 0.01, 0.99, 0.93])
    axes.set_xlim(0, total)
    axes.set_ylim(0, depth_max)
    axes.axis("off")
    width_px = 20 * 100 * 0.99
    for x, depth, value, name in boxes:
        axes.add_patch(Rectangle((x, depth), value, 0.95, facecolor=colour(name), edgecolor="white", linewidth=0.3))
        chars = int(value / total * width_px / 6.2)
        if chars >= 4:
            label = name if len(name) <= chars else name[: chars - 1] + "…"
            axes.text(x + total * 0.001, depth + 0.45, label, fontsize=7, va="center", ha="left",
                      family="monospace", clip_on=True)
    figure.suptitle(f"{title} ({total} samples; frames under {min_percent} % not drawn)", fontsize=11)
    figure.savefig(out)


def report(stacks, top):
    total = sum(stacks.values())
    own = collections.Counter()
    inclusive = collections.Counter()
    for stack, count in stacks.items():
        own[stack[-1]] += count
        for frame in set(stack[1:]):
            inclusive[frame] += count
    print(f"samples: {total}")
    print(f"{'self %':>7}  function")
    for name, count in own.most_common(top):
        print(f"{100.0 * count / total:7.2f}  {name}")
    print(f"{'total %':>7}  function")
    for name, count in inclusive.most_common(top):
        print(f"{100.0 * count / total:7.2f}  {name}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--title", default="flame graph")
    parser.add_argument("--min-percent", type=float, default=0.3)
    parser.add_argument("--max-depth", type=int, default=60)
    parser.add_argument("--folded", help="also write the folded stacks (one 'a;b;c count' a line) here")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    stacks = fold(sys.stdin)
    if not stacks:
        sys.exit("flamegraph.py: no samples in the input")
    if args.folded:
        with open(args.folded, "w") as out:
            for stack, count in sorted(stacks.items()):
                out.write(";".join(stack) + f" {count}\n")
    draw(build_tree(stacks), args.out, args.title, args.min_percent, args.max_depth)
    report(stacks, args.top)


if __name__ == "__main__":
    main()
