"""requirements.txt is the one list of pins; environment.yml and setup.sh install it."""
from __future__ import annotations

import yaml

from gdpolib.config import PROJECT_ROOT


def _pins() -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not pinned with =="
            pins[name.lower()] = version
    return pins


def test_every_requirement_is_pinned_and_torch_is_pinned():
    assert "torch" in _pins()


def test_environment_yml_installs_requirements_and_adds_no_packages():
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    pip_section = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert pip_section == [["-r requirements.txt", "-e ."]]
    conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert {d.split("=")[0] for d in conda_deps} == {"python", "pip"}


def test_setup_script_installs_requirements_and_the_package():
    setup = (PROJECT_ROOT / "scripts" / "setup.sh").read_text()
    assert "install -r requirements.txt" in setup and "-e ." in setup
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "scripts/setup.sh" in ci and "-eq 5" in ci
