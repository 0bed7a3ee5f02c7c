"""CPU seconds used so far by each named process (`name=pid` arguments),
by PostgreSQL (every postgres process, pg_cpu.py), by redis-server, and by
the whole machine (`machine`: every core's non-idle time, /proc/stat), as
JSON. With `--since BEFORE` (an earlier output) it prints the difference.
ops/bench divides it by a figure's requests: CPU per request, process by
process, which is what says where a figure's time goes."""

import json
import os
import sys

from pg_cpu import processes, sample as postgres_cpu

HZ = os.sysconf("SC_CLK_TCK")


def process_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / HZ


def named_cpu(comm):
    return sum(int(f[11]) + int(f[12]) for f, _ in processes(comm)) / HZ


def machine_cpu():
    """Every core's non-idle time, and of it the time the hypervisor gave
    our virtual cores to someone else (steal): a run on a shared host can
    lose CPU that no process here used."""
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    idle = cpu[3] + cpu[4]  # idle, iowait
    return (sum(cpu[:8]) - idle) / HZ, cpu[7] / HZ


def main():
    args = sys.argv[1:]
    before = None
    if args[:1] == ["--since"]:
        before, args = json.loads(args[1]), args[2:]
    now = {}
    for arg in args:
        name, _, pid = arg.partition("=")
        seconds = process_cpu(pid)
        if seconds is not None:
            now[name] = seconds
    now["postgres"] = postgres_cpu()["total"]
    now["redis"] = named_cpu("redis-server")
    now["machine"], now["steal"] = machine_cpu()
    if before is not None:
        now = {k: round(v - before[k], 3) for k, v in now.items() if k in before}
    print(json.dumps(now))


if __name__ == "__main__":
    main()
