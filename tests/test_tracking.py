"""report_to reaches TRL's trainers AND our own numbers: TensorBoard event files and trackio's
local database, written by a real (tiny, short) training stage on real data and read back."""
from __future__ import annotations

import os
import tempfile

import pytest

# trackio reads TRACKIO_DIR when it is imported: keep this session's records out of the user's
# cache (no test module imports trackio at collection time).
os.environ.setdefault("TRACKIO_DIR", tempfile.mkdtemp(prefix="gdpo-trackio-"))

from gdpolib import config, runs  # noqa: E402
from gdpolib.stages.data import prepare_data  # noqa: E402
from gdpolib.stages.train import train_preference  # noqa: E402
from gdpolib.trackers import open_tracker  # noqa: E402

OURS = ("track/jsd", "track/belief_mass", "track/margin_majority", "track/margin_minority")


def _run(tmp_path, goqa_csv, report_to: str):
    cfg = config.load_config(overrides=dict(
        output_root=str(tmp_path), run_name=f"track-{report_to}", goqa_path=str(goqa_csv),
        max_questions=8, min_questions=8, tiny_n_layer=1, tiny_n_embd=32, tiny_n_head=2,
        tiny_vocab_size=400, batch_size=4, sft_steps=2, gdpo_steps=2, eval_every=1,
        save_every=50, eval_subset=8, device="cpu", report_to=report_to))
    run = runs.Run.open(cfg)
    train_preference(cfg, run, prepare_data(cfg, run), "gdpo")
    return cfg, run


def test_tensorboard_event_files_hold_trl_and_our_numbers(tmp_path, goqa_csv):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg, run = _run(tmp_path, goqa_csv, "tensorboard")
    tags = {}
    for stage in ("sft", "gdpo"):
        events = EventAccumulator(str(run.root / "logs" / stage)).Reload()
        tags[stage] = {t: events.Scalars(t) for t in events.Tags()["scalars"]}
    assert any(t.endswith("loss") for t in tags["gdpo"])                    # TRL's own
    assert any(t.endswith("rewards/margins") for t in tags["gdpo"])
    for ours in OURS:                                                       # the callback's
        found = [t for t in tags["gdpo"] if t.endswith(ours)]
        assert found, (ours, sorted(tags["gdpo"]))
        assert [s.step for s in tags["gdpo"][found[0]]] == [0, 1, 2]
    assert any(t.endswith("track/jsd") for t in tags["sft"])
    # our loops (GPO) write through gdpolib.trackers into the same run folder
    tracker = open_tracker(cfg, run, "gpo_test", {"steps": 2})
    tracker.log({"val_score": 0.5}, step=1)
    tracker.log({"val_score": 0.75}, step=2)
    tracker.close()
    events = EventAccumulator(str(run.root / "logs" / "gpo_test")).Reload()
    assert [(s.step, s.value) for s in events.Scalars("val_score")] == [(1, 0.5), (2, 0.75)]


def test_trackio_local_database_holds_trl_and_our_numbers(tmp_path, goqa_csv):
    trackio = pytest.importorskip("trackio")
    cfg, run = _run(tmp_path, goqa_csv, "trackio")
    logs = trackio.SQLiteStorage.get_logs(project=cfg.run_dir_name, run="gdpo")
    keys = set().union(*(row.keys() for row in logs))
    assert any(k.endswith("loss") for k in keys), sorted(keys)
    for ours in OURS:
        assert any(k.endswith(ours) for k in keys), (ours, sorted(keys))
    tracker = open_tracker(cfg, run, "gpo_test", {"steps": 2})
    tracker.log({"val_score": 0.5}, step=1)
    tracker.close()
    gpo = trackio.SQLiteStorage.get_logs(project=cfg.run_dir_name, run="gpo_test")
    assert [(r["step"], r["val_score"]) for r in gpo if "val_score" in r] == [(1, 0.5)]
