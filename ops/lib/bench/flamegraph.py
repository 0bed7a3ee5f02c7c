"""Render folded stacks (the output of fold.py: `frame;frame;... count` per
line, root first) as a flame graph SVG: one box per frame, its width the
share of samples under it, children stacked above their parent. A small
stand-in for inferno/flamegraph.pl (no build, no extra package); hovering a
box shows its frame and share (the SVG <title>).

Usage: flamegraph.py IN.folded OUT.svg [TITLE]
"""

import html
import os
import sys

WIDTH = 1200
ROW = 16
FONT = 11
# Boxes narrower than this (pixels) are not drawn; FLAME_MIN_WIDTH raises it
# for graphs kept in the repository (docs/perf/: 2 keeps them small).
MIN_WIDTH = float(os.environ.get("FLAME_MIN_WIDTH", "0.3"))
# FLAME_SHORT=1 drops generic arguments (`<...>`) from frame names: Rust's
# async and tower frames otherwise run to kilobytes each.
SHORT = os.environ.get("FLAME_SHORT") == "1"


def short(frame):
    out, depth = [], 0
    for ch in frame:
        if ch == "<":
            if depth == 0:
                out.append("<…>")
            depth += 1
        elif ch == ">" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def load(path):
    root = {"name": "all", "count": 0, "children": {}}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            node = root
            node["count"] += n
            for frame in stack.split(";"):
                if SHORT:
                    frame = short(frame)
                child = node["children"].get(frame)
                if child is None:
                    child = {"name": frame, "count": 0, "children": {}}
                    node["children"][frame] = child
                child["count"] += n
                node = child
    return root


def depth_of(node):
    if not node["children"]:
        return 1
    return 1 + max(depth_of(c) for c in node["children"].values())


def colour(name):
    # Warm colours, stable per frame name; kernel frames bluish, Rust
    # allocator and libc frames greener, so they stand out.
    h = 0
    for ch in name:
        h = (h * 31 + ord(ch)) & 0xFFFFFFFF
    if name.startswith(("__x64", "do_syscall", "entry_SYSCALL", "tcp_", "ip_", "__tcp", "sock_")):
        return f"rgb({80 + h % 40},{120 + h % 60},{200 + h % 50})"
    if "malloc" in name or "free" in name or name.startswith("mi_"):
        return f"rgb({90 + h % 50},{190 + h % 50},{90 + h % 40})"
    return f"rgb({205 + h % 50},{90 + h % 120},{40 + h % 50})"


def render(root, title):
    total = max(root["count"], 1)
    rows = depth_of(root)
    height = (rows + 3) * ROW
    scale = WIDTH / total
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="{FONT}">',
        f'<rect width="100%" height="100%" fill="#f8f8f8"/>',
        f'<text x="{WIDTH / 2}" y="{ROW}" text-anchor="middle" font-size="{FONT + 3}">'
        f"{html.escape(title)} ({total} samples)</text>",
    ]

    def draw(node, x, level):
        w = node["count"] * scale
        if w < MIN_WIDTH:
            return
        y = height - (level + 1) * ROW
        share = 100.0 * node["count"] / total
        label = html.escape(node["name"])
        out.append(
            f'<g><title>{label} ({node["count"]} samples, {share:.2f}%)</title>'
            f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{ROW - 1}" fill="{colour(node["name"])}" rx="1"/>'
        )
        chars = int(w / (FONT * 0.62))
        if chars >= 3:
            text = node["name"] if len(node["name"]) <= chars else node["name"][: chars - 2] + ".."
            out.append(f'<text x="{x + 2:.2f}" y="{y + ROW - 4}">{html.escape(text)}</text>')
        out.append("</g>")
        cx = x
        for child in sorted(node["children"].values(), key=lambda c: c["name"]):
            draw(child, cx, level + 1)
            cx += child["count"] * scale

    draw(root, 0.0, 0)
    out.append("</svg>")
    return "\n".join(out)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    root = load(sys.argv[1])
    title = sys.argv[3] if len(sys.argv) > 3 else sys.argv[1]
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(render(root, title))


if __name__ == "__main__":
    main()
