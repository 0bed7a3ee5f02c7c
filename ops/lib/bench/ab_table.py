"""Print ops/bench-ab's runs as one Markdown table: per run, each figure's
rate, p50 and p99, its ratio to the limit measured in the same run, and the
CPU per request of every process that spent at least 1 % of the figure's
CPU. Usage: ab_table.py DIR (the A-<n>.jsonl and B-<n>.jsonl of one A/B)."""

import os
import re
import sys

from table import load, wrk_rate

FIGURES = ["plain", "verify", "banned", "me", "sign_in", "refresh", "nats"]
# The limit each figure is compared with, when it ran in the same run.
LIMITS = {"verify": "plain", "banned": "plain", "refresh": "pgbench", "sign_in": "argon2"}


def rate(r):
    if "tps" in r:
        return r["tps"]
    if "per_second" in r:
        return r["per_second"]
    return wrk_rate(r)


def cells(results, figure):
    r = results[figure]
    if figure == "nats":
        return f"bus {r['bus']['per_second']:,.0f}/s vs raw {r['raw']['per_second']:,.0f}/s", ""
    text = f"{rate(r):,.0f}/s, p50 {r['p50_us'] / 1000:.1f} ms, p99 {r['p99_us'] / 1000:.1f} ms"
    limit = LIMITS.get(figure)
    if limit in results and rate(results[limit]):
        text += f", {rate(results[limit]):,.0f} {limit}: ratio {rate(r) / rate(results[limit]):.2f}"
    cpu = results.get(f"cpu_{figure}", {})
    machine = cpu.get("machine")
    count = r["requests"]
    shares = sorted(
        ((k, v) for k, v in cpu.items() if k not in ("machine", "steal") and isinstance(v, (int, float))),
        key=lambda kv: -kv[1],
    )
    used = [f"{k} {v / count * 1e6:,.0f}" for k, v in shares if machine and v >= 0.01 * machine]
    per = f"machine {machine / count * 1e6:,.0f}; " if machine else ""
    return text, per + ", ".join(used)


def main():
    folder = sys.argv[1]
    runs = sorted(
        (f for f in os.listdir(folder) if re.fullmatch(r"[AB]-\d+\.jsonl", f)),
        key=lambda f: (int(f[2:-6]), f[0]),
    )
    print("| run | figure | rate, latency, ratio to the limit | CPU per request (µs) |")
    print("|---|---|---|---|")
    for name in runs:
        results = load(os.path.join(folder, name))
        load_avg = results.get("meta", {}).get("load_before", "?")
        for figure in FIGURES:
            if figure in results:
                text, cpu = cells(results, figure)
                print(f"| {name[:-6]} (load {load_avg}) | {figure} | {text} | {cpu} |")


if __name__ == "__main__":
    main()
