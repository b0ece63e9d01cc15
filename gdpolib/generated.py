"""The exit of a generator command (`python -m gdpolib.paramdocs`, `python -m gdpolib.resultpages`):
without --write it checks that its files are up to date, with --write it rewrites the stale ones."""
from __future__ import annotations

import sys
from collections.abc import Sequence


def finish(stale: Sequence[str], write: bool, what: str, write_command: str) -> int:
    """Print what happened to the `stale` files (names, already rewritten when `write`) and
    return the exit status: 1 when checking found stale files, else 0."""
    names = ", ".join(stale)
    if write:
        print(f"rewrote {names}" if stale else f"{what} already up to date")
        return 0
    if stale:
        print(f"stale: {names}; run `{write_command}`", file=sys.stderr)
        return 1
    print(f"{what} up to date")
    return 0
