#!/usr/bin/env python3
"""Dependency checks behind ops/check-deps.sh (policy: docs/DEPENDENCIES.md).

  check_deps.py crypto     one version of each listed crypto crate in
                           Cargo.lock, apart from the documented exceptions
  check_deps.py workspace  every [workspace.dependencies] entry is used by a
                           member
  check_deps.py unused     a dependency no source file of its crate names
                           (the fallback when cargo-machete is not available)

The crate list and the exceptions are read from docs/DEPENDENCIES.md, between
the `check-deps:` markers, so the document and the check cannot drift apart.
Exits 1 on a finding, 2 when its inputs cannot be read.
"""

import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "DEPENDENCIES.md"


def fail(msg: str, code: int = 2) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def doc_block(name: str) -> str:
    text = DOC.read_text()
    m = re.search(
        rf"<!-- check-deps: {name} -->(.*?)<!-- /check-deps -->", text, re.S
    )
    if not m:
        fail(f"{DOC.relative_to(ROOT)} has no `check-deps: {name}` block")
    return m.group(1)


def crypto_crates() -> list[str]:
    names = re.findall(r"`([A-Za-z0-9_-]+)`", doc_block("crypto"))
    if not names:
        fail("the `check-deps: crypto` block lists no crate")
    return names


def exceptions() -> dict[tuple[str, str], str]:
    """(crate, version prefix) -> who pulls it, from the exceptions table."""
    out = {}
    for line in doc_block("exceptions").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        crate = cells[0].strip("`")
        for version in re.findall(r"[0-9]+(?:\.[0-9]+)*", cells[1]):
            out[(crate, version)] = cells[2]
    return out


def vkey(version: str) -> tuple:
    core = version.split("+")[0].split("-")[0]
    return tuple(int(x) for x in core.split("."))


def matches(version: str, prefix: str) -> bool:
    return version == prefix or version.startswith(prefix + ".")


def lock_versions() -> dict[str, set[str]]:
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())
    versions: dict[str, set[str]] = {}
    for package in lock.get("package", []):
        versions.setdefault(package["name"], set()).add(package["version"])
    return versions


def check_crypto() -> int:
    versions = lock_versions()
    allowed = exceptions()
    used = set()
    problems = []
    for crate in crypto_crates():
        found = sorted(versions.get(crate, ()), key=vkey)
        if len(found) < 2:
            continue
        newest, older = found[-1], found[:-1]
        for version in older:
            hit = [key for key in allowed if key[0] == crate and matches(version, key[1])]
            if hit:
                used.update(hit)
            else:
                problems.append(
                    f"{crate} {version} next to {newest}: two versions of a crypto crate "
                    f"(find who pulls it: cargo tree -i {crate}@{version}); bump it away "
                    f"or document the exception in docs/DEPENDENCIES.md"
                )
    for key in sorted(set(allowed) - used):
        crate, version = key
        if crate in crypto_crates():
            problems.append(
                f"documented exception {crate} {version} is no longer in Cargo.lock: "
                f"remove it from docs/DEPENDENCIES.md"
            )
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if not problems:
        print(f"ok: one version of each of {len(crypto_crates())} crypto crates, "
              f"{len(used)} documented exception(s)")
    return 1 if problems else 0


def members() -> list[pathlib.Path]:
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())
    return [ROOT / m for m in ws["workspace"]["members"]]


DEP_SECTIONS = ("dependencies", "dev-dependencies", "build-dependencies")


def manifest_deps(manifest: dict) -> dict[str, dict]:
    deps = {}
    for section in DEP_SECTIONS:
        for name, spec in manifest.get(section, {}).items():
            deps[name] = spec if isinstance(spec, dict) else {"version": spec}
    for target in manifest.get("target", {}).values():
        for section in DEP_SECTIONS:
            for name, spec in target.get(section, {}).items():
                deps[name] = spec if isinstance(spec, dict) else {"version": spec}
    return deps


def check_workspace() -> int:
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())
    used = set()
    for member in members():
        used |= set(manifest_deps(tomllib.loads((member / "Cargo.toml").read_text())))
    unused = sorted(set(ws["workspace"].get("dependencies", {})) - used)
    for name in unused:
        print(f"error: [workspace.dependencies] {name} is used by no member", file=sys.stderr)
    if not unused:
        print("ok: every workspace dependency is used by a member")
    return 1 if unused else 0


def check_unused() -> int:
    """What cargo-machete does, in small: a dependency is used when a Rust
    file of its crate names it as a path (`name::`), in a `use`, or in an
    `extern crate`. Honours [package.metadata.cargo-machete] ignored."""
    problems = []
    for member in members():
        manifest = tomllib.loads((member / "Cargo.toml").read_text())
        ignored = set(
            manifest.get("package", {}).get("metadata", {}).get("cargo-machete", {}).get("ignored", [])
        )
        sources = "\n".join(
            p.read_text(errors="replace")
            for p in member.rglob("*.rs")
            if "target" not in p.relative_to(member).parts
        )
        for name, spec in manifest_deps(manifest).items():
            if name in ignored:
                continue
            ident = re.escape(name.replace("-", "_"))
            pattern = rf"(\b{ident}\s*::|\buse\s+{ident}\b|\bextern\s+crate\s+{ident}\b|::{ident}\s*::)"
            if not re.search(pattern, sources):
                problems.append(f"{member.relative_to(ROOT)}: {name} is declared and never used")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if not problems:
        print("ok: every declared dependency is used (fallback scan)")
    return 1 if problems else 0


def main() -> int:
    checks = {"crypto": check_crypto, "workspace": check_workspace, "unused": check_unused}
    if len(sys.argv) != 2 or sys.argv[1] not in checks:
        fail(f"usage: {sys.argv[0]} {'|'.join(checks)}")
    return checks[sys.argv[1]]()


if __name__ == "__main__":
    sys.exit(main())
