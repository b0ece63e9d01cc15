"""The evaluation figure marks the text metrics of a model that is not well-formed, bar by bar."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gdpolib import plots  # noqa: E402


def test_only_the_malformed_methods_text_metric_bars_are_hatched():
    table = pd.DataFrame(
        {"jsd": [0.25, 0.19, 0.26, 0.18], "jsd_digits": [0.25, 0.23, 0.26, 0.25],
         "tvd": [0.3, 0.2, 0.3, 0.2], "jsd_sampled": [np.nan, 0.30, 0.35, 0.50],
         "invalid_rate": [np.nan, 0.02, 0.04, 0.53], "cbc": [np.nan, 0.95, 0.93, 0.016],
         "bpc": [np.nan, 0.5, 0.4, 0.6], "rs": [np.nan, 0.6, 0.5, 0.4]},
        index=pd.Index(["uniform", "sft", "dpo", "gdpo"], name="method"))
    fig = plots.plot_eval_metrics(table, {"sft": True, "dpo": True, "gdpo": False})
    read_ax, samp_ax = fig.axes[:2]
    assert "gdpo not well-formed" in samp_ax.get_title()
    legend = samp_ax.get_legend()
    colors = {t.get_text(): h.get_facecolor()[:3] for t, h in zip(legend.get_texts(),
                                                                   legend.legend_handles)}
    metrics = [t.get_text() for t in samp_ax.get_xticklabels()]
    assert metrics == ["jsd_sampled", "invalid_rate", "cbc", "bpc", "rs"]
    hatched, plain = set(), set()
    for patch in samp_ax.patches:
        if patch.get_height() == 0 or np.isnan(patch.get_height()):
            continue
        method = next(m for m, c in colors.items() if np.allclose(patch.get_facecolor()[:3], c))
        metric = metrics[round(patch.get_x() + patch.get_width() / 2)]
        (hatched if patch.get_hatch() else plain).add((method, metric))
    assert hatched == {("gdpo", m) for m in ("jsd_sampled", "cbc", "bpc", "rs")}
    assert ("gdpo", "invalid_rate") in plain and ("sft", "cbc") in plain
    # every legend entry has its bars (no empty entries); the uniform row has no samples
    labels = [t.get_text() for t in samp_ax.get_legend().get_texts()]
    assert labels == ["sft", "dpo", "gdpo"]
    assert not any(p.get_hatch() for p in read_ax.patches)
