"""Shared fixtures. The core suite reads the data embedded in the project (`data/`); data from
outside it (OpinionQA, the Meister subset, movie reviews) is read from ../shared/data beside the
project, never copied, and the tests that need it skip, naming the missing path, where it is
not there."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

# Tests never reach the hub: fail fast instead of retrying for a minute per request.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = PROJECT_ROOT / "data"
GOQA_CSV = EMBEDDED / "globalopinionqa" / "goqa_partial_hf_schema.csv.gz"
OPTION_MAP = EMBEDDED / "gdpo_option_map" / "option_map.json"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

warnings.filterwarnings("ignore", message=".*gradient checkpointing.*", category=FutureWarning)


def optional_data(*parts: str) -> Path:
    """A path under ../shared/data (optional data outside the project); the test skips, naming
    the path, when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"optional data not found: {path} (outside the project; see docs/data.md)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (optional data outside the project); skips when it is missing."""
    return optional_data()


@pytest.fixture(scope="session")
def opinionqa_dir() -> Path:
    """OpinionQA's human_resp folder (optional data)."""
    return optional_data("opinionqa_tatsu", "human_resp")


@pytest.fixture(scope="session")
def movies_txt() -> Path:
    """The SNAP web-Movies sample (optional data)."""
    return optional_data("amazon_movies_snap_sample", "movies-simple.txt")


@pytest.fixture(scope="session")
def goqa_csv() -> Path:
    """The embedded GlobalOpinionQA rows (the hub file's schema, gzip)."""
    return GOQA_CSV


@pytest.fixture(scope="session")
def option_map_path() -> Path:
    """The embedded GDPO option map."""
    return OPTION_MAP


@pytest.fixture()
def tmp_cfg(tmp_path):
    """A default RunConfig whose outputs go to a temporary folder."""
    from gdpolib.config import load_config
    return load_config(overrides={"output_root": str(tmp_path / "outputs")})


# ---------------------------------------------------------------------------- GPO (tests/test_gpo_*.py)
@pytest.fixture(scope="session")
def gpo_synthetic():
    """A builder of a synthetic GPO task with a known answer: synthetic(n_groups, n_q, dim, seed)
    -> (GroupOpinions, EmbeddingTable).

    Two-option questions; group g has a type theta_g in {-2, +2}; its share of option 0 on
    question q is sigmoid(w_q + theta_g). x of option o carries +-w_q, so the truth is a
    function of (x, theta) and theta can only be read off the context. (With a multiplicative
    sigmoid(theta w_q) the context-free optimum is exactly uniform, a saddle GPO needs ~500
    steps to leave; this additive task converges in ~350.)"""
    import numpy as np

    from gdpolib.embeddings import EmbeddingTable, QuestionItem
    from gdpolib.gpo.groups import GroupOpinions

    def synthetic(n_groups: int = 32, n_q: int = 120, dim: int = 12, seed: int = 0):
        rng = np.random.default_rng(seed)
        w = rng.normal(size=n_q)
        items, rows, index = {}, [], {}
        for i in range(n_q):
            qid = f"q{i}"
            items[qid] = QuestionItem(qid, f"question {i}", ["yes", "no"])
            index[qid] = (2 * i, 2)
            for o, sign in enumerate((1.0, -1.0)):
                rows.append(np.concatenate([[sign * w[i]], np.eye(2)[o],
                                            rng.normal(size=dim - 3) * 0.1]))
        emb = EmbeddingTable(np.asarray(rows, np.float32), index, "synthetic", dim)
        theta = {f"g{j}": (2.0 if j % 2 else -2.0) for j in range(n_groups)}
        dists = {}
        for g, t in theta.items():
            p0 = 1 / (1 + np.exp(-(w + t)))
            dists[g] = {f"q{i}": np.array([p0[i], 1 - p0[i]]) for i in range(n_q)}
        return GroupOpinions("synthetic", items, dists, {g: g for g in dists}), emb

    return synthetic


@pytest.fixture(scope="session")
def gpo_synthetic_run(gpo_synthetic):
    """GPO meta-trained for 400 steps on the default synthetic task: (data, emb, split, result)."""
    import torch

    from gdpolib.gpo.groups import split_groups
    from gdpolib.gpo.meta_train import GPOSettings, meta_train

    data, emb = gpo_synthetic()
    split = split_groups(data, [0.75, 0.125, 0.125], seed=0)
    settings = GPOSettings(steps=400, lr=1e-3, loss="kl", batch_groups=8, ctx_range=(3, 10),
                           tar_range=(5, 10), episodes="per_group", eval_every=50, eval_k=5,
                           seed=0, init="answer")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices: threads only add overhead (and spin on a busy CPU)
    try:
        res = meta_train(data, emb, split["train"], split["val"], settings, progress=False)
    finally:
        torch.set_num_threads(threads)
    return data, emb, split, res


@pytest.fixture(scope="session")
def tiny_lm():
    """A builder of a tiny GPT-2 (2 layers x 16) with a BPE trained on a few option prompts:
    tiny_lm(n_positions=256) -> (model, tokenizer)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from gdpolib import embeddings
    from gdpolib.models import train_bpe_tokenizer

    def build(n_positions: int = 256):
        texts = [embeddings.option_prompt("Is the sky blue?", ["Yes", "No", "Maybe"], k)
                 for k in range(3)]
        tok = train_bpe_tokenizer(texts * 5 + list("ABCDEFGH"), vocab_size=300)
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=n_positions,
                                           n_embd=16, n_layer=2, n_head=2)).eval()
        return model, tok

    return build
