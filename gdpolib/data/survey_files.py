"""Survey files: the one survey format (gdpolib.data.survey) as CSV, JSONL or Parquet, read
(`read_survey`: every row checked and numbered) and written (`write_survey`); and `read_csv_text`,
the CSV reader of the data sources whose cells are text (GlobalOpinionQA, OpinionQA)."""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from gdpolib.data.survey import (OPTIONAL, REQUIRED, Survey, SurveyError, SurveyRow,
                                 parse_records)

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
           ".pq": "parquet"}


def read_csv_text(path: Path, columns: Sequence[str], error: Callable[[str], Exception],
                  what: str) -> pd.DataFrame:
    """A CSV whose cells are all text (keep_default_na=False: an option or a question such as
    "NA" stays a string), holding `columns`: `error(message)` naming `what` otherwise."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:  # pandas raises several parser error types
        raise error(f"{what} is not a readable CSV ({type(err).__name__}: {err})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise error(f"{what}: missing column(s) {missing}; expected {list(columns)}")
    return df


def file_format(path: str | Path) -> str:
    """csv | jsonl | parquet, from the file's suffix."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise SurveyError(f"survey file {str(path)!r}: unknown format {Path(path).suffix!r} "
                          f"(use .csv, .jsonl or .parquet)")
    return fmt


def _check_columns(columns: Iterable[str], origin: str) -> None:
    columns = list(columns)
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    if missing or unknown:
        hints = [f"{c!r} -> {m[0]!r}?" for c in unknown
                 if (m := difflib.get_close_matches(c, REQUIRED + OPTIONAL, n=1, cutoff=0.6))]
        raise SurveyError(
            f"{origin}: " + "; ".join(filter(None, [
                f"missing column(s) {missing}" if missing else "",
                f"unknown column(s) {unknown}" + (f" ({', '.join(hints)})" if hints else "")
                if unknown else ""])) + f"; the format has {list(REQUIRED)} and optional "
            f"{list(OPTIONAL)}")


def _raw_records(path: Path, fmt: str) -> list[tuple[str, dict[str, Any] | str]]:
    """(where, row dict) of every data row of a survey file; a JSONL line that is no JSON
    object comes as (where, the reason)."""
    origin = str(path)
    if fmt == "jsonl":
        out, columns = [], set()
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = raw.count(b"\n", 0, err.start) + 1
            raise SurveyError(f"{origin}: not UTF-8 text (byte 0x{raw[err.start]:02x} on line "
                              f"{line}); save it as UTF-8") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                obj = f"not a JSON object ({err.msg} at character {err.pos})"
            if not isinstance(obj, (dict, str)):
                obj = f"not a JSON object but a {type(obj).__name__}"
            columns |= set(obj) if isinstance(obj, dict) else set()
            out.append((f"row {len(out) + 1} (line {n})", obj))
        _check_columns(sorted(columns, key=lambda c: (REQUIRED + OPTIONAL + (c,)).index(c)), origin)
        return out
    try:
        # keep_default_na=False: an option such as "NA" stays text; empty cells are "".
        df = pd.read_csv(path, dtype=str, keep_default_na=False) if fmt == "csv" \
            else pd.read_parquet(path)
    except Exception as err:   # pandas and pyarrow raise many parser error types
        raise SurveyError(f"{origin}: not a readable {fmt.upper()} file "
                          f"({type(err).__name__}: {str(err)[:200]})") from None
    _check_columns(df.columns, origin)
    line = (lambda i: f" (line {i + 2})") if fmt == "csv" else (lambda i: "")
    return [(f"row {i + 1}{line(i)}", rec) for i, rec in enumerate(df.to_dict("records"))]


def read_survey(path: str | Path, bad_rows: str = "skip") -> Survey:
    """A survey file (CSV, JSONL or Parquet, by suffix) as a checked Survey named by the file's
    stem. Rows are numbered from 1 (the first data row; for CSV and JSONL the file line is given
    too). SurveyError for a missing or unreadable file, a wrong column, or (bad_rows="error")
    malformed rows."""
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise SurveyError(f"survey file {str(path)!r} does not exist (survey_path)")
    return parse_records(_raw_records(path, fmt), str(path), path.stem, bad_rows)


def write_survey(rows: Survey | Iterable[SurveyRow], path: str | Path) -> Path:
    """Write rows in the survey format (CSV, JSONL or Parquet, by the suffix of `path`)."""
    path = Path(path)
    fmt = file_format(path)
    records = [r.to_record() for r in (rows.rows if isinstance(rows, Survey) else rows)]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                        encoding="utf-8")
    elif fmt == "csv":
        cells = [{k: (json.dumps(v, ensure_ascii=False) if isinstance(v, list) else
                      ("" if v is None else v)) for k, v in r.items()} for r in records]
        pd.DataFrame(cells, columns=list(REQUIRED + OPTIONAL)).to_csv(path, index=False)
    else:
        pd.DataFrame(records, columns=list(REQUIRED + OPTIONAL)).to_parquet(path, index=False)
    return path
