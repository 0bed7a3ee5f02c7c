#!/usr/bin/env python3
"""Creates issuers for ops/bench-scale, each as a tenant would: an account
through the operator API, then its first user in one region (which creates
the issuer's schema there).

    provision.py ACCOUNT_URL EDGE_URL COUNT CONCURRENCY REGION

The operator token comes from IDM_OPERATOR_TOKEN (never the command line).
Prints one JSON object: how many were made, how long it took, per-issuer
latencies (account creation, first user, both) and failures.
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request


def call(method, url, token, body, forwarded_for=None):
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("authorization", "Bearer " + token)
    if forwarded_for:
        # Each tenant's backend calls from its own address (the edge trusts
        # the bench's loopback proxy): 10,000 tenants behind one address
        # would trip the edge's unknown-key limit, as a key-guesser should.
        request.add_header("x-forwarded-for", forwarded_for)
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main():
    account_url, edge_url, count, concurrency, region = sys.argv[1:6]
    count, concurrency = int(count), int(concurrency)
    token = os.environ["IDM_OPERATOR_TOKEN"]
    lock = threading.Lock()
    next_index = [0]
    account_ms, user_ms, total_ms, failures = [], [], [], []

    def worker():
        while True:
            with lock:
                i = next_index[0]
                if i >= count:
                    return
                next_index[0] += 1
            try:
                started = time.monotonic()
                created = call("POST", account_url + "/admin/v1/accounts", token,
                               {"name": "scale %d" % i})
                made = time.monotonic()
                call("POST", edge_url + "/v1/users", created["secret_key"],
                     {"email": "first@example.com", "region": region},
                     "198.18.%d.%d" % (i // 250 % 250, i % 250 + 1))
                done = time.monotonic()
                with lock:
                    account_ms.append((made - started) * 1000)
                    user_ms.append((done - made) * 1000)
                    total_ms.append((done - started) * 1000)
            except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
                detail = e.read()[:200].decode(errors="replace") if hasattr(e, "read") else ""
                with lock:
                    failures.append("%s %s" % (e, detail))

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started

    def summary(values):
        return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
                "mean": sum(values) / len(values) if values else None}

    print(json.dumps({
        "issuers": len(total_ms), "concurrency": concurrency, "seconds": seconds,
        "account_ms": summary(account_ms), "first_user_ms": summary(user_ms),
        "issuer_ms": summary(total_ms), "failures": len(failures),
        "first_failures": failures[:3],
    }))


if __name__ == "__main__":
    main()
