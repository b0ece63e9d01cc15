"""Data: GlobalOpinionQA (goqa), belief-conditioned responses (responses), SFT/DPO/GDPO records
and the data stage (pairs.prepare_data), the authors' hub datasets (hub), movie reviews (movies).

Submodules are imported on use (`from gdpolib.data.pairs import prepare_data`) so that
`import gdpolib.data` stays light.
"""
