"""gdpolib.sources, the one reader of data parameters: what a value means, the embedded
defaults, `auto`, and the download path (github / URL through pooch, hub through
huggingface_hub) against a local HTTP server that stands in for GitHub and the Hugging Face hub:
a download lands in the cache once, a checksum mismatch and no network each fail in one line
naming the parameter, and nothing partial is kept."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from gdpolib import checks, sources
from gdpolib.config import PROJECT_ROOT, ConfigError, load_config
from gdpolib.data import goqa
from gdpolib.sources import HubFile, PinnedFile, SourceError

CSV = ("question,selections,options,source\n"
       "\"Q?\",\"defaultdict(<class 'list'>, {'Spain': [0.25, 0.75]})\",\"['a', 'b']\",GAS\n")
COMMIT = "c" * 40


class _Server(http.server.ThreadingHTTPServer):
    """Serves `files` {url path: bytes}; a dataset file under /datasets/<repo>/resolve/<rev>/
    gets the headers huggingface_hub reads (X-Repo-Commit, ETag)."""
    files: dict[str, bytes] = {}
    hits: list[str] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    def _head(self) -> bytes | None:
        body = self.server.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest() + '"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.end_headers()
        return body

    def do_HEAD(self):  # noqa: N802 (http.server's naming)
        self._head()

    def do_GET(self):  # noqa: N802
        self.server.hits.append(self.path)
        body = self._head()
        if body is not None:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files, srv.hits = {}, []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# ----------------------------------------------------------------------------- meanings
def test_each_value_means_one_thing(monkeypatch, tmp_path):
    kind = lambda name, value: sources.classify(name, value).kind  # noqa: E731
    assert kind("goqa_path", "data/globalopinionqa/goqa_partial_hf_schema.csv.gz") == "path"
    assert kind("goqa_path", "hub") == kind("goqa_path", None) == "hub"
    assert kind("option_map_path", "github") == "url"
    assert sources.classify("option_map_path", "github").sha256 == \
        sources.OPTION_MAP_GITHUB.sha256
    assert kind("option_map_path", None) == "none"
    assert kind("option_map_path", "hub") == "path"          # not a remote of this parameter
    src = sources.classify("survey_path", "https://x.org/s.csv#sha256=" + "AB" * 32)
    assert (src.kind, src.url, src.sha256) == ("url", "https://x.org/s.csv", "ab" * 32)
    assert kind("opinionqa_path", "https://x.org/folder") == "path"   # a folder is never a URL
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    assert kind("opinionqa_path", "auto") == "none"
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path))
    assert "does not exist" in sources.classify("opinionqa_path", "auto").why
    (tmp_path / "opinionqa_tatsu" / "human_resp").mkdir(parents=True)
    src = sources.classify("opinionqa_path", "auto")
    assert src.kind == "path" and src.path == tmp_path / "opinionqa_tatsu" / "human_resp"


def test_the_embedded_defaults_need_nothing_outside_the_project():
    cfg = load_config()
    path = sources.for_run(cfg, "goqa_path")
    assert path.is_relative_to(PROJECT_ROOT / "data")
    assert sources.for_run(cfg, "option_map_path").is_relative_to(PROJECT_ROOT / "data")
    data = goqa.load_for_run(cfg)
    assert data.report.n_rows == 1774 and len(data.countries) == 130
    assert len(data.questions) == 1773 and data.report.empty_rows == [1393]   # all-zero row
    assert data.report.origin == "data/globalopinionqa/goqa_partial_hf_schema.csv.gz"


def test_embedded_files_match_their_provenance():
    """The sha256 sums that data/*/PROVENANCE.md states are the files' (and the gzip's content
    is the byte-identical CSV the sums name)."""
    import gzip
    gz = PROJECT_ROOT / "data" / "globalopinionqa" / "goqa_partial_hf_schema.csv.gz"
    text = (gz.parent / "PROVENANCE.md").read_text()
    assert sources.sha256_of(gz) in text
    assert hashlib.sha256(gzip.decompress(gz.read_bytes())).hexdigest() in text
    omap = PROJECT_ROOT / "data" / "gdpo_option_map" / "option_map.json"
    assert sources.sha256_of(omap) == sources.OPTION_MAP_GITHUB.sha256
    assert sources.OPTION_MAP_GITHUB.sha256 in (omap.parent / "PROVENANCE.md").read_text()
    for folder in ("globalopinionqa", "gdpo_option_map"):
        assert (PROJECT_ROOT / "data" / folder / "LICENSE.md").is_file()


def test_optional_input_without_data_gives_one_line_saying_how_to_add_it(monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    cfg = load_config()
    assert sources.for_run(cfg, "opinionqa_path") is None
    line = sources.skip_line(cfg, "opinionqa_path")
    assert "\n" not in line and "GDPO_DATA_DIR" in line and "opinionqa_path" in line
    with pytest.raises(ConfigError, match="survey=opinionqa needs the OpinionQA human_resp"):
        load_config(overrides={"survey": "opinionqa", "group": "Democrat"})


# ----------------------------------------------------------------------------- downloads
def test_url_download_lands_in_the_cache_once(server, tmp_path):
    srv, base = server
    body = b'{"Yes": 5, "No": 1}'
    srv.files["/map.json"] = body
    value = f"{base}/map.json#sha256={hashlib.sha256(body).hexdigest()}"
    first = sources.local("option_map_path", value, cache=tmp_path)
    assert first.read_bytes() == body and first.is_relative_to(tmp_path / "data")
    again = sources.local("option_map_path", value, cache=tmp_path)
    assert again == first and srv.hits == ["/map.json"]           # downloaded once


def test_github_download_is_checked_against_its_pinned_sha256(server, tmp_path, monkeypatch):
    srv, base = server
    real = (PROJECT_ROOT / "data" / "gdpo_option_map" / "option_map.json").read_bytes()
    pinned = PinnedFile(f"{base}/BigBinnie/GDPO/commit/option_map.json",
                        hashlib.sha256(real).hexdigest())
    spec = sources.PARAMS["option_map_path"]
    monkeypatch.setitem(sources.PARAMS, "option_map_path",
                        sources.DataParam(spec.name, spec.kind, spec.what, {"github": pinned}, True))
    srv.files["/BigBinnie/GDPO/commit/option_map.json"] = real[:-2] + b"9}"   # tampered
    with pytest.raises(SourceError) as err:
        sources.local("option_map_path", "github", cache=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "option_map_path" in msg and "does not match its sha256" in msg
    assert not list((tmp_path / "data").glob("*option_map.json"))    # nothing kept
    srv.files["/BigBinnie/GDPO/commit/option_map.json"] = real
    path = sources.local("option_map_path", "github", cache=tmp_path)
    assert path.read_bytes() == real


def test_no_network_fails_in_one_line_before_anything_is_written(tmp_path):
    url = f"{_closed_port()}/map.json"
    with pytest.raises(SourceError) as err:
        sources.local("option_map_path", url, cache=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "could not download" in msg and "local copy" in msg
    out = tmp_path / "outputs"
    cfg = load_config(overrides={"option_map_path": url, "output_root": str(out),
                                 "model_cache_dir": str(tmp_path / "cache")})
    with pytest.raises(ConfigError, match="parameter 'option_map_path': option_map_path: could"):
        checks.check_data(cfg)
    from gdpolib import runs
    with pytest.raises(ConfigError):
        runs.Run.open(cfg)
    assert not out.exists()


def test_hub_download_through_huggingface_hub(server, tmp_path, monkeypatch):
    from huggingface_hub import constants
    srv, base = server
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)     # conftest sets it for the suite
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    hub = HubFile("Org/opinions", "data/opinions.csv", "goqa_revision", COMMIT,
                  size=len(CSV.encode()))
    spec = sources.PARAMS["goqa_path"]
    monkeypatch.setitem(sources.PARAMS, "goqa_path",
                        sources.DataParam(spec.name, spec.kind, spec.what, {"hub": hub}, True,
                                          null_means="hub"))
    srv.files[f"/datasets/Org/opinions/resolve/{COMMIT}/data/opinions.csv"] = CSV.encode()
    path = sources.local("goqa_path", "hub", revision=COMMIT, endpoint=base)
    assert path.read_text() == CSV and Path(constants.HF_HUB_CACHE) in path.parents
    data = goqa.load_goqa(path, origin="hub:Org/opinions")
    assert data.questions[0].options == ["a", "b"] and data.countries == ["Spain"]
    assert sources.local("goqa_path", None, revision=COMMIT, endpoint=base) == path   # cached
    monkeypatch.setitem(sources.PARAMS, "goqa_path", sources.DataParam(
        spec.name, spec.kind, spec.what, {"hub": HubFile(hub.repo_id, hub.filename, hub.revision_param,
                                                         COMMIT, size=999)}, True))
    with pytest.raises(SourceError, match="not the 999 of Org/opinions"):
        sources.local("goqa_path", "hub", revision=COMMIT, endpoint=base)
    from huggingface_hub.utils import _http                         # its 5 retries: no waiting
    monkeypatch.setattr(_http, "time", type("T", (), {"sleep": staticmethod(lambda s: None)}))
    with pytest.raises(SourceError) as err:                       # another revision, no network
        sources.local("goqa_path", "hub", revision="d" * 40, endpoint=_closed_port())
    assert "\n" not in str(err.value) and "Set goqa_path to a local CSV" in str(err.value)


def test_hub_offline_names_the_embedded_copy(monkeypatch, tmp_path):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    cfg = load_config(overrides={"goqa_path": "hub"})
    with pytest.raises(SourceError) as err:
        sources.for_run(cfg, "goqa_path")
    msg = str(err.value)
    assert "\n" not in msg and cfg.goqa_revision[:12] in msg and "data/globalopinionqa" in msg
