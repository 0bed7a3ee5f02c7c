"""Where a service's CPU goes, by kind of work: each sample of a folded
profile (the output of fold.py) is put in the first bucket whose pattern a
frame matches, walking from the leaf towards the root, so a sample counts
once, for the nearest thing it was doing (docs/PERFORMANCE.md, "Hot paths,
eighth round"). Usage: buckets.py IN.folded"""

import collections
import re
import sys

# Nearest frame wins; within a frame, the first bucket listed wins.
BUCKETS = [
    ("kernel: write and wake the client", r"write_vectored|__GI___writev"),
    ("kernel: read", r"Read>::read|__libc_recv"),
    ("kernel: epoll, park", r"epoll_wait|futex|park"),
    ("kernel: interrupts, preemption", r"^asm_sysvec|^irqentry|^asm_|^ret_from"),
    ("mimalloc", r"^mi_|mimalloc"),
    ("request span (tracing)", r"tracing_subscriber|tracing_core|tracing::span|Instrumented|new_span|tracing_opentelemetry"),
    ("request and trace ids", r"idm_bus::trace|continue_in|root_in|new_root|record_ids"),
    ("metrics", r"metrics::|metrics_exporter|histogram|http_metrics"),
    ("API key", r"ApiKey::parse|api_key_hash|bs58|sha2|hex::"),
    ("session token", r"session_keys|SessionKeys|session_token|hmac|base64"),
    ("revocation set", r"revocations"),
    ("WAF (velocity, bans)", r"velocity|bans::|waf::"),
    ("JSON", r"serde_json|serde"),
    ("issuer host, CORS", r"hosts::|served_host|cors::"),
    ("authorize, other", r"authorize"),
    ("hyper", r"hyper::"),
    ("axum, tower", r"axum|tower"),
    ("tokio", r"tokio::"),
]


def bucket_of(frames):
    for frame in reversed(frames):
        for name, pattern in BUCKETS:
            if re.search(pattern, frame):
                return name
    return "other"


def main():
    counts = collections.Counter()
    total = 0
    with open(sys.argv[1]) as folded:
        for line in folded:
            stack, _, n = line.rstrip().rpartition(" ")
            if not n.isdigit():
                continue
            counts[bucket_of(stack.split(";"))] += int(n)
            total += int(n)
    print(f"{total} samples, by bucket (nearest frame from the leaf):")
    for name, n in counts.most_common():
        print(f"{100 * n / max(total, 1):6.2f}%  {name}")


if __name__ == "__main__":
    main()
