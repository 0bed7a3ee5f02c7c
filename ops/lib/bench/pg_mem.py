"""Memory of the machine's PostgreSQL processes, per database, as JSON.

Arguments are database names. For each, the backends connected to it
(told by their process title, `postgres: [cluster: ]user database host
state`) with their private memory (what a backend holds for itself: its
catalog and plan caches, work memory) and their proportional share of
shared memory (PSS, shared buffers divided among the processes that map
them), from /proc/<pid>/smaps_rollup. `all` is every postgres process of
every cluster, PSS summed: unlike summed RSS it counts shared memory once."""

import json
import sys

from pg_cpu import processes_by_pid


def rollup(pid):
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        return None
    return fields


def main():
    databases = sys.argv[1:]
    out = {db: {"backends": 0, "private_kib": 0, "pss_kib": 0} for db in databases}
    total = {"processes": 0, "pss_kib": 0}
    for pid, (_, title) in processes_by_pid("postgres"):
        mem = rollup(pid)
        if mem is None:
            continue
        total["processes"] += 1
        total["pss_kib"] += mem.get("Pss", 0)
        words = title.replace("\0", " ").split()
        db = next((d for d in databases if d in words), None)
        if db is not None:
            out[db]["backends"] += 1
            out[db]["private_kib"] += mem.get("Private_Clean", 0) + mem.get("Private_Dirty", 0)
            out[db]["pss_kib"] += mem.get("Pss", 0)
    out["all"] = total
    print(json.dumps(out))


if __name__ == "__main__":
    main()
