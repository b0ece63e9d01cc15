"""Experiment trackers for our own loops (GPO meta-training), with the same `report_to` as the
TRL trainers: none | tensorboard | trackio | wandb.

The TRL trainers get their trackers from transformers (`report_to` in their arguments, see
trainers.fit.trl_args), and the tracking callback forwards our own numbers (eval JSD,
belief mass, reward margins by majority / minority) through them. A loop of ours opens a
`Tracker` here instead:

    tracker = open_tracker(cfg, run, "gpo_goqa", config={...})
    tracker.log({"val_score": 0.81}, step=100)
    tracker.close()

Where the numbers go: tensorboard event files under `<run>/logs/<name>/`; trackio's local
database (project = the run's name, run = `name`; `trackio show --project <run name>`);
wandb's project `gdpo`, run `<run name>/<name>`.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

log = logging.getLogger("gdpolib.trackers")


class Tracker:
    """A no-op tracker (report_to: none); subclasses send the numbers somewhere."""

    def log(self, values: Mapping[str, float], step: int) -> None:
        """Record scalar `values` at `step`."""

    def close(self) -> None:
        """Flush and release the tracker."""


class TensorBoardTracker(Tracker):
    def __init__(self, logdir: str, config: Mapping[str, Any]):
        # Deferred on purpose (here and below): a tracker's package is needed only when it is
        # the one report_to names.
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=logdir)
        self.writer.add_text("config", repr(dict(config)))

    def log(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, float(value), step)

    def close(self) -> None:
        self.writer.close()


class TrackioTracker(Tracker):
    def __init__(self, project: str, name: str, config: Mapping[str, Any]):
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project=project, name=name, config=dict(config), embed=False,
                                auto_log_cpu=False, auto_log_gpu=False)

    def log(self, values: Mapping[str, float], step: int) -> None:
        self.run.log({k: float(v) for k, v in values.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


class WandbTracker(Tracker):
    def __init__(self, project: str, name: str, config: Mapping[str, Any], logdir: str):
        try:
            import wandb
        except ImportError:
            raise RuntimeError("report_to wandb needs the wandb package: pip install wandb") from None
        self.run = wandb.init(project=project, name=name, config=dict(config), dir=logdir,
                              reinit="finish_previous")

    def log(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def close(self) -> None:
        self.run.finish()


def open_tracker(cfg, run, name: str, config: Mapping[str, Any] | None = None) -> Tracker:
    """The tracker `cfg.report_to` names, for the loop `name` of `run` (see the module doc)."""
    config = config or {}
    if cfg.report_to == "tensorboard":
        return TensorBoardTracker(str(run.path("logs", name, "x").parent), config)
    if cfg.report_to == "trackio":
        return TrackioTracker(cfg.run_dir_name, name, config)
    if cfg.report_to == "wandb":
        return WandbTracker("gdpo", f"{cfg.run_dir_name}/{name}", config,
                            str(run.path("logs", "x").parent))
    return Tracker()
