"""Stages: one module per notebook, composing the work modules below them.

A stage module holds the steps its notebook runs (loading, caching as run stages, tables and
metrics), so that the notebook stays a narration of a few calls. Stages may import any work
module (and each other); nothing outside stages/ and the entry points imports a stage.
  gpo            notebook 05: groups, embeddings, GPO meta-training, alignment tables, k curve
  fewshot_gdpo   notebook 05, section 4: GDPO trained on GPO's predicted p* vs on the true p*
"""
