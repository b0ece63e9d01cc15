"""scripts/tiny_recipe.py: a short SFT recipe on the real GlobalOpinionQA data prints and records
one row of well-formedness numbers; bad input stops before any run folder is written."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

spec = importlib.util.spec_from_file_location("tiny_recipe",
                                              PROJECT_ROOT / "scripts" / "tiny_recipe.py")
tiny_recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiny_recipe)


@pytest.mark.parametrize("argv, message", [
    (["--methods", "sft,dop"], "--methods: unknown dop"),
    (["-p", "sft_stepz", "5"], "did you mean 'sft_steps'"),
])
def test_bad_input_is_named_and_writes_nothing(tmp_path, capsys, argv, message):
    code = tiny_recipe.main(["--name", "bad", "--output-root", str(tmp_path)] + argv)
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_short_recipe_prints_and_records_its_row(tmp_path, capsys, goqa_csv):
    argv = ["--name", "short", "--output-root", str(tmp_path), "-p", "goqa_path", str(goqa_csv),
            "-p", "sft_steps", "5", "-p", "max_questions", "30", "-p", "n_samples", "2",
            "-p", "max_new_tokens", "16"]
    assert tiny_recipe.main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    recorded = [json.loads(line) for line in (tmp_path / "short" / "recipe.jsonl").open()]
    assert recorded == [printed]
    assert printed["method"] == "sft" and printed["params"]["sft_steps"] == 5   # parsed, not text
    for key in ("jsd", "belief_mass", "invalid_rate", "cbc"):
        assert 0 <= printed[key] <= 1
    # the row is the run's own evaluation (notebook 04's numbers), not a second computation
    summary = json.loads((tmp_path / "short" / "metrics.json").read_text())["methods"]["sft"]
    assert printed["cbc"] == round(summary["cbc"], 4) and printed["jsd"] == round(summary["jsd"], 4)
