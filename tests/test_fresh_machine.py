"""The project on a machine that has only the repository: the tracked files (`git ls-files`)
copied to a folder with nothing beside it (no ../shared), where every params file validates
(those that name optional data fail in one line saying how to add it) and the pipeline runs
notebooks 01-02 on params/ci.yaml from the embedded data."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gdpolib.config import PROJECT_ROOT

VALIDATE = """
import sys
from pathlib import Path
import gdpolib
from gdpolib.config import ConfigError, load_config
assert Path(gdpolib.__file__).resolve().is_relative_to(Path.cwd().resolve()), gdpolib.__file__
for path in sorted(Path("params").glob("*.yaml")):
    try:
        load_config([path])
        print("valid", path.name)
    except ConfigError as err:
        print("error", path.name, err)
"""


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The tracked files alone, in <tmp>/gdpo (so ../shared does not exist)."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_ROOT, check=True,
                               capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"not a git checkout ({err})")
    root = tmp_path_factory.mktemp("fresh") / "gdpo"
    for name in filter(None, files):
        src = PROJECT_ROOT / name
        if src.is_file():              # a tracked file deleted in the working tree is skipped
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    assert not (root.parent / "shared").exists()
    return root


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GDPO_DATA_DIR", "PYTHONPATH")}
    return {**env, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}


def test_every_params_file_validates_on_a_fresh_clone(clone):
    res = subprocess.run([sys.executable, "-c", VALIDATE], cwd=clone, env=_env(clone),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == len(list((clone / "params").glob("*.yaml"))) >= 15
    errors = [ln for ln in lines if ln.startswith("error")]
    # Only the OpinionQA examples need data that does not ship; they say how to add it.
    assert {ln.split()[1] for ln in errors} == {"oqa-democrat.yaml", "oqa-republican.yaml"}
    assert all("'opinionqa_path'" in ln and "GDPO_DATA_DIR" in ln for ln in errors)
    assert "valid colab-t4.yaml" in lines and "valid defaults.yaml" in lines


@pytest.mark.slow
def test_pipeline_runs_notebooks_01_02_on_a_fresh_clone(clone):
    out = clone / "outputs"
    res = subprocess.run([sys.executable, "-m", "gdpolib.pipeline", "-f", "params/ci.yaml",
                          "--only", "01,02", "-p", "run_name", "fresh"], cwd=clone,
                         env=_env(clone), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    run = Path(res.stdout.strip().splitlines()[-1])
    assert run == out / "fresh"
    import json
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["questions"] == 16 and set(metrics["methods"]) >= {"sft", "dpo"}
    config = (run / "config.yaml").read_text()
    assert "goqa_path: data/globalopinionqa/goqa_partial_hf_schema.csv.gz" in config
