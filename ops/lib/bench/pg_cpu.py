"""CPU seconds the machine's PostgreSQL has used so far, as JSON:
`total` (every postgres process, plus the postmaster's exited children:
ended backends and autovacuum workers are reaped by it) and `background`
(autovacuum, checkpointer, background and WAL writers, and the exited
children, which are mostly autovacuum workers). With `BEFORE` (an earlier
output) as the argument it prints the difference since then instead."""

import json
import os
import sys

BACKGROUND = ("autovacuum", "checkpointer", "background writer", "walwriter")


def processes(comm):
    """(`/proc/<pid>/stat` fields after the name, command line) of every
    process named `comm`; one that ends while being read is skipped."""
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
        yield fields, title


def sample():
    hz = os.sysconf("SC_CLK_TCK")
    total = background = 0
    for fields, title in processes("postgres"):
        own = int(fields[11]) + int(fields[12])
        reaped = int(fields[13]) + int(fields[14])
        total += own + reaped
        background += reaped + (own if any(b in title for b in BACKGROUND) else 0)
    return {"total": total / hz, "background": background / hz}


def main():
    now = sample()
    if len(sys.argv) > 1:
        before = json.loads(sys.argv[1])
        now = {k: round(now[k] - before[k], 2) for k in now}
    print(json.dumps(now))


if __name__ == "__main__":
    main()
