"""Metrics: pure functions on numpy arrays. `distances` (JSD in both conventions, TVD,
Wasserstein, entropy, the bootstrap interval), `sampled` (sampled JSD and its noise floor, majority
bias, CBC, RS), `paired` (two methods' per-question difference with a paired bootstrap
interval), `alignment` (GPO's alignment scores) and `registry` (what every number of
metrics.json means, which function computes it and which way is better)."""
