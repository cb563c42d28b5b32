#!/usr/bin/env python3
"""Writes yocto/meta-callbox/recipes-multimedia/callbox/callbox-crates.inc from Cargo.lock:
one crate:// SRC_URI entry and one sha256sum per crates.io package, in the format of
Yocto's cargo-update-recipe-crates class. `--pin` also pins the recipe's SRCREV to HEAD
(Cargo.lock must be committed) and records Cargo.lock's sha256 next to it, so the pinned
source and the crate list come from the same lock file. `--check` compares instead of writing
and exits 1 when the crate list, the recorded checksum and Cargo.lock disagree or SRCREV is not
a fixed commit (tests/yocto.rs runs it)."""

import hashlib
import pathlib
import re
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOCK = ROOT / "Cargo.lock"
INC = ROOT / "yocto/meta-callbox/recipes-multimedia/callbox/callbox-crates.inc"
RECIPE = ROOT / "yocto/meta-callbox/recipes-multimedia/callbox/callbox_0.1.0.bb"
CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"


def render() -> str:
    packages = tomllib.loads(LOCK.read_text())["package"]
    crates = sorted(
        ((p["name"], p["version"], p["checksum"]) for p in packages if p.get("source") == CRATES_IO),
        key=lambda c: (c[0], c[1]),
    )
    others = [p["name"] for p in packages if p.get("source") not in (None, CRATES_IO)]
    if others:
        sys.exit(f"not from crates.io, add them to the recipe by hand: {others}")
    out = ["# Generated from Cargo.lock by scripts/yocto-crates.py; do not edit.", "", "SRC_URI += \" \\"]
    out += [f"    crate://crates.io/{n}/{v} \\" for n, v, _ in crates]
    out += ['"', ""]
    out += [f'SRC_URI[{n}-{v}.sha256sum] = "{c}"' for n, v, c in crates]
    return "\n".join(out) + "\n"


def lock_sum() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()


def check_pin() -> list[str]:
    recipe = RECIPE.read_text()
    problems = []
    rev = re.search(r'^SRCREV = "([^"]*)"', recipe, re.M)
    if not rev or not re.fullmatch(r"[0-9a-f]{40}", rev.group(1)):
        problems.append(f"SRCREV is not a fixed commit: {rev.group(1) if rev else 'missing'}")
    recorded = re.search(r"^# sha256 of Cargo.lock at SRCREV: ([0-9a-f]{64})$", recipe, re.M)
    if not recorded or recorded.group(1) != lock_sum():
        problems.append("Cargo.lock changed since SRCREV was pinned: commit it, then run scripts/yocto-crates.py --pin")
    if "AUTOREV" in recipe or "SRCPV" in recipe:
        problems.append("AUTOREV/SRCPV in the recipe")
    return problems


def pin() -> None:
    if subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "Cargo.lock"]).returncode != 0:
        sys.exit("Cargo.lock has uncommitted changes: commit them first")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    recipe = re.sub(r'^SRCREV = "[^"]*"', f'SRCREV = "{head}"', RECIPE.read_text(), flags=re.M)
    recipe = re.sub(r"^# sha256 of Cargo.lock at SRCREV: .*$", f"# sha256 of Cargo.lock at SRCREV: {lock_sum()}", recipe, flags=re.M)
    RECIPE.write_text(recipe)
    print(f"pinned SRCREV = {head}")


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        problems = check_pin()
        if not INC.exists() or INC.read_text() != text:
            problems.append(f"{INC.relative_to(ROOT)} is out of date with Cargo.lock: run scripts/yocto-crates.py")
        for p in problems:
            print(p)
        if problems:
            return 1
        print(f"{INC.relative_to(ROOT)} and SRCREV match Cargo.lock ({text.count('crate://')} crates)")
        return 0
    if "--pin" in sys.argv:
        pin()
    INC.write_text(text)
    print(f"wrote {INC.relative_to(ROOT)} ({text.count('crate://')} crates)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
