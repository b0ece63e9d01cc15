"""Data sources and records. Survey loaders: GlobalOpinionQA (goqa), OpinionQA (opinionqa), the
authors' hub datasets (hub), SNAP movie reviews (movies); belief-conditioned responses
(responses); SFT/DPO/GDPO records, splits and the data stage's files (records); few-shot prompts
(fewshot). The stage that composes them for a run is gdpolib.stages.data.

Submodules are imported on use (`from gdpolib.data.goqa import load_goqa`) so that
`import gdpolib.data` stays light.
"""
