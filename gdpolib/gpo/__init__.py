"""GPO (Zhao, Dang, Grover, ICLR 2024): few-shot prediction of a group's opinion distribution.

A group answers a few survey questions (the context); GPO predicts its answer distribution on
new questions (the targets). Each (question, option) is a token: context tokens [x; y] carry
the group's share y of that option, target tokens [x; 0]; x is a frozen embedding of the
question with that option as the answer (gdpolib.embeddings). A transformer encoder without
positional encoding lets the targets attend to the context only, and a per-question softmax
turns the head's means into a distribution over each target question's options. The model is
meta-trained across groups and never sees a test group's answers
except as context.

Modules (each imports only those above it; none imports training code or a stage):
  groups      GroupOpinions (GlobalOpinionQA countries or OpinionQA groups), country families,
              group splits, the meta-train mean, the group-prior table (GroupPriorTable)
  model       GPOModel, the attention mask, the per-question softmax, the losses, save / load
  episodes    episode sampling and padding into EpisodeBatch tensors
  predict     predict for (group, context, targets) jobs, evaluation plans, the baselines,
              scores, GPO's p* in GDPO's belief space (few-shot p*)
  meta_train  GPOSettings (from the run config), meta_train (Adam + cosine, model selection on
              VALIDATION groups only)
  experiment  GPOExperiment (the trained models, split, test episodes of one dataset and seed)
              and method_predictions (every GPO model and baseline on the same episodes)
  compare     scores per (group, question) pair and the seed table (mean, sd, bootstrap
              interval over test groups, gain over the meta-train mean, share of groups beaten)
The steps of notebooks/05_gpo.ipynb (load, embed, meta-train as a cached run stage, tables,
k curve, few-shot GDPO) are in gdpolib.stages.gpo and gdpolib.stages.fewshot_gdpo.

Two GPO models: `gpo`, the paper's model (with the paper's Gaussian NLL by default), and
`gpo_prior`, our group-prior variant. Which one meta_train builds is decided by the embedding
table's type alone: a GroupPriorTable gives the group-prior model, any other table the paper's.
Both start from our initialisation (GPOModel init="answer"), under which the context moves the
prediction from step 0; init="torch" is the official code's.

Fixed here, unlike the official code (docs/deviations.md): padded targets are left out of the
loss mean, sigma has a floor, seeds come from the run's seed (episodes too), selection never
uses test groups, a NaN score is never counted as perfect, and everything runs on any torch device.
"""
