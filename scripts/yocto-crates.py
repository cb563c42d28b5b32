#!/usr/bin/env python3
"""Writes yocto/meta-callbox/recipes-multimedia/callbox/callbox-crates.inc from Cargo.lock:
one crate:// SRC_URI entry and one sha256sum per crates.io package, in the format of
Yocto's cargo-update-recipe-crates class. `--check` compares instead of writing and exits 1
when the file and Cargo.lock disagree (tests/yocto.rs runs it)."""

import pathlib
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOCK = ROOT / "Cargo.lock"
INC = ROOT / "yocto/meta-callbox/recipes-multimedia/callbox/callbox-crates.inc"
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


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not INC.exists() or INC.read_text() != text:
            print(f"{INC.relative_to(ROOT)} is out of date with Cargo.lock: run scripts/yocto-crates.py")
            return 1
        print(f"{INC.relative_to(ROOT)} matches Cargo.lock ({text.count('crate://')} crates)")
        return 0
    INC.write_text(text)
    print(f"wrote {INC.relative_to(ROOT)} ({text.count('crate://')} crates)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
