"""What a data parameter's value means, decided in one place, and where its file is.

A data parameter (`goqa_path`, `option_map_path`, `opinionqa_path`, `survey_path`,
`movies_path`) holds one of:
- a local path, relative to the project root (the defaults point at the embedded `data/`);
- a remote name the parameter knows: `hub` (a file of a Hugging Face dataset at a pinned
  revision, downloaded by huggingface_hub into its own cache) or `github` (a file at a pinned
  commit, downloaded by pooch into `<cache>/data` and checked against its sha256);
- an http(s) URL, optionally ending in `#sha256=<64 hex digits>` (then checked), downloaded
  once into `<cache>/data` by pooch;
- `auto` (optional inputs only): the parameter's folder under $GDPO_DATA_DIR when it is there,
  otherwise no data (the caller skips that part and says how to add it);
- null: no data (for `goqa_path`, the hub, as before there was a resolver).

The config check calls `problem` (no download), preflight calls `fetch` for every data
parameter a run reads (so a download or a checksum fails before anything is written), and the
stages call `local` (a cache hit by then). Light on purpose: no torch; pooch and
huggingface_hub are imported only when something must be downloaded.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from gdpolib import console
from gdpolib.paramspec import path_problem, resolve_path

log = logging.getLogger(__name__)

DATA_DIR_ENV = "GDPO_DATA_DIR"
CACHE_ENV = "GDPO_CACHE"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class SourceError(RuntimeError):
    """A data source that cannot be used here (offline, a checksum mismatch, a missing file):
    one line naming the parameter, the value and what to do."""


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face dataset; the revision comes from the parameter `revision_param`
    (a commit, so the content is fixed). `size`: its byte size at `pinned_revision`, checked."""
    repo_id: str
    filename: str
    revision_param: str
    pinned_revision: str
    size: int | None = None


@dataclass(frozen=True)
class PinnedFile:
    """A file at a URL that names a commit, with the sha256 of its bytes."""
    url: str
    sha256: str


@dataclass(frozen=True)
class DataParam:
    """How one data parameter reads its value."""
    name: str
    kind: str                                   # "file" | "folder"
    what: str                                   # in words, for messages
    remotes: Mapping[str, HubFile | PinnedFile] = field(default_factory=dict)
    urls: bool = False                          # accepts http(s) URLs
    auto: str | None = None                     # the folder under $GDPO_DATA_DIR "auto" means
    null_means: str | None = None               # a remote name that null stands for


GOQA_HUB = HubFile("Anthropic/llm_global_opinions", "data/global_opinions.csv", "goqa_revision",
                   pinned_revision="cb2880488749218abb81802a94c2c62ebfde2f35", size=4_690_707)
OPTION_MAP_GITHUB = PinnedFile(
    "https://raw.githubusercontent.com/BigBinnie/GDPO/91917a8e923002d600d6499134dd03843b5a7ae4/"
    "data/option_map.json",
    "694886731c816b69c8a202823c5c46d354205e7e1b8e34c5300004191ebcb643")

PARAMS: dict[str, DataParam] = {p.name: p for p in (
    DataParam("goqa_path", "file", "GlobalOpinionQA (a CSV in the hub file's schema)",
              remotes={"hub": GOQA_HUB}, urls=True, null_means="hub"),
    DataParam("option_map_path", "file", "the option -> stance class map (JSON)",
              remotes={"github": OPTION_MAP_GITHUB}, urls=True),
    DataParam("opinionqa_path", "folder", "OpinionQA (its human_resp folder)",
              auto="opinionqa_tatsu/human_resp"),
    DataParam("survey_path", "file", "a survey file (CSV, JSONL or Parquet)", urls=True),
    DataParam("movies_path", "file", "SNAP web-Movies reviews (text)", urls=True),
)}


@dataclass(frozen=True)
class Source:
    """A data parameter's value, classified. `kind`: path | hub | url | none. `path` is the
    local path (kind path); `remote` the pinned remote (hub, or a url with a known sha256);
    `why` says, for kind none, why there is no data."""
    param: str
    value: str | None
    kind: str
    path: Path | None = None
    remote: HubFile | PinnedFile | None = None
    url: str | None = None
    sha256: str | None = None
    why: str = ""

    @property
    def remote_name(self) -> str:
        return "hub" if self.kind == "hub" else self.url or ""


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _split_url(value: str) -> tuple[str, str | None]:
    """(url without the fragment, sha256 from a `#sha256=<hex>` fragment or None)."""
    url, _, frag = value.partition("#")
    if frag.startswith("sha256="):
        return url, frag[len("sha256="):].lower()
    return value, None


def classify(name: str, value: Any) -> Source:
    """What `value` means for data parameter `name` (no download; `auto` looks at the disk)."""
    spec = PARAMS[name]
    if value is None and spec.null_means:
        value_ = spec.null_means
    else:
        value_ = None if value is None else str(value)
    if value_ is None:
        return Source(name, None, "none", why=f"{name} is null")
    remote = spec.remotes.get(value_)
    if isinstance(remote, HubFile):
        return Source(name, value_, "hub", remote=remote)
    if isinstance(remote, PinnedFile):
        return Source(name, value_, "url", remote=remote, url=remote.url, sha256=remote.sha256)
    if spec.urls and is_url(value_):
        url, sha = _split_url(value_)
        return Source(name, value_, "url", url=url, sha256=sha)
    if spec.auto and value_ == "auto":
        root = os.environ.get(DATA_DIR_ENV)
        if not root:
            return Source(name, value_, "none",
                          why=f"{name}: auto and ${DATA_DIR_ENV} is not set")
        path = Path(root).expanduser() / spec.auto
        if not path.exists():
            return Source(name, value_, "none",
                          why=f"{name}: auto and ${DATA_DIR_ENV}/{spec.auto} does not exist")
        return Source(name, value_, "path", path=path.resolve())
    return Source(name, value_, "path", path=resolve_path(value_))


def accepted(name: str) -> str:
    """What a data parameter accepts, in words (config errors, defaults.yaml, docs)."""
    spec = PARAMS[name]
    parts = [f"an existing readable {'folder' if spec.kind == 'folder' else 'file'}"]
    parts += sorted(spec.remotes)
    if spec.urls:
        parts.append("an http(s) URL (optionally #sha256=<hex>)")
    if spec.auto:
        parts.append(f"auto (${DATA_DIR_ENV}/{spec.auto} when present)")
    return ", ".join(parts) + " or null"


def problem(name: str, value: Any) -> str | None:
    """Why `value` is not usable for data parameter `name`, or None. No download: remote values
    are checked for form only (preflight fetches them before anything is written)."""
    src = classify(name, value)
    if src.kind == "path" and src.value != "auto":
        return path_problem(src.value, PARAMS[name].kind)
    if src.kind == "path":   # auto found a folder: check it is one and readable
        return path_problem(str(src.path), PARAMS[name].kind)
    if src.kind == "url":
        parts = urlsplit(src.url)
        if not parts.netloc:
            return f"{src.value!r} is not a URL with a host"
        if src.sha256 is not None and not _SHA256.match(src.sha256):
            return f"{src.value!r}: #sha256= needs 64 hex digits"
    return None


def cache_root(model_cache_dir: str | None = None) -> Path:
    """The project's cache: `model_cache_dir`, $GDPO_CACHE, or ~/.cache/gdpo."""
    if model_cache_dir:
        return resolve_path(model_cache_dir)
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "gdpo"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}"


def _fetch_url(src: Source, cache: Path) -> Path:
    """The URL's file in `cache`/data (pooch: downloaded once, sha256 checked when known)."""
    import pooch  # deferred: only a download needs it

    logging.getLogger("pooch").setLevel(logging.WARNING)
    base = Path(urlsplit(src.url).path).name or "download"
    fname = f"{hashlib.sha256(src.url.encode()).hexdigest()[:12]}-{base}"
    known = f"sha256:{src.sha256}" if src.sha256 else None
    if not (cache / "data" / fname).exists():
        console.say(f"{src.param}: downloading {src.url} (once, into {cache / 'data'})")
    try:
        path = pooch.retrieve(src.url, known_hash=known, fname=fname, path=cache / "data",
                              progressbar=False)
    except ValueError as err:           # pooch: the downloaded bytes do not match the sha256
        raise SourceError(f"{src.param}: {src.url} does not match its sha256 {src.sha256} "
                          f"({_one_line(err)}); the file was not kept") from None
    except Exception as err:            # requests: offline, DNS, HTTP errors
        raise SourceError(f"{src.param}: could not download {src.url} ({_one_line(err)}). "
                          f"Offline? Set {src.param} to a local copy of the file") from None
    return Path(path)


def _fetch_hub(src: Source, revision: str, endpoint: str | None = None) -> Path:
    """The hub file at `revision` from huggingface_hub's cache (downloaded once); its size is
    checked at the pinned revision."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache  # deferred: downloads only

    hub = src.remote
    cached = try_to_load_from_cache(hub.repo_id, hub.filename, revision=revision,
                                    repo_type="dataset")
    if not isinstance(cached, str):
        console.say(f"{src.param}: downloading {hub.repo_id}/{hub.filename}@{revision[:12]} "
                    f"from the Hugging Face hub (once, into its cache)")
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)     # its retry warnings: our one line says what failed
    try:
        path = Path(hf_hub_download(hub.repo_id, hub.filename, repo_type="dataset",
                                    revision=revision, endpoint=endpoint))
    except Exception as err:            # offline, HTTP errors, an unknown revision
        raise SourceError(
            f"{src.param}: could not download {hub.repo_id}/{hub.filename}@{revision[:12]} from "
            f"the Hugging Face hub ({_one_line(err)}). Offline? Set {src.param} to a local CSV "
            f"in the hub file's schema (the embedded data/globalopinionqa/ is one)") from None
    finally:
        hub_log.setLevel(level)
    if revision == hub.pinned_revision and hub.size and path.stat().st_size != hub.size:
        raise SourceError(f"{src.param}: {path} has {path.stat().st_size} bytes, not the "
                          f"{hub.size} of {hub.repo_id}@{revision[:12]}; delete it and retry")
    return path


def local(name: str, value: Any, *, revision: str | None = None,
          cache: Path | None = None, endpoint: str | None = None) -> Path | None:
    """The local file or folder of data parameter `name` (None when it has no data: null, or
    auto with nothing found). Downloads a remote value once; SourceError (one line) offline, on
    a checksum mismatch or for a path that is not there."""
    src = classify(name, value)
    if src.kind == "none":
        return None
    if src.kind == "path":
        why = path_problem(str(src.path), PARAMS[name].kind)
        if why:
            raise SourceError(f"{name}: {why}")
        return src.path
    if src.kind == "hub":
        return _fetch_hub(src, revision or src.remote.pinned_revision, endpoint)
    return _fetch_url(src, cache or cache_root())


def for_run(cfg, name: str) -> Path | None:
    """`local` for a run's parameter (its hub revision and cache come from the same config)."""
    spec = PARAMS[name]
    hub = next((r for r in spec.remotes.values() if isinstance(r, HubFile)), None)
    revision = getattr(cfg, hub.revision_param) if hub else None
    return local(name, getattr(cfg, name), revision=revision,
                 cache=cache_root(getattr(cfg, "model_cache_dir", None)))


def origin(cfg, name: str) -> str:
    """Where a parameter's data came from, for load reports and model cards."""
    src = classify(name, getattr(cfg, name))
    if src.kind == "hub":
        return f"hub:{src.remote.repo_id}@{getattr(cfg, src.remote.revision_param)}"
    if src.kind == "url":
        return src.url
    return str(src.value)


def skip_line(cfg, name: str) -> str | None:
    """For an optional input with no data: one console line saying how to add it; else None."""
    src = classify(name, getattr(cfg, name))
    if src.kind != "none":
        return None
    spec = PARAMS[name]
    how = (f"set {name} to the folder, or ${DATA_DIR_ENV} to a folder holding {spec.auto}"
           if spec.auto else f"set {name}")
    return f"{spec.what} not found ({src.why}): skipped; to add it, {how} (docs/data.md)"
