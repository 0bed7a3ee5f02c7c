"""CPU seconds the machine's PostgreSQL has used so far, as JSON:
`total` (every postgres process, plus the postmaster's exited children:
ended backends and autovacuum workers are reaped by it) and `background`
(autovacuum, checkpointer, background and WAL writers, and the processes
that exited, which are mostly autovacuum workers). With `BEFORE` (an
earlier output) as the argument it prints the difference since then
instead, each ended process counted only for its CPU after `BEFORE`."""

import json
import os
import sys

BACKGROUND = ("autovacuum", "checkpointer", "background writer", "walwriter")


def processes(comm):
    """(`/proc/<pid>/stat` fields after the name, command line) of every
    process named `comm`; one that ends while being read is skipped."""
    for _, found in processes_by_pid(comm):
        yield found


def processes_by_pid(comm):
    """(pid, (`/proc/<pid>/stat` fields after the name, command line)) of
    every process named `comm`; one that ends while being read is skipped."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != comm:
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline") as f:
                title = f.read()
        except OSError:
            continue
        yield pid, (fields, title)


def sample():
    """`total` and `background` so far, and each live process's own CPU
    (`own`, by pid), which the difference needs."""
    hz = os.sysconf("SC_CLK_TCK")
    total = background = reaped_all = 0
    own_by_pid = {}
    for pid, (fields, title) in processes_by_pid("postgres"):
        own = int(fields[11]) + int(fields[12])
        reaped = int(fields[13]) + int(fields[14])
        total += own + reaped
        reaped_all += reaped
        own_by_pid[pid] = [own / hz, any(b in title for b in BACKGROUND)]
        background += reaped + (own if own_by_pid[pid][1] else 0)
    return {"total": total / hz, "background": background / hz, "reaped": reaped_all / hz, "own": own_by_pid}


def since(before, now):
    """The CPU used between two samples. A process that ended meanwhile is
    reaped by the postmaster with its whole lifetime's CPU, so the reaped
    CPU is counted less what those processes had used before the first
    sample: a pooled backend that served for minutes and closed during a
    run is not that run's background work."""
    ended_before = sum(own for pid, (own, _) in before["own"].items() if pid not in now["own"])
    live_background = sum(
        own - (before["own"][pid][0] if pid in before["own"] else 0.0)
        for pid, (own, is_background) in now["own"].items()
        if is_background
    )
    return {
        "total": round(now["total"] - before["total"], 2),
        "background": round(now["reaped"] - before["reaped"] - ended_before + live_background, 2),
    }


def main():
    now = sample()
    if len(sys.argv) > 1:
        now = since(json.loads(sys.argv[1]), now)
    print(json.dumps(now))


if __name__ == "__main__":
    main()
