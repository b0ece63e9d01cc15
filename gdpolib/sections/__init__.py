"""The run parameters by concern: one frozen dataclass per section (run, data, model, training,
evaluation, GPO), each field declared once with `param()` (default, help, rules). gdpolib.config
joins them into the flat RunConfig that papermill's names need, and gives each section's view."""
