"""configs/accelerate/: each file loads with accelerate's own config reader as the strategy its
name says, and docs/scaling.md gives its launch command."""
from __future__ import annotations

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from gdpolib.config import PROJECT_ROOT

CONFIGS = PROJECT_ROOT / "configs" / "accelerate"
EXPECTED = {"ddp.yaml": (DistributedType.MULTI_GPU, {}),
            "fsdp2.yaml": (DistributedType.FSDP, {"fsdp_version": 2}),
            "deepspeed-zero2.yaml": (DistributedType.DEEPSPEED, {"zero_stage": 2}),
            "deepspeed-zero3.yaml": (DistributedType.DEEPSPEED, {"zero_stage": 3})}


def test_the_four_strategies_are_shipped():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_as_its_strategy(name):
    cfg = load_config_from_file(str(CONFIGS / name))
    kind, fields = EXPECTED[name]
    assert cfg.distributed_type == kind and cfg.num_machines == 1 and not cfg.use_cpu
    plugin = cfg.fsdp_config if kind == DistributedType.FSDP else cfg.deepspeed_config
    assert all(plugin[k] == v for k, v in fields.items()), (name, plugin)
    scaling = (PROJECT_ROOT / "docs" / "scaling.md").read_text()
    assert f"accelerate launch --config_file configs/accelerate/{name}" in scaling
