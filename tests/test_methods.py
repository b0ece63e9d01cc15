"""The method registry (gdpolib/methods.py) is the one declaration of a method: every list of
methods reads it, and every registered trained method trains, is scored, is recorded in
metrics.json and appears in Table 2, the sweep's tables, the findings and the model card. A
method added to the registry alone is covered here with nothing else changed."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from gdpolib import methods, modelcard, publish, sweep_tables, train
from gdpolib.config import ConfigError, load_config
from gdpolib.report import claims, table2
from gdpolib.runs import Run
from gdpolib.stages import evaluate
from gdpolib.stages.data import prepare_data

TRAINED = methods.names(lambda m: m.trained)


@pytest.fixture(scope="module")
def small(tmp_path_factory, goqa_csv):
    """A real-data run (GlobalOpinionQA, S. Africa, 6 questions), a schedule of a few steps and
    two samples per test prompt; one judge for every method."""
    cfg = load_config(overrides=dict(
        output_root=str(tmp_path_factory.mktemp("runs")), run_name="m", goqa_path=str(goqa_csv),
        max_questions=6, tiny_n_layer=1, tiny_n_embd=32, tiny_n_head=2, tiny_vocab_size=400,
        batch_size=4, sft_steps=4, dpo_steps=2, gdpo_steps=2, eval_every=2, save_every=2,
        eval_subset=8, n_samples=2, max_new_tokens=8, ci_resamples=100, device="cpu",
        methods=methods.names(lambda m: m.role != "baseline"),
        ablations=methods.names(lambda m: m.role == "ablation")))
    run = Run.open(cfg)
    return SimpleNamespace(cfg=cfg, run=run, data=prepare_data(cfg, run),
                           judging=evaluate.Judging(cfg))


def test_every_list_of_methods_reads_the_registry(small):
    names = methods.names()
    assert len(names) == len(set(names)) == len(methods.METHODS)
    assert methods.baselines() == ["uniform", "context_free", "zeroshot"]
    assert methods.paired_references() == ["context_free", "sft"]
    assert publish.METHODS == tuple(TRAINED)
    for name in [*names, "all"]:
        assert train.parse_args(["--method", name]).method == name
    with pytest.raises(SystemExit):
        train.parse_args(["--method", "nope"])
    with pytest.raises(ConfigError, match="gdpolib/methods.py"):
        load_config(overrides={"methods": ["nope"]})
    # every method of the parameters and the baselines, in the registry's table order
    assert evaluate.methods_to_run(small.cfg, small.run) == names
    with pytest.raises(ValueError, match="registered"):
        methods.get("nope")
    for m in methods.METHODS:
        assert m.description and m.role in methods.ROLES
        assert m.trained == (m.name in TRAINED) and (m.predictor is None) == (m.model != "none")
        assert m.margins in (None, "dpo") and (m.shared_margins is None or m.margins)


@pytest.mark.parametrize("name", TRAINED)
def test_every_trained_method_trains_is_scored_and_recorded(small, name):
    m = methods.get(name)
    summary = evaluate.evaluate_method(small.cfg, small.run, small.data, name, small.judging)
    stage = small.run.stage_dir(f"checkpoints/{name}")
    assert (stage / "model.safetensors").exists() and (stage / "summary.json").exists()
    recorded = small.run.metrics()
    assert recorded["methods"][name]["jsd"] == summary["jsd"]
    assert {"cbc", "invalid_rate", "jsd_digits", "tvd"} <= set(recorded["methods"][name])
    assert (name in recorded.get("skew", {})) == bool(m.margins)
    if m.margins:                      # on the same conflicting pairs for every method
        assert {"margin_majority", "margin_minority"} <= set(summary)
    if m.shared_margins:
        assert {"shared_margin_majority", "shared_margin_minority"} <= set(summary)
    card = modelcard.model_card(small.run.root, name, "someone/model")
    assert m.description in card and "## Findings" in card


def test_table2_the_sweep_and_the_findings_hold_every_method(small):
    """After every method of the run is scored: Table 2 has a column per method, the sweep's
    rows hold each, and each preference baseline has its claims checked (run and seeds)."""
    cfg, run = small.cfg, small.run
    table = evaluate.evaluate_methods(cfg, run, small.data)      # cached stages: no training
    assert list(table.index) == methods.names()
    assert list(table2.table2(table, cfg).columns) == methods.names()
    cell = SimpleNamespace(name="m", run_dir=run.root,
                           labels=lambda: {"country": "S. Africa", "params": "-", "seed": 0})
    rows = sweep_tables.collect([cell], {"m": methods.names()})
    assert list(rows["method"]) == methods.names()
    lines = claims.findings(table)
    # every method compared with SFT and the context-free baseline, question by question
    assert table.drop(index="sft")["jsd_vs_sft"].notna().all()
    assert table.drop(index="context_free")["jsd_vs_context_free_ci"].notna().all()
    per_seed = claims.seed_findings(rows, ["country"])
    for b in methods.names(lambda m: m.role == "preference baseline"):
        assert any(line.endswith(f"] {b.upper()} raises jsd over SFT: {b.upper()} "
                                 f"{table.loc[b, 'jsd']:.3f}, SFT {table.loc['sft', 'jsd']:.3f}")
                   for line in lines)
        assert any(f"] {b.upper()} raises jsd over SFT, paired 95% interval above 0: "
                   f"{b.upper()} - SFT" in line for line in lines)
        assert any(f"GDPO lowers jsd below {b.upper()}: holds in" in line for line in per_seed)
        assert any(f"{b.upper()}'s majority-chosen margins exceed" in line
                   for line in claims.card_lines(run.metrics()))
    text = sweep_tables.write_results(rows, run.root / "results.md", methods.names())
    assert all(f"| {name} |" in text for name in methods.names())
    assert isinstance(pd.read_csv(run.root / "tables" / "methods.csv"), pd.DataFrame)
