"""A run never destroys or escapes.

1. Every escape of a run name, output root, sweep name or publish argument is refused before
   anything is written: each is tried on a scratch tree whose every file is checksummed before
   and after. The clean-up of killed builds stays inside the run folder.
2. Two real processes on one run folder: the second fails at once naming the first; the first
   finishes with the metrics and weights of a run alone. A killed holder frees the folder.
3. Cached stages are checked before reuse: a cut checkpoint is named and rebuilt identically,
   publish refuses it, and every damaged record is named.
4. Parameters are parsed safely (no alias bombs, no duplicate keys, bounded sizes) and every
   range, the device and the survey's size are checked before the first write.
5. Credentials never reach a record (config, stage records, executed notebooks, logs, model
   cards), and the kernels still get the real value.
6. A survey row longer than max_text_chars is refused by name; skipped rows are counted on the
   console.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gdpolib import config, folders, integrity, pipeline, publish, runs, seeds, sweep, train
from gdpolib.config import PROJECT_ROOT, ConfigError, load_config
from gdpolib.data import goqa
from gdpolib.data.survey import SurveyRow
from gdpolib.data.survey_files import write_survey
from gdpolib.runs import Run

PY = sys.executable
SECRET = "sk-proj-TESTSECRETabcdefghijklmnop0123"
ENV_SECRETS = {"OPENAI_API_KEY": "sk-ENVSECRETabcdefghijklmnopqrs0123",
               "HF_TOKEN": "hf_ENVSECRETabcdefghijklmnopqrstuvwxyz01"}
# A training run of a few seconds (the tiny model, 4 questions, 4 SFT steps).
TINY = {"max_questions": 4, "tiny_n_layer": 1, "tiny_n_embd": 32, "tiny_n_head": 2,
        "tiny_vocab_size": 400, "batch_size": 4, "sft_steps": 4, "eval_every": 2,
        "eval_subset": 4, "n_samples": 1, "device": "cpu"}


def tree_state(root: Path) -> dict[str, str]:
    """Every path under `root`, hidden ones too -> the sha256 of its bytes ("dir" for a
    folder), so that any change, addition or removal shows."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            state[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            state[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return state


@pytest.fixture
def scratch(tmp_path):
    """A project-like tree: a package of .py files, a tracked notebook, a user's own folder
    with data and a hidden `.settings.old` folder, and an outputs/ folder."""
    root = tmp_path / "tree"
    (root / "gdpolib" / "data").mkdir(parents=True)
    for i in range(3):
        (root / "gdpolib" / "data" / f"m{i}.py").write_text(f"X = {i}\n")
    (root / "notebooks").mkdir()
    (root / "notebooks" / "01_prepare_data.ipynb").write_text('{"cells": []}')
    victim = root / "victim"
    (victim / "data").mkdir(parents=True)
    (victim / "data" / "important.txt").write_text("keep me")
    (victim / "projects" / "notes" / ".settings.old").mkdir(parents=True)
    (victim / "projects" / "notes" / ".settings.old" / "s.json").write_text("{}")
    (root / "outputs").mkdir()
    return root


def _pipeline_refusal(capsys, *args) -> str:
    """Run the pipeline's entry point in this process; it must refuse (exit 2) with one line."""
    capsys.readouterr()
    assert pipeline.main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# ============================================================== 1. confined folders
def _escapes(root: Path) -> list[tuple[list[str], str]]:
    victim = root / "victim"
    return [
        (["-p", "output_root", str(root / "gdpolib"), "-p", "run_name", "."], "starts with '.'"),
        (["-p", "output_root", str(root / "outputs"), "-p", "run_name", ".."], "starts with '.'"),
        (["-p", "run_name", str(victim)], "path separator"),
        (["-p", "output_root", str(root / "outputs"), "-p", "run_name", "../../escape"],
         "path separator"),
        (["-p", "output_root", str(root), "-p", "run_name", "victim"],
         "is not a run folder (no config.yaml"),
        (["-p", "output_root", str(root), "-p", "run_name", "gdpolib"],
         "is not a run folder (no config.yaml"),
        (["-p", "output_root", str(victim), "-p", "run_name", "projects"],
         "is not a run folder"),
    ]


def test_every_escape_of_a_run_folder_is_refused_and_nothing_around_it_changes(scratch, capsys):
    for args, expected in _escapes(scratch):
        before = tree_state(scratch.parent)
        err = _pipeline_refusal(capsys, *args)
        assert expected in err, (args, err)
        assert tree_state(scratch.parent) == before, args


def test_a_folder_with_someone_elses_config_yaml_is_not_a_run_folder(scratch, capsys):
    other = scratch / "outputs" / "app"
    other.mkdir()
    (other / "config.yaml").write_text("server: {port: 80}\n")
    (other / "data.db").write_bytes(b"\0" * 10)
    before = tree_state(scratch)
    err = _pipeline_refusal(capsys, "-p", "output_root", str(scratch / "outputs"),
                            "-p", "run_name", "app")
    assert "not a run folder (its config.yaml is not a run's record)" in err
    assert tree_state(scratch) == before


def test_sweep_names_and_publish_arguments_cannot_escape(scratch, capsys):
    out = scratch / "outputs"
    (out / "sweeps" / "mine").mkdir(parents=True)
    (out / "sweeps" / "mine" / "notes.txt").write_text("not a sweep")
    before = tree_state(scratch.parent)
    for name, expected in (("../../x", "path separator"), (".", "starts with '.'"),
                           ("mine", "is not a sweep folder (no sweep.json")):
        code = sweep.main(["--countries", "sa", "--name", name, "-p", "output_root", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and expected in err and "\n" not in err, (name, err)
    # publish: a method is a name from a list, never a path; the run folder must be a run's
    with pytest.raises(SystemExit) as exc:
        publish.main([str(out), "--method", "../checkpoints/gdpo", "--dry-run"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert publish.main([str(scratch / "victim"), "--method", "gdpo", "--repo-id", "a/b",
                         "--dry-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert "is not a run folder (no config.yaml)" in err and "\n" not in err
    assert tree_state(scratch.parent) == before


def test_the_clean_up_of_killed_builds_stays_inside_the_run_folder(scratch):
    cfg = load_config(overrides={"output_root": str(scratch / "outputs"), "run_name": "r"})
    run = Run.open(cfg)
    left = [run.root / "stages" / "test" / ".sft.building", run.root / "checkpoints" / ".dpo.old",
            run.root / ".data.building"]
    for d in left:
        d.mkdir(parents=True)
        (d / "partial.bin").write_bytes(b"x")
    deep = run.root / "figures" / "mine" / "keep" / ".drafts.old"      # not where stages live
    deep.mkdir(parents=True)
    (deep / "draft.png").write_bytes(b"png")
    link = run.root / "checkpoints" / "elsewhere"       # a link out of the run folder
    link.symlink_to(scratch / "victim" / "projects" / "notes", target_is_directory=True)
    before = tree_state(scratch / "victim")
    Run.open(cfg)
    assert not any(d.exists() for d in left)
    assert (deep / "draft.png").exists()
    assert tree_state(scratch / "victim") == before
    assert (scratch / "victim" / "projects" / "notes" / ".settings.old" / "s.json").exists()


# ============================================================== 2. one run per folder
def _train_args(goqa_csv, out: Path, name: str, **extra) -> list[str]:
    args = ["--method", "sft"]
    for k, v in {**TINY, "goqa_path": str(goqa_csv), "output_root": str(out), "run_name": name,
                 **extra}.items():
        args += ["-p", k, str(v)]
    return args


def _env() -> dict[str, str]:
    return {**os.environ, **ENV_SECRETS, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def solo(tmp_path_factory, goqa_csv):
    """A short SFT run alone (a real process), with a credential in api_base and secrets in its
    environment: (run folder, its metrics, its weights)."""
    out = tmp_path_factory.mktemp("solo")
    args = _train_args(goqa_csv, out, "solo", api_base=f"https://user:{SECRET}@llm.example/v1")
    res = subprocess.run([PY, "-m", "gdpolib.train", *args], cwd=PROJECT_ROOT, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = out / "solo"
    return (run_dir, json.loads((run_dir / "metrics.json").read_text()),
            (run_dir / "checkpoints" / "sft" / "model.safetensors").read_bytes())


def test_a_second_run_on_the_same_folder_fails_at_once_naming_the_first(solo, goqa_csv, tmp_path):
    run_dir, solo_metrics, solo_weights = solo
    args = _train_args(goqa_csv, tmp_path, "shared",
                       api_base=f"https://user:{SECRET}@llm.example/v1")
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen([PY, "-m", "gdpolib.train", *args], cwd=PROJECT_ROOT, env=_env(),
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while folders.busy_problem(tmp_path / "shared", "run") is None:
            assert first.poll() is None and time.time() < deadline, "the first run never started"
            time.sleep(0.05)
        start = time.time()
        second = subprocess.run([PY, "-m", "gdpolib.train", *args], cwd=PROJECT_ROOT, env=_env(),
                                capture_output=True, text=True, timeout=60)
        seconds = time.time() - start
        first.wait(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    line = second.stderr.strip()
    assert second.returncode == 2 and "\n" not in line, line
    assert f"is in use by pid {first.pid}" in line and "since 20" in line
    assert "python -m gdpolib.train" in line and SECRET not in line
    assert seconds < 2.0, f"the second run took {seconds:.1f} s to refuse"
    # the first run was not disturbed: the numbers and weights of a run alone
    assert first.returncode == 0, (tmp_path / "first.log").read_text()[-3000:]
    metrics = json.loads((tmp_path / "shared" / "metrics.json").read_text())
    assert metrics["methods"]["sft"] == solo_metrics["methods"]["sft"]
    assert (tmp_path / "shared" / "checkpoints" / "sft" / "model.safetensors").read_bytes() \
        == solo_weights


def test_a_killed_holder_frees_the_folder(tmp_path):
    holder = subprocess.Popen(
        [PY, "-c", "import sys, time; from pathlib import Path; from gdpolib import folders; "
                   "folders.hold(Path(sys.argv[1]), 'run'); print('held', flush=True); "
                   "time.sleep(120)", str(tmp_path / "r")],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        problem = folders.busy_problem(tmp_path / "r", "run")
        assert problem and f"pid {holder.pid}" in problem
        with pytest.raises(folders.FolderError, match=f"in use by pid {holder.pid}"):
            folders.hold(tmp_path / "r", "run")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert folders.busy_problem(tmp_path / "r", "run") is None
    folders.hold(tmp_path / "r", "run")         # the OS dropped the lock with its process
    folders.release(tmp_path / "r")


KERNEL = """
import sys, time
import ipykernel  # noqa: F401  (a Jupyter kernel's process)
from gdpolib import config, runs
cfg = config.load_config(overrides={"output_root": sys.argv[1], "run_name": "k"})
run = runs.Run.open(cfg)
print("opened", flush=True)
def build(out):
    print("building", flush=True)
    time.sleep(float(sys.argv[2]))
    (out / "x.txt").write_text("x")
run.stage("stages/slow", {"v": 1}, build)
print("built", flush=True)
time.sleep(120)
"""


def test_a_jupyter_kernel_holds_its_run_only_while_it_writes(tmp_path):
    """Notebook 02 opens the run while notebook 01's kernel is alive; a write of another process
    meanwhile is refused, naming the kernel."""
    kernel = subprocess.Popen([PY, "-c", KERNEL, str(tmp_path), "6"], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert kernel.stdout.readline().strip() == "opened"
        assert kernel.stdout.readline().strip() == "building"
        problem = folders.busy_problem(tmp_path / "k", "run")
        assert problem and f"pid {kernel.pid}" in problem and "Jupyter kernel" in problem
        assert kernel.stdout.readline().strip() == "built"
        assert folders.busy_problem(tmp_path / "k", "run") is None     # alive, not writing
        cfg = load_config(overrides={"output_root": str(tmp_path), "run_name": "k"})
        run = Run.open(cfg)                                            # another notebook
        assert run.stage_done("stages/slow", {"v": 1})
        run.close()
    finally:
        kernel.send_signal(signal.SIGKILL)
        kernel.wait()


def test_the_other_ranks_of_an_accelerate_launch_work_under_rank_0s_lock(tmp_cfg, monkeypatch):
    holder = subprocess.Popen(        # rank 0, holding the run folder
        [PY, "-c", "import sys, time; from pathlib import Path; from gdpolib import folders; "
                   "folders.hold(Path(sys.argv[1]), 'run'); print('held', flush=True); "
                   "time.sleep(120)", str(tmp_cfg.run_dir)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runs.RunError, match="in use by pid"):
            runs.check_run_folder(tmp_cfg)
        monkeypatch.setenv("RANK", "1")
        runs.claim(tmp_cfg)             # rank 1: checked, config.yaml written, no lock taken
        assert (tmp_cfg.run_dir / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()


# ============================================================== 3. verified caches
def test_a_cut_checkpoint_is_named_rebuilt_identically_and_never_published(solo, goqa_csv,
                                                                           capsys):
    """The probe: a checkpoint whose model.safetensors is cut to half."""
    run_dir, _, solo_weights = solo
    weights = run_dir / "checkpoints" / "sft" / "model.safetensors"
    weights.write_bytes(solo_weights[:len(solo_weights) // 2])
    # publish refuses it, naming the file and how to rebuild it
    assert publish.main([str(run_dir), "--method", "sft", "--repo-id", "a/b", "--dry-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert "checkpoints/sft/model.safetensors has" in err and "when written" in err
    assert "--method sft" in err and "\n" not in err
    assert not (run_dir / "publish" / "sft").exists()
    # the training entry point says so and rebuilds it, byte for byte
    args = _train_args(goqa_csv, run_dir.parent, "solo",
                       api_base=f"https://user:{SECRET}@llm.example/v1")
    res = subprocess.run([PY, "-m", "gdpolib.train", *args], cwd=PROJECT_ROOT, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "stage checkpoints/sft: " in res.stderr and "model.safetensors has" in res.stderr
    assert weights.read_bytes() == solo_weights
    # and publishing works again
    assert publish.main([str(run_dir), "--method", "sft", "--repo-id", "a/b", "--dry-run"]) == 0
    card = (run_dir / "publish" / "sft" / "README.md").read_text()
    assert SECRET not in card and "https://***@llm.example/v1" in card


def _stage(run, calls):
    def build(out):
        calls.append(1)
        (out / "a.json").write_text(json.dumps({"x": list(range(50))}))
        (out / "sub").mkdir()
        (out / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4)
    return run.stage("stages/toy", {"k": 1}, build)


@pytest.mark.parametrize("damage,named", [
    (lambda d: (d / "sub" / "b.bin").write_bytes(bytes(range(256)) * 2), "sub/b.bin has 512 bytes"),
    (lambda d: (d / "sub" / "b.bin").write_bytes(bytes(255 - i for i in range(256)) * 4),
     "sub/b.bin differs from what was written"),
    (lambda d: (d / "a.json").unlink(), "a.json is missing"),
    (lambda d: (d / "stage.json").write_text((d / "stage.json").read_text()[:40]),
     "stage.json is not valid JSON"),
])
def test_a_damaged_stage_is_named_and_rebuilt(tmp_cfg, capsys, damage, named):
    run = Run.open(tmp_cfg)
    calls = []
    folder = _stage(run, calls)
    written = tree_state(folder)
    assert _stage(run, calls) == folder and len(calls) == 1        # reused while intact
    damage(folder)
    integrity._TRUSTED.clear()      # as a later process finds it (this one trusts what it hashed)
    _stage(run, calls)
    assert len(calls) == 2 and tree_state(folder) == written
    err = capsys.readouterr().err
    assert named in err and "rebuilding it" in err


def test_a_stage_recorded_without_file_hashes_is_rebuilt(tmp_cfg, capsys):
    run = Run.open(tmp_cfg)
    calls = []
    folder = _stage(run, calls)
    record = json.loads((folder / "stage.json").read_text())
    del record["files"]                     # as gdpolib wrote it before stages had hashes
    (folder / "stage.json").write_text(json.dumps(record))
    _stage(run, calls)
    assert len(calls) == 2 and "lists no file hashes" in capsys.readouterr().err


def test_a_cut_questions_file_rebuilds_the_data_stage(tmp_cfg, goqa_csv):
    from gdpolib.stages.data import prepare_data

    cfg = tmp_cfg.replace(goqa_path=str(goqa_csv), max_questions=6)
    run = Run.open(cfg)
    data = prepare_data(cfg, run)
    questions = Path(data.path) / "questions.jsonl"
    whole = questions.read_text()
    questions.write_text("".join(whole.splitlines(keepends=True)[:3]))
    again = prepare_data(cfg, run)
    assert questions.read_text() == whole and len(again.questions) == len(data.questions)


def test_damaged_records_are_named_in_one_line(tmp_cfg, capsys):
    run = Run.open(tmp_cfg)
    run.merge_metrics({"data": {"questions": 3}})
    run.metrics_file.write_text(run.metrics_file.read_text()[:10])
    with pytest.raises(runs.RunError, match=r"metrics.json is not valid JSON \(line .*delete it"):
        run.metrics()
    capsys.readouterr()
    assert train.main(["-p", "output_root", tmp_cfg.output_root, "--method", "uniform"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "metrics.json is not valid JSON" in err
    (run.root / "config.yaml").write_text("run_name: [unclosed\nseed: 0\n")
    err = _pipeline_refusal(capsys, "-p", "output_root", tmp_cfg.output_root)
    assert "config.yaml is not valid YAML (line" in err and f"rm -r {run.root}" in err


# ============================================================== 4. parameters parsed safely
def _bomb(levels: int) -> str:
    """The classic YAML alias bomb under a list key: each level lists the one before 9 times."""
    lines = ['a0: &a0 ["x"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"groups: [*a{levels - 1}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_costs_nothing_and_says_why_in_one_short_line(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb(9))
    assert len(bomb.read_bytes()) < 1000
    start = time.time()
    with pytest.raises(ConfigError) as err:
        load_config([bomb])
    assert time.time() - start < 1.0
    message = str(err.value)
    assert "aliases (*name) are not allowed" in message and "line 2" in message
    assert len(message) < 300 and "\n" not in message
    with pytest.raises(ConfigError, match="aliases"):        # also as a -p value
        load_config(overrides={"groups": "[&a [x], *a]"})


@pytest.mark.parametrize("text,expected", [
    ("seed: 1\nmodel: tiny\nseed: 2\n", "duplicate key 'seed'"),
    ("[" * 50000 + "]" * 50000 + "\n", "nested too deeply"),
    ("groups: [" + ", ".join(["g"] * 1001) + "]\n", "a list of 1001 items is longer than 1000"),
    (f"run_name: {'x' * 5000}\n", "a text of 5000 characters is longer than 4096"),
])
def test_params_files_are_parsed_safely(tmp_path, text, expected):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config([path])
    assert expected in str(err.value) and len(str(err.value)) < 400


def test_a_huge_params_file_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match=r"has 2097155 bytes, more than 1048576"):
        load_config([path])


def test_ranges_the_device_and_the_survey_size_are_checked_before_the_first_write(
        tmp_path, capsys, goqa_csv):
    out = tmp_path / "out"
    err = _pipeline_refusal(capsys, "-p", "output_root", str(out), "-p", "seed", "99999999999")
    assert "parameter 'seed'" in err and "out of range" in err
    import torch
    if not torch.cuda.is_available():
        err = _pipeline_refusal(capsys, "-p", "output_root", str(out), "-p", "device", "cuda")
        assert "parameter 'device': 'cuda' is not available on this machine" in err
        assert train.main(["-p", "output_root", str(out), "-p", "device", "cuda:1"]) == 2
        assert "'cuda:1' is not available" in capsys.readouterr().err
    one = _survey(goqa_csv, tmp_path / "one.jsonl", n=1)
    err = _pipeline_refusal(capsys, "-p", "output_root", str(out), "-p", "survey_path", str(one))
    assert "group 'S. Africa' of" in err and "1 usable question(s)" in err and "min_questions" in err
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(one.read_bytes().replace(b"S. Africa", "Süd".encode("latin-1")))
    err = _pipeline_refusal(capsys, "-p", "output_root", str(out), "-p", "survey_path", str(bad))
    assert "not UTF-8 text (byte 0xfc on line 1)" in err
    assert not out.exists()


# ============================================================== 5. no credentials in records
def _survey(goqa_csv, path: Path, n: int, long_question: int = 0, broken: int = 0) -> Path:
    """n real S. Africa questions of GlobalOpinionQA as a survey file (one group); the first
    made `long_question` characters long if asked, plus `broken` malformed rows."""
    data = goqa.load_goqa(goqa_csv)
    qs = [q for q in data.questions if "S. Africa" in q.selections and len(q.options) <= 10][:n]
    rows = [SurveyRow("S. Africa", q.qid, q.question, list(q.options), q.selections["S. Africa"],
                      None, "goqa") for q in qs]
    if long_question:
        rows[0].question = (rows[0].question + " ") * (long_question // len(rows[0].question) + 1)
    write_survey(rows, path)
    with path.open("a", encoding="utf-8") as fh:
        for i in range(broken):
            fh.write(json.dumps({"group": "S. Africa", "question": f"broken {i}?",
                                 "options": ["a", "b"], "distribution": [0.2, 0.2]}) + "\n")
    return path


def test_credentials_never_reach_a_record_and_the_kernels_still_get_them(tmp_path, goqa_csv):
    survey = _survey(goqa_csv, tmp_path / "sa.jsonl", n=32, broken=2)
    api_base = f"https://user:{SECRET}@llm.example/v1?api_key=QUERYSECRET123"
    res = subprocess.run(
        [PY, "-m", "gdpolib.pipeline", "-p", "output_root", str(tmp_path / "out"),
         "-p", "survey_path", str(survey), "-p", "api_base", api_base, "-p", "max_questions", "6",
         "--only", "01"], cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True,
        timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    run_dir = Path(res.stdout.strip().splitlines()[-1])
    # the skipped rows are counted on the console (6. below)
    assert "34 rows read, 2 skipped as malformed (first: row 33 (line 33)" in res.stdout
    for path in run_dir.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            for secret in (SECRET, "QUERYSECRET123", *ENV_SECRETS.values()):
                assert secret.encode() not in blob, (path, secret)
    assert "api_base: https://***@llm.example/v1?api_key=***" in (run_dir / "config.yaml").read_text()
    # the kernel worked with the real value: the data stage's key holds it
    from gdpolib.stages.data import data_key
    cfg = load_config(overrides={"survey_path": str(survey), "api_base": api_base,
                                 "max_questions": 6, "output_root": str(tmp_path / "out")})
    recorded = json.loads((run_dir / "data" / "stage.json").read_text())
    assert recorded["hash"] == seeds.stable_hash(data_key(cfg))
    # reopening with the same (unscrubbed) value is the same run, not "other parameters"
    assert runs.recorded_changes(cfg) == {}


def test_log_lines_and_model_cards_are_scrubbed(tmp_path, capsys):
    import logging

    from gdpolib import console

    console.setup_logging()
    logging.getLogger("gdpolib.test").warning("calling https://me:%s@host/v1", SECRET)
    assert SECRET not in capsys.readouterr().err
    run_dir = tmp_path / "r"          # a record written before records were scrubbed
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(f"model: tiny\napi_base: https://me:{SECRET}@h/v1\n"
                                         f"responses: template\n")
    card = publish.model_card(run_dir, "gdpo", "a/b")
    assert SECRET not in card and "https://***@h/v1" in card


# ============================================================== 6. long inputs
def test_an_over_long_question_is_refused_by_name_before_the_first_write(tmp_path, goqa_csv,
                                                                        capsys):
    survey = _survey(goqa_csv, tmp_path / "long.jsonl", n=32, long_question=20000)
    out = tmp_path / "out"
    err = _pipeline_refusal(capsys, "-p", "output_root", str(out), "-p", "survey_path", str(survey))
    assert "question has 20," in err and "more than max_text_chars 2,000" in err
    assert not out.exists()
    cfg = load_config(overrides={"survey_path": str(survey), "max_text_chars": 30000})
    assert cfg.max_text_chars == 30000     # a bound the user may raise
    with pytest.raises(config.ConfigError):
        load_config(overrides={"max_text_chars": 0})
