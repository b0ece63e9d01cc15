"""Config: one declaration per parameter, validation up front (one-line errors naming the key,
its origin, the value and what is allowed), and the files generated from the declaration."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from gdpolib import config, paramdocs
from gdpolib.paramspec import allowed_text, rule_problem
from gdpolib.config import ConfigError, RunConfig, load_config, read_yaml, validate

PARAMS = config.PROJECT_ROOT / "params"


def _error(overrides=None, files=()) -> str:
    """The message of the ConfigError that loading raises, checked to be one line."""
    with pytest.raises(ConfigError) as err:
        load_config(files, overrides)
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------- the declaration
def test_defaults_yaml_holds_exactly_the_dataclass_defaults():
    assert load_config() == RunConfig()
    assert load_config([config.DEFAULTS_FILE]) == RunConfig()
    on_file, declared = read_yaml(config.DEFAULTS_FILE), RunConfig().to_dict()
    assert list(on_file) == list(declared)               # same names, same order
    assert {k: (v, type(v)) for k, v in on_file.items()} == \
        {k: (v, type(v)) for k, v in declared.items()}


def test_every_parameter_has_help_and_its_default_obeys_its_rules():
    for name, f in config.FIELDS.items():
        help_text = f.metadata["help"]
        assert help_text.endswith(".") and len(help_text.split()) >= 3, name
        assert rule_problem(config.FIELDS[name].metadata, config.default_of(name)) is None, name
    # each field is declared in exactly one section, and the flat view holds them all, in order
    declared = [f.name for cls in config.SECTIONS.values() for f in dataclasses.fields(cls)]
    assert declared == list(config.FIELDS) and len(set(declared)) == len(declared)


def test_sections_are_views_of_the_flat_config():
    cfg = load_config(overrides={"beta": 0.3, "n_samples": 4, "model": "tiny", "gpo_k": 5})
    assert cfg.training.beta == 0.3 and cfg.evaluation.n_samples == 4
    assert cfg.policy.model == "tiny" and cfg.gpo.gpo_k == 5 and cfg.data.country == "sa"
    assert not hasattr(cfg.training, "n_samples")          # a section holds only its own fields
    assert cfg.training.schedule("dpo") == (cfg.dpo_steps, cfg.dpo_lr)


def test_training_section_builds_the_trl_configs():
    """The training fields that are TRL arguments reach SFTConfig / DPOConfig / GDPOConfig by
    their `trl` names (no hand mapping); a config takes only the ones it has."""
    from trl import DPOConfig, SFTConfig

    from gdpolib.trainers.gdpo_trainer import GDPOConfig

    t = load_config(overrides={"batch_size": 3, "grad_accum": 2, "beta": 0.2, "lambda_nll": 0.5,
                               "calibration_form": "full", "save_every": 7,
                               "warmup_steps": 50}).training
    common = dict(output_dir="x", seed=1, use_cpu=True, bf16=False, report_to=[])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)      # no deprecated Trainer argument
        sft = t.trl_args(SFTConfig, steps=20, lr=1e-3, cuda=False, logs_dir=Path("logs/sft"),
                         **common)
    assert (sft.per_device_train_batch_size, sft.gradient_accumulation_steps, sft.save_steps,
            sft.max_steps, sft.learning_rate, sft.warmup_steps) == (3, 2, 7, 20, 1e-3, 19)
    assert sft.run_name == "sft" and not sft.activation_checkpointing
    assert not sft.gradient_checkpointing                  # TRL's own default is True
    gdpo = t.trl_args(GDPOConfig, steps=5, lr=1e-4, cuda=False, logs_dir=Path("l"),
                      lambda_cal=0.0, **common)
    assert (gdpo.beta, gdpo.lambda_nll, gdpo.calibration_form) == (0.2, 0.5, "full")
    assert gdpo.lambda_cal == 0.0                           # the method's own value wins
    dpo = t.trl_args(DPOConfig, steps=5, lr=1e-4, cuda=False, logs_dir=Path("l"),
                     loss_type="ipo", **common)
    assert dpo.beta == 0.2 and dpo.loss_type == ["ipo"] and not hasattr(dpo, "lambda_nll")


def test_n_styles_bound_is_the_number_of_styles():
    from gdpolib.data.responses import STYLES

    assert config.FIELDS["n_styles"].metadata["le"] == len(STYLES)
    assert load_config(overrides={"n_styles": len(STYLES)}).n_styles == len(STYLES)


def test_heldout_styles_must_leave_a_training_style():
    with pytest.raises(ConfigError, match=r"'heldout_styles' from -p: 1 held-out style\(s\) leave "
                                          r"no training style of n_styles 1"):
        load_config(overrides={"n_styles": 1, "heldout_styles": 1})
    assert load_config(overrides={"n_styles": 1, "heldout_styles": 0}).heldout_styles == 0
    assert load_config(overrides={"n_styles": 1, "split_by": "question"}).heldout_styles == 1


def test_generated_files_are_up_to_date():
    stale = paramdocs.sync_generated()
    assert not stale, (f"{', '.join(p.name for p in stale)} stale: run "
                       f"`python -m gdpolib.paramdocs --write` and commit the result")


def test_stale_generated_files_are_found_and_rewritten(tmp_path):
    defaults, page = tmp_path / "defaults.yaml", tmp_path / "parameters.md"
    metrics_md = tmp_path / "metrics.md"
    defaults.write_text(config.DEFAULTS_FILE.read_text().replace("seed: 0", "seed: 1"))
    page.write_text(paramdocs.PARAMETERS_FILE.read_text().replace("| `seed` | `0` |", "| `seed` | `9` |"))
    metrics_md.write_text(paramdocs.METRICS_FILE.read_text().replace("lower", "higher", 1))
    files = [defaults, page, metrics_md]
    assert paramdocs.sync_generated(False, *files) == files
    assert "seed: 1" in defaults.read_text()             # checking writes nothing
    assert paramdocs.sync_generated(True, *files) == files
    assert defaults.read_text() == config.DEFAULTS_FILE.read_text()
    assert page.read_text() == paramdocs.PARAMETERS_FILE.read_text()
    assert metrics_md.read_text() == paramdocs.METRICS_FILE.read_text()
    assert paramdocs.sync_generated(False, *files) == []
    page.unlink()                                         # a missing page is stale too
    assert paramdocs.sync_generated(False, *files) == [page]


def test_parameters_page_lists_every_parameter_with_its_allowed_values():
    page = paramdocs.render_parameters_page()
    for name in config.FIELDS:
        assert f"| `{name}` |" in page, name
    assert "| `top_p` | `1.0` | a number in (0, 1] |" in page
    assert "| `belief_scheme` | `options` | one of options, stance6 |" in page


def test_command_line_check_passes_on_the_committed_files():
    res = subprocess.run([sys.executable, "-m", "gdpolib.paramdocs"], capture_output=True, text=True,
                         cwd=config.PROJECT_ROOT,
                         env={**os.environ, "PYTHONPATH": str(config.PROJECT_ROOT)})
    assert res.returncode == 0, res.stderr
    assert "up to date" in res.stdout


def test_importing_config_loads_no_heavy_package():
    heavy = ("torch", "transformers", "trl", "datasets", "pandas", "sentence_transformers")
    code = (f"import sys, gdpolib.config; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(config.PROJECT_ROOT)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# ---------------------------------------------------------------- merge order and origins
@pytest.mark.parametrize("path", sorted(PARAMS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_params_file_is_valid(path, request, monkeypatch):
    if "survey: opinionqa" in path.read_text():   # needs OpinionQA, optional data outside the project
        monkeypatch.delenv("GDPO_DATA_DIR", raising=False)
        missing = _error(files=[path], overrides={"opinionqa_path": "auto"})
        assert "'opinionqa_path'" in missing and "GDPO_DATA_DIR" in missing
        load_config([path], {"opinionqa_path": str(request.getfixturevalue("opinionqa_dir"))})
    else:
        load_config([path])


def test_merge_order_files_then_overrides(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("country: us\nbeta: 0.2\nseed: 3\n")
    b.write_text("beta: 0.3\n")
    cfg = load_config([a, b], {"seed": 7})
    assert (cfg.country_name, cfg.beta, cfg.seed) == ("United States", 0.3, 7)


def test_country_file_alone_picks_a_model_and_combines_with_a_model_file():
    alone = load_config([PARAMS / "sa.yaml"])
    assert alone.country_name == "S. Africa" and alone.model == "tiny"
    both = load_config([PARAMS / "sa.yaml", PARAMS / "pythia-2.8b.yaml"])
    assert both.country_name == "S. Africa" and both.model == "EleutherAI/pythia-2.8b"
    assert both.run_dir_name == "sa-pythia-2.8b" and both.kshot_k == 5


def test_misspelled_key_names_key_file_and_suggestion(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("contry: sa\n")
    msg = _error(files=[bad])
    assert "'contry'" in msg and str(bad) in msg and "'country'" in msg


def test_error_names_where_the_value_came_from(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("seed: -1\n")
    assert _error(files=[f]).startswith(f"parameter 'seed' from the params file '{f}': -1 ")
    assert _error({"seed": -1}).startswith("parameter 'seed' from -p: -1 ")
    with pytest.raises(ConfigError, match=r"^parameter 'seed' from the notebook parameters"):
        config.from_notebook({"seed": -1})
    with pytest.raises(ConfigError, match="my file"):
        validate({"seed": "x"}, {"seed": "my file"})


def test_unknown_country_names_it_and_the_file(tmp_path):
    bad = tmp_path / "atlantis.yaml"
    bad.write_text("country: Atlantis\n")
    with pytest.raises(ConfigError, match=r"country.*atlantis\.yaml.*Atlantis"):
        load_config([bad])


def test_unknown_country_suggests_close_names():
    with pytest.raises(ConfigError, match="S. Africa"):
        load_config(overrides={"country": "S Africa."})


def test_from_notebook_catches_injected_typos():
    ns = {"country": "pk", "yaml": yaml, "print": print, "_private": 1, "In": []}
    assert config.from_notebook(ns).country_name == "Pakistan"
    with pytest.raises(ConfigError, match=r"'sft_step'.*papermill"):
        config.from_notebook({**ns, "sft_step": 3})


def test_paths_resolve_against_project_root():
    assert config.resolve_path("params/sa.yaml") == PARAMS / "sa.yaml"


# ---------------------------------------------------------------- types
@pytest.mark.parametrize("key,value,expected", [
    ("seed", "abc", "'abc' (str) is not an integer; allowed: an integer in [0, 4294967296)"),
    ("beta", "high", "'high' (str) is not a number; allowed: a number > 0"),
    ("lora", "maybe", "'maybe' (str) is not true or false"),
    ("sft_steps", True, "True (bool) is not an integer"),
    ("beta", "nan", "'nan' is not a finite number"), ("sft_lr", float("inf"), "inf is not a finite"),
    ("gpo_k_values", [1, "x"], "item 1 of [1, 'x']: 'x' (str) is not an integer"),
    ("run_name", ["a"], "['a'] (list) is not a string"),
])
def test_wrong_types_fail(key, value, expected):
    assert expected in _error({key: value})


def test_papermill_style_strings_are_coerced():
    cfg = load_config(overrides={"seed": "3", "beta": "0.5", "lora": "true",
                                 "max_questions": "None", "ablations": "cdpo,mft"})
    assert (cfg.seed, cfg.beta, cfg.lora, cfg.max_questions) == (3, 0.5, True, None)
    assert cfg.ablations == ["cdpo", "mft"]


def test_one_p_parser_for_every_command_line():
    """Every CLI, script and benchmark takes -f/-p from config.add_params_arguments: values are
    YAML scalars (as papermill's), and value_text gives the text that parses back to them."""
    import argparse

    ap = argparse.ArgumentParser()
    config.add_params_arguments(ap)
    args = ap.parse_args(["-p", "ablations", "[cdpo]", "-p", "sft_lr", "1e-4", "-p", "seed", "3",
                          "-p", "max_questions", "null", "-p", "lora", "true", "-p", "group",
                          "Democrat", "-f", "a.yaml"])
    assert args.files == ["a.yaml"]
    assert args.params == [("ablations", ["cdpo"]), ("sft_lr", "1e-4"), ("seed", 3),
                           ("max_questions", None), ("lora", True), ("group", "Democrat")]
    for _, value in args.params:
        assert config.parse_value(config.value_text(value)) == value
    cfg = load_config(overrides={k: v for k, v in args.params if k != "group"})
    assert (cfg.ablations, cfg.sft_lr, cfg.seed, cfg.max_questions) == (["cdpo"], 1e-4, 3, None)
    root = Path(config.PROJECT_ROOT)
    for path in ["gdpolib/pipeline.py", "gdpolib/train.py", "gdpolib/sweep.py",
                 *map(str, sorted((root / "scripts").glob("*.py"))),
                 *map(str, sorted((root / "benchmarks").glob("bench_*.py")))]:
        text = (root / path).read_text()
        if "argparse" in text and "-p " in text:
            assert "add_params_arguments(" in text, f"{path} parses -p itself"


def test_run_name_given_as_a_number_is_that_string_everywhere(tmp_path):
    value = config.parse_value("2024")                    # what `-p run_name 2024` becomes
    assert value == 2024
    f = tmp_path / "run.yaml"
    f.write_text("run_name: 2024\n")
    for cfg in (load_config(overrides={"run_name": value}), load_config([f]),
                config.from_notebook({"run_name": value}),   # papermill injects `run_name = 2024`
                load_config(overrides={"run_name": "2024"})):   # gdpolib.train passes the text
        assert cfg.run_name == "2024" and cfg.run_dir.name == "2024"
    assert load_config(overrides={"api_model": 4.5}).api_model == "4.5"
    assert "True (bool) is not a string" in _error({"run_name": True})


# ---------------------------------------------------------------- ranges and choices
@pytest.mark.parametrize("key,value,bad,allowed", [
    ("sft_steps", 0, "0", "an integer >= 1"),
    ("batch_size", 0, "0", "an integer >= 1"),
    ("seed", -1, "-1", "an integer in [0, 4294967296)"),
    ("seed", 2**32, "4294967296", "an integer in [0, 4294967296)"),
    ("sft_lr", 0, "0.0", "a number > 0"),
    ("beta", -0.1, "-0.1", "a number > 0"),
    ("temperature", 0.0, "0.0", "a number > 0"),
    ("top_p", 0, "0.0", "a number in (0, 1]"),
    ("top_p", 1.5, "1.5", "a number in (0, 1]"),
    ("label_smoothing", 0.5, "0.5", "a number in [0, 0.5)"),
    ("max_options", 11, "11", "an integer in [1, 10]"),
    ("max_questions", 0, "0", "an integer >= 1 or null"),
    ("gpo_k_values", [1, 0], "0 in [1, 0]", "a list of integers, each >= 1"),
])
def test_values_out_of_range_fail(key, value, bad, allowed):
    assert _error({key: value}) == (f"parameter {key!r} from -p: {bad} is out of range; "
                                    f"allowed: {allowed}")


@pytest.mark.parametrize("key,value", [
    ("top_p", 1), ("seed", 0), ("max_questions", None), ("max_questions", 1),
    ("label_smoothing", 0.49), ("top_k", 0), ("kshot_k", 0), ("max_options", 1),
])
def test_values_at_the_edge_of_their_range_pass(key, value):
    assert getattr(load_config(overrides={key: value}), key) == value


@pytest.mark.parametrize("key,value,expected", [
    ("split_fractions", [0.5, 0.5], "three non-negative numbers summing to 1"),
    ("gpo_group_split", [0.6, 0.6, -0.2], "three non-negative numbers summing to 1"),
    ("gpo_ctx_range", [5, 2], "[5, 2] is not [min, max] with 1 <= min <= max"),
    ("gpo_tar_range", [0, 3], "[0, 3] is not [min, max] with 1 <= min <= max"),
    ("tiny_n_embd", 30, "30 is not a multiple of tiny_n_head (4)"),
])
def test_rules_between_values_fail(key, value, expected):
    msg = _error({key: value})
    assert msg.startswith(f"parameter {key!r} from -p: ") and expected in msg


def test_bad_choice_fails_with_the_choices():
    assert _error({"belief_scheme": "stance7"}) == (
        "parameter 'belief_scheme' from -p: 'stance7' is not among the choices; "
        "allowed: one of options, stance6")


@pytest.mark.parametrize("key,value,bad,names", [
    ("methods", ["sft", "foo"], "['foo'] are not registered methods (baselines are always "
                                "scored)", "kshot, icf, sft, dpo, gdpo, cdpo, mft"),
    ("ablations", ["dpo"], "['dpo'] are not registered ablations", "cdpo, mft"),
])
def test_a_method_not_in_the_registry_fails_naming_the_registered_ones(key, value, bad, names):
    """The method parameters' choices are the registry's (gdpolib.methods), named in the error
    (the generated docs point to the registry instead of copying it)."""
    msg = _error({key: value})
    assert msg.startswith(f"parameter {key!r} from -p: {bad} (")
    assert all(n in msg.split(f"{bad} (")[1].split(")")[0] for n in names.split(", "))
    assert "gdpolib/methods.py" in msg
    assert load_config(overrides={"methods": ["icf", "mft"]}).methods == ["icf", "mft"]
    assert _error({"methods": ["uniform"]}).startswith("parameter 'methods' from -p: ['uniform']")


@pytest.mark.parametrize("device", ["auto", "cpu", "mps", "cuda", "cuda:0", "cuda:12"])
def test_valid_devices_pass(device):
    assert load_config(overrides={"device": device}).device == device


@pytest.mark.parametrize("device", ["tpu9", "cuda:", "gpu", "CUDA", "cpu:0", "cuda:x"])
def test_invalid_device_fails(device):
    assert _error({"device": device}) == (f"parameter 'device' from -p: {device!r} is not of the "
                                          f"allowed form; allowed: auto, cpu, mps, cuda or cuda:N")


def test_unknown_model_fails_with_suggestion():
    with pytest.raises(ConfigError, match="gpt2-large"):
        load_config(overrides={"model": "gpt2-larg"})
    assert load_config(overrides={"model": "org/some-model"}).model_slug == "some-model"


# ---------------------------------------------------------------- input paths
def _paths(tmp_path):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    file = tmp_path / "a_file.csv"
    file.write_text("x\n")
    return str(folder), str(file), str(tmp_path / "missing")


@pytest.mark.parametrize("key,kind", [
    ("goqa_path", "file"), ("option_map_path", "file"), ("movies_path", "file"),
    ("opinionqa_path", "folder"), ("model", "folder"),
])
def test_path_parameter_that_is_missing_or_the_wrong_kind_fails(tmp_path, key, kind):
    folder, file, missing = _paths(tmp_path)
    allowed = allowed_text(config.FIELDS[key].metadata, config.HINTS[key])
    assert _error({key: missing}) == (f"parameter {key!r} from -p: {missing!r} does not exist; "
                                      f"allowed: {allowed}")
    wrong = folder if kind == "file" else file
    other = "a folder, not a file" if kind == "file" else "a file, not a folder"
    assert _error({key: wrong}) == (f"parameter {key!r} from -p: {wrong!r} is {other}; "
                                    f"allowed: {allowed}")
    right = file if kind == "file" else folder
    assert getattr(load_config(overrides={key: right}), key) == right


def test_relative_path_error_shows_where_it_was_looked_for():
    msg = _error({"goqa_path": "../no/such.csv"})
    assert "'../no/such.csv' does not exist (resolved to " in msg
    assert str(config.PROJECT_ROOT.parent / "no" / "such.csv") in msg


def test_data_values_that_are_not_paths_pass_without_a_download(tmp_path):
    movies = tmp_path / "movies.txt"
    movies.write_text("x\n")
    cfg = load_config(overrides={
        "goqa_path": "hub", "option_map_path": "github", "opinionqa_path": None,
        "movies_path": str(movies)})
    assert (cfg.goqa_path, cfg.option_map_path, cfg.opinionqa_path) == ("hub", "github", None)
    for value in ("https://example.org/option_map.json", "http://localhost/map.json", None,
                  "https://example.org/m.json#sha256=" + "ab" * 32):
        assert load_config(overrides={"option_map_path": value}).option_map_path == value
    assert load_config(overrides={"goqa_path": None}).goqa_path is None
    assert "'githubx' does not exist" in _error({"option_map_path": "githubx"})
    assert "'hub' does not exist" in _error({"option_map_path": "hub"})   # not its remote
    assert "needs 64 hex digits" in _error({"goqa_path": "https://example.org/a.csv#sha256=12"})
    assert "not a URL with a host" in _error({"survey_path": "https:///a.csv"})


def test_the_defaults_are_the_embedded_data():
    cfg = load_config()
    assert config.resolve_path(cfg.goqa_path) == config.PROJECT_ROOT / "data" / "globalopinionqa" / \
        "goqa_partial_hf_schema.csv.gz"
    assert config.resolve_path(cfg.option_map_path).is_file()
    assert cfg.opinionqa_path == "auto"


# ---------------------------------------------------------------- params files
def test_params_file_that_is_not_utf8_fails_naming_it(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("country: sa\nrun_name: S\u00e3o\n".encode("latin-1"))
    msg = _error(files=[bad])
    assert msg == f"params file {str(bad)!r} is not UTF-8 text (byte 0xe3 at offset 23)"


def test_params_file_that_is_not_valid_yaml_fails_naming_it(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("seed: 1\nmethods: [sft, dpo\n")
    msg = _error(files=[bad])
    assert msg.startswith(f"params file {str(bad)!r} is not valid YAML: line ")


@pytest.mark.parametrize("text,expected", [
    ("- seed\n- 1\n", "must hold a mapping of name: value, not a list"),
    ("", None),
])
def test_params_file_must_be_a_mapping(tmp_path, text, expected):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    if expected is None:
        assert load_config([f]) == RunConfig()
    else:
        assert expected in _error(files=[f])


def test_params_file_that_is_missing_or_a_folder_fails(tmp_path):
    assert _error(files=[tmp_path / "none.yaml"]).endswith("does not exist")
    assert _error(files=[tmp_path]).endswith("is not a file")
