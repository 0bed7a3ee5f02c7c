"""Fold `perf script` output into one line per distinct stack (root first,
frames joined by ';', then the sample count), the input format of
flamegraph tools, and print a summary: the top self frames and the top
folded stacks. Usage: perf script -i X.data | fold.py OUT.folded [TOP]."""

import collections
import re
import sys

# Rust symbols carry a hash suffix (::h0123456789abcdef); drop it and the
# argument lists of C++-style demangled names to keep the lines readable.
HASH = re.compile(r"::h[0-9a-f]{16}$")


def frames(lines):
    out = []
    for line in lines:
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        sym = parts[1]
        sym = re.sub(r"\s+\([^)]*\)$", "", sym)  # "(/path/to/dso)"
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
        sym = HASH.sub("", sym)
        out.append(sym or "[unknown]")
    return list(reversed(out))


def main():
    folded_path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    stacks = collections.Counter()
    selfs = collections.Counter()
    block = []
    total = 0
    for line in sys.stdin:
        if line.strip() == "":
            if block:
                stack = frames(block[1:])
                if stack:
                    stacks[";".join(stack)] += 1
                    selfs[stack[-1]] += 1
                    total += 1
                block = []
            continue
        block.append(line)
    with open(folded_path, "w") as f:
        for stack, n in stacks.most_common():
            f.write(f"{stack} {n}\n")
    print(f"{total} samples")
    print(f"\ntop {top} self frames:")
    for sym, n in selfs.most_common(top):
        print(f"{100 * n / max(total, 1):6.2f}%  {sym}")
    print(f"\ntop {top} folded stacks (leaf last, frames past the 12 nearest the leaf cut):")
    for stack, n in stacks.most_common(top):
        parts = stack.split(";")
        shown = ";".join(parts[-12:])
        print(f"{100 * n / max(total, 1):6.2f}%  {'…;' if len(parts) > 12 else ''}{shown}")


if __name__ == "__main__":
    main()
