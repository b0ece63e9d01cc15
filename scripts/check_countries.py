"""Build the data stage and the tiny model for every GlobalOpinionQA country of the data file
with at least N usable questions, and check that every prompt of every split fits the model's
context (the checks training runs before its first step).

    python scripts/check_countries.py [--min 60] [-f PARAMS.yaml]... [-p KEY VALUE]...

Prints one line per country (questions, longest sequence and prompt in tokens, the model's
context) and exits 1 if any country fails, naming it and the error.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

from gdpolib import config, models, runs, schemes
from gdpolib.data import goqa
from gdpolib.generation import max_context
from gdpolib.stages.data import base_model, prepare_data, sequence_length


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    config.add_params_arguments(ap)
    ap.add_argument("--min", type=int, default=60, help="usable questions a country needs")
    args = ap.parse_args()
    base = config.load_config(args.files, dict(args.params))
    data = goqa.load_for_run(base)
    scheme = schemes.for_config(base)
    countries = [c for c in data.countries if len(scheme.apply(data.questions, c)[0]) >= args.min]
    failed = []
    with tempfile.TemporaryDirectory() as out:
        for country in countries:
            start = time.time()
            cfg = base.replace(country=country, output_root=out, run_name=f"c{len(failed)}-{start}")
            try:
                run = runs.Run.open(cfg)
                rd = prepare_data(cfg, run)
                model, tok = models.load_pretrained(base_model(cfg, run, rd)[0], cfg)
                window = max_context(model)
                length = sequence_length(cfg, rd, tok, window)
                longest = rd.longest(tok)
                print(f"ok   {country:40s} {rd.counts['questions']:4d} questions, longest sequence "
                      f"{longest['sequence'][0]:4d}, prompt {longest['prompt'][0]:4d}, max_length "
                      f"{length:4d}, context {window:4d} ({time.time() - start:.1f} s)", flush=True)
            except Exception as err:   # report every country, then fail
                failed.append(country)
                print(f"FAIL {country}: {type(err).__name__}: {err}", flush=True)
    print(f"{len(countries) - len(failed)} of {len(countries)} countries with >= {args.min} "
          f"usable questions pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
