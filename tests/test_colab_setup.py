"""The notebooks' first code cell (tag colab-setup) and gdpolib.notebook_setup, which it calls: a
no-op where gdpolib is installed, the pinned install on Colab where it is not. subprocess.run,
sys.modules and the installed-package check are faked: nothing is installed or cloned."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from gdpolib import notebook_setup, pipeline
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
    assert "gdpolib.notebook_setup.install()" in CELL


def _pins_without_torch() -> list[str]:
    lines = (PROJECT_ROOT / "requirements.txt").read_text().splitlines()
    pins = [ln.split("#")[0].strip() for ln in lines]
    return [p for p in pins if p and not p.startswith("torch==")]


@pytest.fixture()
def fake(monkeypatch, tmp_path):
    """gdpolib installed (or not), Colab present (or not), subprocess.run recorded; a checkout
    under tmp_path/clone with the project's requirements.txt."""
    calls: list[list[str]] = []
    state = {"installed": False}

    def run(cmd, check=False, **kw):
        calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0)

    checkout = tmp_path / "clone"
    (checkout / "gdpolib").mkdir(parents=True)
    (checkout / "gdpolib" / "notebook_setup.py").write_text("")
    (checkout / "notebooks").mkdir()
    shutil.copy(PROJECT_ROOT / "requirements.txt", checkout / "requirements.txt")
    monkeypatch.setattr(notebook_setup, "_installed", lambda: state["installed"])
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GDPO_HOME", str(tmp_path / "no-such-folder"))
    return types.SimpleNamespace(calls=calls, state=state, checkout=checkout,
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


def test_cell_is_a_no_op_where_gdpolib_is_installed(fake):
    fake.state["installed"] = True
    path = list(sys.path)
    ns = _exec()
    assert fake.calls == [] and sys.path == path and _public(ns) == []


def test_cell_is_a_no_op_on_colab_when_installed(fake):
    fake.state["installed"] = True
    _colab(fake)
    ns = _exec()
    assert fake.calls == [] and _public(ns) == []


@pytest.mark.parametrize("where", ["notebook folder", "GDPO_HOME"])
def test_cell_puts_the_checkout_on_the_path_and_installs_it_on_colab(fake, where):
    _colab(fake)
    if where == "GDPO_HOME":
        fake.monkeypatch.setenv("GDPO_HOME", str(fake.checkout))
    else:
        fake.monkeypatch.chdir(fake.checkout / "notebooks")
    ns = _exec()
    assert sys.path[-1] == str(fake.checkout) and _public(ns) == []
    assert [c[-2:] for c in fake.calls][-1] == ["-e", str(PROJECT_ROOT)]   # the module's checkout


def test_install_on_colab_installs_the_pins_without_torch_then_the_checkout(fake):
    _colab(fake)
    notebook_setup.install(fake.checkout)
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    assert fake.calls == [pip + _pins_without_torch(),
                          pip + ["--no-deps", notebook_setup.SMOLLM2_PIN, "-e", str(fake.checkout)]]
    assert "torch==2.13.0" not in fake.calls[0] and "ray==2.60.0" in fake.calls[0]


def test_the_smollm2_pin_is_the_one_setup_installs():
    assert notebook_setup.SMOLLM2_PIN in (PROJECT_ROOT / "scripts" / "setup.sh").read_text()


def test_missing_gdpolib_outside_colab_fails_with_the_setup_command(fake):
    with pytest.raises(ModuleNotFoundError, match="scripts/setup.sh"):
        _exec()
    assert fake.calls == []


def test_colab_asks_for_a_restart_when_loaded_packages_changed_version(fake):
    _colab(fake)
    old_numpy = types.ModuleType("numpy")
    old_numpy.__version__ = "1.26.4"   # what the kernel had loaded before the install
    fake.monkeypatch.setitem(sys.modules, "numpy", old_numpy)
    with pytest.raises(RuntimeError, match="Restart session") as err:
        notebook_setup.install(fake.checkout)
    assert "numpy" in str(err.value) and len(fake.calls) == 2


def test_the_module_needs_only_the_standard_library():
    """The cell imports it before anything is installed."""
    tree = Path(notebook_setup.__file__).read_text()
    imports = {ln.split()[1].split(".")[0] for ln in tree.splitlines()
               if ln.startswith(("import ", "from "))}
    assert imports <= {"__future__", "importlib", "subprocess", "sys", "pathlib"}, imports
    assert os.path.basename(notebook_setup.__file__) == "notebook_setup.py"
