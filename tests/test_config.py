"""Config: defaults, merge order, validation errors that name the key and the file."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from gdpolib import config
from gdpolib.config import ConfigError, RunConfig, load_config, read_yaml, validate

PARAMS = config.PROJECT_ROOT / "params"


def test_defaults_yaml_equals_dataclass_defaults():
    assert load_config() == RunConfig()
    assert set(read_yaml(config.DEFAULTS_FILE)) == {f.name for f in dataclasses.fields(RunConfig)}


@pytest.mark.parametrize("path", sorted(PARAMS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_params_file_is_valid(path):
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
    with pytest.raises(ConfigError) as err:
        load_config([bad])
    msg = str(err.value)
    assert "'contry'" in msg and str(bad) in msg and "'country'" in msg


def test_unknown_country_names_it_and_the_file(tmp_path):
    bad = tmp_path / "atlantis.yaml"
    bad.write_text("country: Atlantis\n")
    with pytest.raises(ConfigError, match=r"country.*atlantis\.yaml.*Atlantis"):
        load_config([bad])


def test_unknown_country_suggests_close_names():
    with pytest.raises(ConfigError, match="S. Africa"):
        load_config(overrides={"country": "S Africa."})


@pytest.mark.parametrize("key,value,expected", [
    ("seed", "abc", "integer"), ("beta", "high", "number"), ("lora", "maybe", "true or false"),
    ("split_fractions", [0.5, 0.5], "three"), ("belief_scheme", "stance7", "options, stance6"),
    ("ablations", ["dpo"], "cdpo"),
])
def test_wrong_types_and_values_fail(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(overrides={key: value})


def test_papermill_style_strings_are_coerced():
    cfg = load_config(overrides={"seed": "3", "beta": "0.5", "lora": "true",
                                 "max_questions": "None", "ablations": "cdpo,mft"})
    assert (cfg.seed, cfg.beta, cfg.lora, cfg.max_questions) == (3, 0.5, True, None)
    assert cfg.ablations == ["cdpo", "mft"]


def test_unknown_model_fails_with_suggestion():
    with pytest.raises(ConfigError, match="gpt2-large"):
        load_config(overrides={"model": "gpt2-larg"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(overrides={"model": "./no/such/model"})
    assert load_config(overrides={"model": "org/some-model"}).model_slug == "some-model"


def test_from_notebook_catches_injected_typos():
    ns = {"country": "pk", "yaml": yaml, "print": print, "_private": 1, "In": []}
    assert config.from_notebook(ns).country_name == "Pakistan"
    with pytest.raises(ConfigError, match=r"'sft_step'.*papermill"):
        config.from_notebook({**ns, "sft_step": 3})


def test_paths_resolve_against_project_root():
    assert config.resolve_path("params/sa.yaml") == PARAMS / "sa.yaml"


def test_validate_names_origin():
    with pytest.raises(ConfigError, match="my file"):
        validate({"seed": "x"}, {"seed": "my file"})
