"""What the main command shows: one line per notebook and per stage, a bar for long loops, and
nothing else; everything else goes to the run's log file.

`python -m gdpolib.pipeline` starts each notebook's kernel with GDPO_CONSOLE=1 and writes all
that the kernel prints to `<run>/logs/pipeline.log`. A line that starts with MARK is also shown
on the console, without the mark; `progress` lines become a bar on a terminal (and nothing
elsewhere). Inside a kernel, `say` writes such a line and `Progress` reports a long loop.
Outside the pipeline (JupyterLab, papermill alone) `say` prints a plain line and `Progress`
draws a tqdm bar. `setup_logging` sends gdpolib's log records to stderr (so, in a pipeline kernel,
to the run's log). Credentials are masked in every line written (gdpolib.scrub). This module
imports nothing of gdpolib but gdpolib.scrub, so every layer may use it.
"""
from __future__ import annotations

import logging
import os
import sys
import time

from tqdm.auto import tqdm

from gdpolib.scrub import scrub_text

ENV = "GDPO_CONSOLE"
MARK = "[gdpo] "
PROGRESS = "progress "      # MARK + PROGRESS + "<label>\t<done>\t<total>\t<seconds>"
EVERY_S = 2.0               # seconds between two progress lines of one loop


def piped() -> bool:
    """True inside a kernel that `python -m gdpolib.pipeline` started."""
    return os.environ.get(ENV) == "1"


def say(text: str) -> None:
    """One console line (stage done, findings): marked for the pipeline, plain elsewhere."""
    print((MARK if piped() else "") + text, flush=True)


class Progress:
    """Progress of one long loop of `total` steps: `update(done)` as it goes, `close()` at the
    end. Piped: at most one marked line every EVERY_S seconds (the pipeline draws the bar);
    otherwise a tqdm bar."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, max(int(total), 1)
        self.start, self.last = time.time(), 0.0
        self.bar = None if piped() else tqdm(total=self.total, desc=label, dynamic_ncols=True)

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            return
        now = time.time()
        if now - self.last >= EVERY_S or done >= self.total:
            self.last = now
            print(f"{MARK}{PROGRESS}{self.label}\t{done}\t{self.total}\t{now - self.start:.0f}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- gdpolib's log records
class _LogFormat(logging.Formatter):
    """`HH:MM:SS name: message`; in a pipeline kernel, records logged with extra={"console":
    True} are console lines (MARK in front)."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "console", False) and piped():
            return scrub_text(MARK + record.getMessage())
        return scrub_text(super().format(record))


class _StderrHandler(logging.StreamHandler):
    """Writes to the CURRENT sys.stderr (a kernel replaces it after imports)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(_LogFormat("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):   # logging.StreamHandler sets it; the current sys.stderr wins
        pass


def setup_logging() -> None:
    """gdpolib's log records (INFO and up) go to stderr once, with a time stamp; other
    libraries' records keep their own settings. Idempotent (a notebook may open several runs).
    In a pipeline kernel stderr goes to the run's log file; console records are shown too."""
    logger = logging.getLogger("gdpolib")
    logger.setLevel(logging.INFO)
    logger.propagate = False      # one copy of each line, whatever the root logger does
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    quiet_libraries()


def quiet_libraries() -> None:
    """Bars that say nothing to a user: transformers' "Loading weights" / "Writing model
    shards" (for checkpoints of a few MB) and datasets' map bars. Download bars are kept."""
    # Deferred: a light import path (the pipeline's preflight) must not pay for these.
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hidden = ("Loading weights", "Writing model shards")

    def hook(factory, args, kwargs):
        if kwargs.get("desc") in hidden:
            kwargs = {**kwargs, "disable": True}
        return factory(*args, **kwargs)

    hf_logging.set_tqdm_hook(hook)


# ----------------------------------------------------------------------------- the pipeline's side
INDENT = "      "


class Console:
    """The pipeline's side, as a context manager. While open, this process's stdout and stderr
    (and so the kernels' own, which they inherit: "Kernel is running over TCP ...") go to
    `log_path`; `show` writes to the real console (and the log); `stream()` is what papermill
    writes a kernel's outputs to: every line goes to the log, marked lines to the console too."""

    def __init__(self, log_path):
        self.log_path = log_path
        self.bar_shown = False

    def __enter__(self) -> "Console":
        sys.stdout.flush()
        sys.stderr.flush()
        self.log = open(self.log_path, "a", buffering=1, encoding="utf-8")
        self.saved = (os.dup(1), os.dup(2))
        self.out = os.fdopen(os.dup(self.saved[0]), "w", buffering=1, encoding="utf-8")
        self.err = os.fdopen(os.dup(self.saved[1]), "w", buffering=1, encoding="utf-8")
        self.tty = self.out.isatty()
        os.dup2(self.log.fileno(), 1)
        os.dup2(self.log.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        self._clear_bar()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)
        for f in (self.out, self.err, self.log):
            f.close()

    def show(self, text: str, error: bool = False) -> None:
        """A console line (also written to the log)."""
        text = scrub_text(text)
        self._clear_bar()
        (self.err if error else self.out).write(text + "\n")
        self.log.write(text + "\n")

    def stream(self) -> "_Lines":
        """A file-like object for one kernel output stream (papermill's stdout_file/stderr_file)."""
        return _Lines(self.line)

    def line(self, text: str) -> None:
        """One line a kernel printed."""
        text = scrub_text(text)
        if not text.startswith(MARK):
            self.log.write(text + "\n")
        elif text.startswith(MARK + PROGRESS):
            self._bar(text[len(MARK + PROGRESS):])
        else:
            self.show(INDENT + text[len(MARK):])

    def _bar(self, body: str) -> None:
        if not self.tty:
            return
        try:
            label, done, total, seconds = body.split("\t")
            frac = min(int(done) / max(int(total), 1), 1.0)
        except ValueError:
            return
        filled = int(frac * 30)
        self.out.write(f"\r{INDENT}{label} [{'#' * filled}{'.' * (30 - filled)}] "
                       f"{done}/{total} {seconds} s\033[K")
        self.out.flush()
        self.bar_shown = True

    def _clear_bar(self) -> None:
        if self.bar_shown:
            self.out.write("\r\033[K")
            self.bar_shown = False


class _Lines:
    """Cuts what is written into lines and hands each complete one to `sink`."""

    def __init__(self, sink):
        self.sink, self.buf = sink, ""

    def write(self, text: str) -> int:
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for ln in lines:
            self.sink(ln.rstrip("\r"))
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.buf:
            self.sink(self.buf)
            self.buf = ""
