"""Safe writes: a file or folder appears whole under its final name, or not at all, and never over the input.

Readers (a resumed run, DataLoader workers sharing the audio cache, a user opening the results) never see a
half-written file, and a run killed mid-write leaves the previous version in place. Everything is written
under a temporary name in the same folder (so the final rename stays on one filesystem) and renamed into
place with `os.replace`. `check_output` is the one guard every writer of a user-named file calls first: it
refuses the input itself (even with --overwrite: a user's data is never replaced by what was derived from it), an
existing file without --overwrite, and a wrong suffix.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mmemo.errors import DataError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file next to `path` for writing; rename it to `path` when the block succeeds.

    Args:
        path: the final file; its folder is created.
        mode: "w" (text) or "wb" (binary).
        open_kwargs: passed to `open` (encoding, newline).

    Yields:
        the open temporary file. If the block raises, it is deleted and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name opened with "x" (not mkstemp): the file gets the usual permissions, not mkstemp's 0600.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder next to `path` to fill; it replaces `path` (and whatever was there) when the block succeeds.

    Yields:
        the temporary folder. If the block raises, it is deleted and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the folder should get the permissions mkdir would give
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)  # a folder cannot replace a non-empty folder in one rename
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, data) -> Path:
    """Write `data` as indented UTF-8 JSON (`json_text`), atomically; returns the path."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(json_text(data, indent=2) + "\n")
    return Path(path)


def json_text(data, indent: int | None = None) -> str:
    """`data` as strict JSON, what `--json` prints and `-o` writes: NaN and infinities (e.g. text-only scores of a
    corpus without text) become null."""
    import json

    return json.dumps(_finite(data), indent=indent, ensure_ascii=False)


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_output(
    output: str | os.PathLike,
    source: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    suffixes: tuple[str, ...] = (),
    what: str = "output",
) -> Path:
    """Refuse an output file that would lose data or could not be read back; call it before the slow work.

    Checks, in this order: the suffix, that `output` is not a folder, that it is not `source` (refused even with
    `overwrite`), and that it does not exist unless `overwrite`.

    Args:
        output: the file to be written.
        source: the input it is derived from (a manifest, a folder of audio); None when there is none.
        overwrite: replace an existing `output` (never `source`).
        suffixes: the allowed suffixes, lower case with the dot (".csv", ".jsonl"); empty allows any.
        what: the output named in messages ("clean manifest", "predictions").

    Returns:
        `output` as a Path.

    Raises:
        DataError: naming the path and what to do (choose another path, or pass --overwrite).
    """
    output = Path(output)
    if suffixes and output.suffix.lower() not in suffixes:
        raise DataError(f"{what} {output} must end in {' or '.join(suffixes)}; choose another path")
    if output.is_dir():
        raise DataError(f"{what} {output} is a folder; give a file path")
    if source is not None and _same_file(output, Path(source)):
        raise DataError(f"refusing to write the {what} over the input {source}; choose another path")
    if output.exists() and not overwrite:
        raise DataError(
            f"{what} {output} already exists; pass --overwrite (overwrite=True) to replace it, or choose another path"
        )
    return output


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: links and hard links included when both exist, else by resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()
