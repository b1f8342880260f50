"""Atomic file writes and small file helpers.

Every artifact is written to a temporary name in its final directory and renamed into place
only when complete, so a killed process never leaves a file that a rerun would take as done.
Temporary names start with ``.tmp-<pid>@<host>-`` (the writer) and end with the final name so
format-sniffing readers still work on them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .faults import point

TMP_PREFIX = ".tmp-"


def temp_host() -> str:
    """This host's name as temporary names carry it (``[A-Za-z0-9.-]``, at most 64 characters).

    >>> set(temp_host()) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
    True
    """
    host = "".join(c if c.isascii() and (c.isalnum() or c in ".-") else "_" for c in socket.gethostname())
    return host[:64] or "_"


def temp_name(final: Path) -> Path:
    """A unique temporary sibling of ``final`` (same directory, so ``os.replace`` is atomic):
    ``.tmp-<pid>@<host>-<8 hex>-<final name>``, naming its writer so that the leftover of a
    killed one can be told apart (:func:`steph.locks.temp_writer`)."""
    return final.with_name(f"{TMP_PREFIX}{os.getpid()}@{temp_host()}-{uuid.uuid4().hex[:8]}-{final.name}")


@contextlib.contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``final``, on error delete it.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "x.txt") as tmp:
    ...     _ = tmp.write_text("hi")
    >>> (d / "x.txt").read_text()
    'hi'
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    try:
        yield tmp
        point(f"write:{final.name}")
        if tmp.is_dir() and final.exists():
            _rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            _rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def write_text(path: Path | str, text: str) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json(path: Path | str, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(
    path: Path | str, header: Sequence[str], rows: Iterable[Sequence[Any] | Mapping[str, Any]]
) -> Path:
    """Write a CSV atomically; rows are sequences or mappings keyed by ``header``.

    Cells that a spreadsheet would run as a formula are neutralised (see :func:`_csv_cell`)."""
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            if isinstance(row, Mapping):
                writer.writerow([_csv_cell(row.get(col, "")) for col in header])
            else:
                writer.writerow([_csv_cell(v) for v in row])
    return path


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    """Floats exactly (``repr``); text that a spreadsheet would run as a formula (starting with
    ``= + - @``, tab or carriage return, and not a number) neutralised with a leading ``'``."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and len(value) > 1 and value.startswith(_FORMULA_START):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value


def read_csv(path: Path | str) -> list[dict[str, str]]:
    """Read a CSV into a list of dicts (header names stripped of surrounding spaces)."""
    with Path(path).open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is not None:
            reader.fieldnames = [name.strip() for name in reader.fieldnames]
        return [
            {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k is not None}
            for row in reader
        ]


def sha256_file(path: Path | str, *, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def splice_between(text: str, begin: str, end: str, body: str) -> str:
    r"""``text`` with what lies between the marker lines ``begin`` and ``end`` replaced by ``body``
    (for generated sections of hand-written docs).

    >>> splice_between("a\n<!-- B -->\nold\n<!-- E -->\nz", "<!-- B -->", "<!-- E -->", "new")
    'a\n<!-- B -->\n\nnew\n<!-- E -->\nz'
    """
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    return f"{head}{begin}\n\n{body}\n{end}{tail}"


def clean_temp_files(directory: Path) -> int:
    """Remove leftovers of killed writers (``.tmp-*``) in ``directory``; returns how many."""
    if not directory.is_dir():
        return 0
    removed = 0
    for leftover in directory.glob(f"{TMP_PREFIX}*"):
        if leftover.is_dir():
            _rmtree(leftover)
        else:
            leftover.unlink(missing_ok=True)
        removed += 1
    return removed


def os_error_message(exc: OSError, item: str) -> str:
    """One line for an operating-system error met while working on ``item`` (disk full,
    permission denied ...): what, which file, and what to do.

    >>> import errno
    >>> os_error_message(OSError(errno.ENOSPC, "No space left on device", "m.json"), "BRCA/fold_0")
    'BRCA/fold_0: No space left on device (m.json) (hint: free disk space (or raise the quota) and rerun; finished items are kept)'
    """
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    what = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space (or raise the quota) and rerun; finished items are kept"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the project folder writable for this user and rerun"
    else:
        fix = "fix the file system problem and rerun; finished items are kept"
    return f"{item}: {what}{where} (hint: {fix})"
