"""Compare two runs' metrics.json leaf by leaf: how many numbers were compared, which differ.

    python scripts/compare_metrics.py A/metrics.json B/metrics.json

The check behind a restructuring that must keep behaviour: the same params and seed before and
after give the same numbers. Equality is exact (NaN equals NaN); a key present on one side only
is a difference. Keys that hold durations (`seconds`, `*_seconds`, `*_s`) are not compared.
Exit status 1 when anything differs.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator

MISSING = "<missing>"


def leaves(tree: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, value) of every leaf of a JSON tree; list items are keyed by their index."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaves(value, (*path, str(key)))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from leaves(value, (*path, str(i)))
    else:
        yield path, tree


def is_duration(path: tuple[str, ...]) -> bool:
    return bool(path) and (path[-1] == "seconds" or path[-1].endswith(("_seconds", "_s")))


def same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def compare(a: Any, b: Any) -> tuple[int, list[tuple[str, Any, Any]]]:
    """(number of leaves compared, [(dotted path, value in a, value in b)] of those that differ)."""
    left, right = dict(leaves(a)), dict(leaves(b))
    paths = sorted(p for p in set(left) | set(right) if not is_duration(p))
    diffs = [(".".join(p), left.get(p, MISSING), right.get(p, MISSING)) for p in paths
             if not same(left.get(p, MISSING), right.get(p, MISSING))]
    return len(paths), diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    n, diffs = compare(*(json.loads(p.read_text()) for p in (args.a, args.b)))
    print(f"{n} leaves compared, {len(diffs)} differ")
    for path, x, y in diffs:
        print(f"  {path}: {x!r} -> {y!r}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
