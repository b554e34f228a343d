"""The pickle scanner: picklescan over a view of the bytes (view.py), as a verdict.

picklescan lists the globals a pickle imports without unpickling it, for raw pickles
and for the zip archives torch writes (`archive/data.pkl`; legacy torch files are a
few raw pickles in a row), and rates each import innocuous, suspicious (unknown) or
dangerous (`os.system`, `builtins.eval`, `subprocess.*`...). The verdicts:

- `clean`: no dangerous import (suspicious ones are allowed: every custom class of a
  pickled model is "unknown" to the scanner);
- `unsafe`: at least one dangerous import; the findings name them ("posix.system");
- `error`: the file could not be scanned (the scanner failed on it, or it holds more
  pickle data than a scan may read, or a compressed archive entry too big to inflate
  under the budget). An error is refused like an unsafe file (fail closed: what could
  not be checked is not served unchecked); an admin who trusts the file releases it.

A failure to *read* the bytes (a missing chunk, an I/O error) is not a verdict: it is
raised as `ScanUnreadable` and nothing is recorded.
"""

from __future__ import annotations

import logging
import posixpath
import zipfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from picklescan.scanner import SafetyLevel, scan_bytes

from mirror.scan.view import ByteView

# picklescan logs every finding as a warning of its own; the mirror logs the verdict.
logging.getLogger("picklescan").setLevel(logging.CRITICAL)

try:
    SCANNER = f"picklescan {version('picklescan')}"
except PackageNotFoundError:  # pragma: no cover - installed without metadata
    SCANNER = "picklescan"

# The suffixes whose files are pickles or may be (torch writes .bin, .pt, .pth, .ckpt).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: str  # clean | unsafe | error
    findings: tuple[str, ...]
    scanner: str

    @property
    def clean(self) -> bool:
        return self.verdict == "clean"


class ScanUnreadable(Exception):
    """The bytes to scan could not be read; `cause` is the storage error."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def scan_pickle(view: ByteView, name: str) -> Verdict:
    """The verdict on the file `view` reads (`name`: its path, for its suffix and the
    log). Blocking: run it in a worker thread."""
    ext = posixpath.splitext(name)[1].lower()
    try:
        too_big = _inflating_entry(view)
        if too_big:
            return Verdict("error", (too_big,), SCANNER)
        view.seek(0)
        result = scan_bytes(view, name, ext)
    except Exception as exc:
        return _failed(view, exc)
    if view.failure is not None:
        raise ScanUnreadable(view.failure)
    if view.exceeded:
        return _over_budget(view)
    dangerous = sorted({printable(f"{g.module}.{g.name}") for g in result.globals if g.safety == SafetyLevel.Dangerous})
    if dangerous:
        return Verdict("unsafe", tuple(dangerous), SCANNER)
    return Verdict("clean", (), SCANNER)


def printable(text: str, limit: int = 200) -> str:
    """A finding as it is shown and stored: the names come from the file itself, so
    control characters are escaped and the length capped."""
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


def _failed(view: ByteView, exc: Exception) -> Verdict:
    if view.failure is not None:
        raise ScanUnreadable(view.failure) from exc
    if view.exceeded:
        return _over_budget(view)
    text = printable(" ".join(str(exc).split()))
    return Verdict("error", (f"scan failed: {type(exc).__name__}" + (f": {text}" if text else ""),), SCANNER)


def _over_budget(view: ByteView) -> Verdict:
    return Verdict("error", (f"more than {view.budget >> 20} MiB of pickle data to read; not scanned",), SCANNER)


def _inflating_entry(view: ByteView) -> str:
    """A finding when the file is a zip archive with a compressed entry that would
    inflate past the scan budget (its inflated bytes do not pass through the view, so
    the budget could not bound them); "" otherwise."""
    view.seek(0)
    if view.read(4) != b"PK\x03\x04":
        return ""
    view.seek(0)
    try:
        with zipfile.ZipFile(view) as archive:  # type: ignore[arg-type]
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED and info.file_size > view.budget:
                    return f"compressed archive entry {info.filename} inflates to {info.file_size} bytes; not scanned"
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
        return ""  # picklescan's own, more lenient, reader decides
    return ""
