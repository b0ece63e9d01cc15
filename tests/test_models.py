"""Model loading: the tiny model with in-process BPE, SmolLM2 offline conversion, hub errors."""
from __future__ import annotations

import pytest
import torch

from gdpolib import models
from gdpolib.runs import Run

TEXTS = ["<Q>Is the economy doing well? Options: 0. Yes 1. No<A>",
         "0<Yes>Things are looking up these days.", "1<No>Prices keep rising, it's hard."] * 10


def test_tiny_model_digits_are_single_tokens_and_it_generates(tmp_cfg):
    model, tok = models.build_tiny(TEXTS, tmp_cfg)
    for d in range(10):
        assert len(tok(str(d))["input_ids"]) == 1
    prompt = tok(TEXTS[0], return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 5


def test_label_tokens_as_in_prompt_make_the_label_a_copy_and_round_trip_exactly(tmp_path):
    texts = ["Is it a problem?\n0 - Very serious problem\n1 - Somewhat serious problem\n",
             "0<Very serious problem>I'd say very serious.", "1<Somewhat serious problem>So so."] * 20
    plain = models.train_bpe_tokenizer(texts, 300)
    copy = models.train_bpe_tokenizer(texts, 300, label_tokens="as_in_prompt")

    def ids(tok, text):
        return tok(text, add_special_tokens=False)["input_ids"]

    label, line = "1<Somewhat serious problem>", "\n1 - Somewhat serious problem\n"
    words = ids(copy, " Somewhat serious problem")
    assert ids(copy, label)[2:-1] == words and ids(copy, line)[3:-1] == words
    assert ids(plain, label)[2:-1] != ids(plain, " Somewhat serious problem")  # the mismatch fixed
    for text in texts[:3] + ["a < b, a<  b, <", "3<", "<<x>>", "2<Yes>"]:
        assert copy.decode(ids(copy, text)) == text                  # every '<' round-trips
    assert copy.decode(ids(copy, "7<")[:1]) == "7"                # the digit is its own token
    assert copy.decode(ids(copy, "2<Very serious")[:2]) == "2<"
    copy.save_pretrained(tmp_path)                      # a run's checkpoint keeps both rules
    loaded = models.load_tokenizer(tmp_path)
    assert ids(loaded, label) == ids(copy, label) and loaded.decode(ids(loaded, label)) == label
    with pytest.raises(ValueError, match="label_tokens.*'as_in_promt'"):
        models.train_bpe_tokenizer(texts, 300, label_tokens="as_in_promt")


@pytest.mark.parametrize("arch, family", [("llama", "LlamaForCausalLM"),
                                          ("gpt2", "GPT2LMHeadModel")])
def test_tiny_arch_builds_the_named_model_seeded_with_its_shape(tmp_cfg, arch, family):
    cfg = tmp_cfg.replace(tiny_arch=arch, tiny_n_layer=2, tiny_n_embd=32, tiny_n_head=2)
    model, tok = models.build_tiny(TEXTS, cfg, n_positions=128)
    again, _ = models.build_tiny(TEXTS, cfg, n_positions=128)
    assert type(model).__name__ == family
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (2, 32, 2)
    assert c.max_position_embeddings == 128 and c.vocab_size == len(tok)
    # tied input and output embeddings (the LM head adds no parameters at this scale)
    assert model.get_output_embeddings().weight.data_ptr() == \
        model.get_input_embeddings().weight.data_ptr()
    for a, b in zip(model.parameters(), again.parameters()):   # seeded by cfg.seed
        assert torch.equal(a, b)


def test_tiny_base_model_is_a_cached_run_stage_sized_from_the_data(tmp_cfg):
    from gdpolib.stages.data import base_model, prepare_data

    cfg = tmp_cfg.replace(max_questions=12)
    run = Run.open(cfg)
    data = prepare_data(cfg, run)
    path, key = base_model(cfg, run, data)
    again = base_model(cfg, run)                    # reused: same folder and key
    assert again == (path, key) and key == run.stage_hash("checkpoints/base")
    m1, t1 = models.load_pretrained(path, cfg)
    m2, t2 = models.load_pretrained(again[0], cfg)
    assert t1.get_vocab() == t2.get_vocab() == models.load_tokenizer(path).get_vocab()
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    # the context holds the longest sequence and the longest prompt plus the generated tokens
    longest = data.longest(t1)
    window = m1.config.max_position_embeddings
    assert window % 64 == 0 and window == models.context_window(path)
    assert longest["sequence"][0] <= window and longest["prompt"][0] + cfg.max_new_tokens <= window
    assert window - 64 < max(longest["sequence"][0], longest["prompt"][0] + cfg.max_new_tokens, 64)
    # another model never asks for the run's data
    assert models.base_checkpoint(cfg.replace(model="smollm2-135m"), run, None) == \
        ("smollm2-135m", "smollm2-135m")
    # another architecture is another stage: the cached base is rebuilt, never reused
    gpt2_path, gpt2_key = models.base_checkpoint(cfg.replace(tiny_arch="gpt2"), run, lambda: data)
    assert gpt2_key != key and models.load_pretrained(gpt2_path, cfg)[0].config.model_type == "gpt2"


def test_device_and_dtype_auto_and_override(tmp_cfg):
    assert models.resolve_device(tmp_cfg).type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        assert models.resolve_dtype(tmp_cfg) == torch.float32
    assert models.resolve_dtype(tmp_cfg.replace(dtype="bfloat16")) == torch.bfloat16
    assert models.resolve_device(tmp_cfg.replace(device="cpu")).type == "cpu"


def test_hub_model_offline_gives_a_clear_error():
    with pytest.raises(models.ModelLoadError, match="offline"):
        models.load_pretrained("gpt2-large")


def test_smollm2_offline_conversion_load_and_generate(tmp_path_factory):
    cache = models.cache_root()  # shared across tests and runs: converted once (~25 s)
    path = models.convert_smollm2(cache)
    assert (path / "config.json").exists() and list(path.glob("*.safetensors"))
    model, tok = models.load_pretrained("smollm2-135m")
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    ids = tok("<Q>Is the sky blue?<A>", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4
    for d in range(10):  # belief digits are single tokens for SmolLM2's tokenizer too
        assert len(tok(str(d), add_special_tokens=False)["input_ids"]) == 1
