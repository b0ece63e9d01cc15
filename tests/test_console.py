"""The main command's console (gdpolib.console): marked lines reach the console, everything else
(including what a child process writes to its inherited stderr) goes to the run's log file; the
findings summary of notebook 05 (gdpolib.report.claims.paper_findings)."""
from __future__ import annotations

import subprocess
import sys

from gdpolib import console
from gdpolib.report import claims
from gdpolib.config import PROJECT_ROOT

# A pipeline in miniature: a Console is opened, a child process (as a kernel would) writes to its
# inherited stdout/stderr, and kernel stream output arrives through con.stream().
SCRIPT = r"""
import subprocess, sys
from gdpolib import console
with console.Console(sys.argv[1]) as con:
    con.show("run demo: 1 notebook")
    subprocess.run([sys.executable, "-c",
                    "import sys; print('Kernel is running over TCP'); "
                    "print('TqdmWarning: IProgress not found', file=sys.stderr)"])
    stream = con.stream()
    stream.write("Loading weights: 100%\n" + console.MARK + "stage data: built")
    stream.write(" in 1.2 s\n" + console.MARK + console.PROGRESS + "sft steps\t5\t10\t3\n")
    stream.write("a table row\n")
    print("papermill: Passed unknown parameter: output_root", file=sys.stderr)
print("/the/run/dir")
"""


def test_console_shows_marked_lines_and_logs_everything(tmp_path):
    log = tmp_path / "pipeline.log"
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    # The console: the pipeline's own line, the stage line (joined across two writes), nothing
    # else (progress lines are drawn only on a terminal), the run directory last.
    assert res.stdout.splitlines() == ["run demo: 1 notebook",
                                       console.INDENT + "stage data: built in 1.2 s",
                                       "/the/run/dir"]
    assert res.stderr == ""
    text = log.read_text()
    for line in ("Kernel is running over TCP", "TqdmWarning: IProgress not found",
                 "Loading weights: 100%", "a table row", "Passed unknown parameter",
                 "stage data: built in 1.2 s"):
        assert text.count(line) == 1, line
    assert console.PROGRESS not in text


def test_say_marks_lines_only_in_a_pipeline_kernel(monkeypatch, capsys):
    monkeypatch.delenv(console.ENV, raising=False)
    console.say("findings:")
    monkeypatch.setenv(console.ENV, "1")
    console.say("findings:")
    assert capsys.readouterr().out.splitlines() == ["findings:", console.MARK + "findings:"]


def test_progress_lines_are_throttled(monkeypatch, capsys):
    monkeypatch.setenv(console.ENV, "1")
    bar = console.Progress("sampling", 100)
    for i in range(1, 101):
        bar.update(i)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    # the first update and the last one (the loop is far shorter than EVERY_S seconds)
    assert [ln.split("\t")[1] for ln in lines] == ["1", "100"]
    assert all(ln.startswith(console.MARK + console.PROGRESS + "sampling\t") for ln in lines)


# Numbers of the demo's metrics.json shape (docs/metrics.md), on both sides of each bar.
METRICS = {"methods": {"sft": {"jsd": 0.196, "invalid_rate": 0.0, "cbc": 0.95,
                               "jsd_vs_context_free": -0.02, "jsd_vs_context_free_ci": [-0.03, -0.01]},
                       "dpo": {"jsd": 0.260, "invalid_rate": 0.04, "cbc": 0.91,
                               "jsd_vs_sft": 0.064, "jsd_vs_sft_ci": [0.04, 0.09]},
                       "gdpo": {"jsd": 0.185, "invalid_rate": 0.06, "cbc": 0.97,
                                "jsd_vs_sft": -0.011, "jsd_vs_sft_ci": [-0.02, 0.001],
                                "jsd_vs_context_free": -0.03, "jsd_vs_context_free_ci": [-0.05, -0.01]},
                       "context_free": {"jsd": 0.216}},
           "skew": {"dpo": {"margin_majority": 0.411, "margin_minority": 0.089},
                    "gdpo": {"margin_majority": 0.126, "margin_minority": 0.029}}}


def test_paper_findings_checks_each_claim_with_its_numbers():
    found = {claim: (ok, numbers) for claim, ok, numbers in claims.paper_findings(METRICS)}
    assert len(found) == 9
    order = list(found)
    assert found[order[0]] == (True, "SFT 0.196, DPO 0.260; DPO - SFT +0.064 [+0.040, +0.090]")
    assert found[order[1]] == (True, "GDPO 0.185, SFT 0.196; GDPO - SFT -0.011 [-0.020, +0.001]")
    assert [found[c][0] for c in order[2:4]] == [True, True]     # below the context-free one
    assert found[order[4]] == (True, "0.411 vs 0.089")
    # gaps on the same conflicting pairs: GDPO 0.097 < DPO 0.322
    assert found[order[5]] == (True, "GDPO 0.126 - 0.029 = 0.097; DPO 0.411 - 0.089 = 0.322")
    assert [found[c][0] for c in order[6:]] == [True, True, False]   # GDPO: 6 % invalid


def test_paper_findings_says_what_was_not_measured():
    found = claims.paper_findings({"methods": {"sft": {"jsd": 0.2}}})
    assert [ok for _, ok, _ in found] == [None] * 9
    assert all(numbers == "not measured" for _, _, numbers in found)
