"""Reports of a run and of several runs: `table2` (the paper's Table 2 beside ours), `claims`
(the paper's findings as claims: ONE list, rendered for a run, the demo, over seeds, in the
sweep and in the model card), `seeds` (mean ± sd tables over seeds) and `frames` (tables and
long frames for the notebooks). Read what the evaluation stages wrote; compute no metric of a
model."""
