"""The documentation a user reads: result pages agree with their data, every relative link in
README.md, docs/ and results/ resolves, and nothing points outside the repository."""
from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

from gdpolib import resultpages
from gdpolib.config import PROJECT_ROOT

DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md")),
        *sorted((PROJECT_ROOT / "results").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def test_result_pages_match_their_data():
    assert resultpages.pages(), "no result page"
    stale = resultpages.sync_pages()
    assert not stale, (f"{', '.join(p.name for p in stale)} differ from their data: run "
                       f"`{resultpages.WRITE_COMMAND}`")


def test_a_page_whose_number_was_edited_is_found_and_rewritten(tmp_path):
    page = PROJECT_ROOT / "results" / "speed.md"
    text = page.read_text()
    body = resultpages.BLOCK.search(text).group("body")
    number = re.search(r"\| (\d+\.\d{3}) \|", body).group(1)
    edited = tmp_path / "speed.md"
    edited.write_text(text.replace(f"| {number} |", "| 9.999 |", 1))
    assert resultpages.sync_pages(False, [edited]) == [edited]
    assert resultpages.sync_pages(True, [edited]) == [edited]
    assert edited.read_text() == text


def test_a_page_naming_an_unknown_block_is_an_error():
    with pytest.raises(resultpages.PageError, match="unknown generated block 'nope'"):
        resultpages.render_page("<!-- generated: nope -->\n<!-- /generated -->\n")


def test_gpo_table_is_mean_and_sd_over_seeds_of_the_raw_rows():
    rows = [{"dataset": "opinionqa", "variant": "v", "method": "gpo", "seed": s, "k": k,
             "score": score}
            for s, (a, b) in enumerate([(0.90, 0.93), (0.92, 0.95), (0.94, 0.94)])
            for k, score in ((1, a), (5, b))]
    rows.append({"dataset": "opinionqa", "variant": "v", "method": "ridge", "seed": 0, "k": 1,
                 "score": 0.5})
    header, table = resultpages.gpo_table({"study": "gpo-validation-variants", "rows": rows})
    assert header == ["dataset", "variant", "method", "k = 1", "k = 5"]
    sd1 = statistics.stdev([0.90, 0.92, 0.94])
    assert table[0] == ["opinionqa", "v", "gpo", f"0.9200 ± {sd1:.4f}", "0.9400 ± 0.0100"]
    assert table[1] == ["opinionqa", "v", "ridge", "0.5000", ""]      # one seed: no sd
    with pytest.raises(resultpages.PageError, match="no key columns"):
        resultpages.gpo_table({"study": "another", "rows": rows})


def test_demo_table_is_mean_and_sd_over_seeds_of_the_raw_rows():
    rows = [{"protocol": "seen_questions", "country": "S. Africa", "method": m, "seed": seed,
             "jsd": jsd, "cbc": cbc}
            for m, seed, jsd, cbc in (("sft", 0, 0.20, 0.5), ("sft", 1, 0.30, None),
                                      ("gdpo", 0, 0.10, 0.7))]
    header, table = resultpages.demo_table({"rows": rows})
    assert header == ["protocol", "country", "method", "seeds", "JSD", "CBC"]
    sd = statistics.stdev([0.20, 0.30])
    assert table == [["seen_questions", "S. Africa", "sft", 2, f"0.250 ± {sd:.3f}", "0.500"],
                     ["seen_questions", "S. Africa", "gdpo", 1, "0.100", "0.700"]]


def _slug(heading: str) -> str:
    """The anchor a repository host gives a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [a or b for a, b in LINK.findall(text)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_relative_link_resolves(doc):
    broken = []
    for target in _links(doc):
        if re.match(r"[a-z]+:", target):
            continue                                  # http(s), mailto: not ours to check
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists() or PROJECT_ROOT not in (dest, *dest.parents):
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert not broken, f"{doc.name}: links that do not resolve: {broken}"


def test_nothing_points_outside_the_repository():
    pattern = re.compile("|".join(["bug B[0-9]", "\u00a7 ?[0-9]", "GUI" "DE", "issue [0-9]"]))
    roots = ["README.md", "docs", "results", "gdpolib", "notebooks", "tests", "scripts",
             "benchmarks"]
    files = [p for r in roots for p in ([PROJECT_ROOT / r] if r.endswith(".md") else
                                        (PROJECT_ROOT / r).rglob("*"))
             if p.is_file() and p.suffix in (".md", ".py", ".ipynb", ".json", ".yaml", ".csv")]
    hits = [f"{p.relative_to(PROJECT_ROOT)}:{n}: {line.strip()[:80]}"
            for p in files for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line)]
    assert not hits, "\n".join(hits)
