"""The run section: where a run lives, its seed and the device it runs on."""
from __future__ import annotations

import dataclasses

from gdpolib.paramspec import name_problem, param


@dataclasses.dataclass(frozen=True)
class RunSection:
    """Where the run lives and what it runs on."""

    run_name: str | None = param(None, 'Run folder under output_root; null = '
                                       '"<country slug>-<model slug>" (e.g. sa-tiny).',
                                 check=name_problem, allowed="a folder name (no path) or null")
    update_run: bool = param(False, "Reuse a run folder whose config.yaml holds other parameters "
                                    "(its metrics.json is cleared; unchanged stages are reused); "
                                    "false = refuse, so no run's record is ever rewritten.")
    output_root: str = param("outputs", "Folder of the run folders (anywhere; see Outputs).")
    seed: int = param(0, "Seed of every random draw (data, splits, training, sampling, GPO).",
                      ge=0, lt=2**32)
    device: str = param("auto", "Where models run; auto = CUDA if available, else MPS, else CPU.",
                        pattern=r"auto|cpu|mps|cuda(:\d+)?", allowed="auto, cpu, mps, cuda or cuda:N")
    dtype: str = param("auto", "Dtype of loaded weights; auto = bfloat16 on a CUDA device that has "
                               "it, else float32 (training: float32 weights, bf16 autocast on CUDA).",
                       choices=("auto", "float32", "bfloat16", "float16"))
