"""scripts/compare_metrics.py: every leaf compared, differences and one-sided keys found,
durations left out."""
import importlib.util
import json
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compare_metrics.py"
spec = importlib.util.spec_from_file_location("compare_metrics", SCRIPT)
cm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cm)

RUN = {"methods": {"sft": {"jsd": 0.182, "jsd_ci": [0.16, 0.204], "cbc": math.nan},
                   "dpo": {"jsd": 0.262}},
       "data": {"n_test": 62, "build_seconds": 1.7}}


def test_a_run_equals_itself_and_durations_are_not_compared():
    other = json.loads(json.dumps(RUN))
    other["data"]["build_seconds"] = 9.9
    n, diffs = cm.compare(RUN, other)
    # sft: jsd, jsd_ci.0, jsd_ci.1, cbc (NaN equals NaN); dpo: jsd; data: n_test
    assert (n, diffs) == (6, [])


def test_changed_and_one_sided_leaves_are_differences(tmp_path, capsys):
    other = json.loads(json.dumps(RUN))
    other["methods"]["sft"]["jsd_ci"][1] = 0.205
    other["methods"]["gdpo"] = {"jsd": 0.167}
    del other["methods"]["dpo"]
    n, diffs = cm.compare(RUN, other)
    assert n == 7
    assert diffs == [("methods.dpo.jsd", 0.262, cm.MISSING), ("methods.gdpo.jsd", cm.MISSING, 0.167),
                     ("methods.sft.jsd_ci.1", 0.204, 0.205)]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(RUN))
    b.write_text(json.dumps(other))
    assert cm.main([str(a), str(b)]) == 1
    assert capsys.readouterr().out.startswith("7 leaves compared, 3 differ")
