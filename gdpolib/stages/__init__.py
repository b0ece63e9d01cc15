"""One stage module per notebook, composing the work modules below (nothing below imports them):
data (01), train (02-03), evaluate (04), gpo and fewshot_gdpo (05). Each stage is cached in the
run directory and reused when its inputs and parameters are unchanged."""
