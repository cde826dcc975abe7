"""Read CTranslate2 model files (`model.bin`, faster-whisper's format) into NumPy arrays, without ctranslate2.

The `model.bin` layout (CTranslate2 binary version 6; versions 2-6 are read), little-endian:
    uint32 version; then (version ≥ 2) the spec name (string) and a uint32 spec revision
    uint32 count; per variable: name (string), uint8 rank, rank × uint32 dims, uint8 dtype, uint32 byte count, bytes
    (version ≥ 3) uint32 count; per alias: alias name, target name (strings)
A string is a uint16 length that counts a trailing NUL, then the bytes. Quantised weights (int8 per output row,
int16 per tensor) come with a `<name>_scale` variable and are dequantised here: value / scale. That is exact for
the stored integers; what quantisation lost stays lost: CTranslate2 rounds to the nearest step, so each int8 weight
is within max|row| / 254 of the float it came from and each int16 weight within max|tensor| / 2048.

A model shipped in parts (`model.bin.part1`, `model.bin.part2`, ... in one folder, as some pip packages carry it)
is joined in memory: nothing is written into the source folder. `mmemo.convert` writes a read Whisper model as a
Hugging Face folder.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmemo.errors import ModelLoadError

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
DTYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
BINARY_VERSIONS = range(2, 7)  # what this reader understands; CTranslate2 4.x writes 6


@dataclass(frozen=True)
class Ct2Model:
    """A parsed `model.bin`: spec name and revision, variables by name (aliases resolved), binary version, and the
    file(s) it was read from (for messages)."""

    spec: str
    revision: int
    version: int
    variables: dict
    source: str = "model.bin"
    stored_dtypes: tuple[str, ...] = ()  # the tensors' dtypes in the file (before dequantising), most common first


def read_ct2(path: str | os.PathLike, part_dirs: tuple[str | os.PathLike, ...] = ()) -> Ct2Model:
    """Parse a CTranslate2 `model.bin` into NumPy arrays (no ctranslate2 needed).

    Quantised weights are dequantised with their stored scales, so every weight comes back as a float array.

    Args:
        path: a `model.bin`, or a CTranslate2 model folder holding `model.bin` or its parts (`model.bin.part1`,
            `model.bin.part2`, ...; joined in memory, in order).
        part_dirs: more folders to find parts in (pip packages that split a model carry a part each).

    Raises:
        ModelLoadError: the file is missing, truncated (with the expected and actual sizes; for parts, which ones
            were found), of an unknown binary version, or not a CTranslate2 model.
    """
    data, source, parts = _model_bytes(Path(path), [Path(d) for d in part_dirs])
    reader = _Reader(memoryview(data), source, parts)
    version = reader.unpack("I")
    if version not in BINARY_VERSIONS:
        raise ModelLoadError(
            f"{source}: CTranslate2 binary version {version} is not one this reader knows "
            f"({BINARY_VERSIONS.start}-{BINARY_VERSIONS.stop - 1}); convert the model again with a CTranslate2 "
            "release that writes one of these, or check that the file is a CTranslate2 model.bin"
        )
    spec, revision = (reader.string(), reader.unpack("I")) if version >= 2 else ("", 1)
    raw, stored = {}, Counter()
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
        code = reader.unpack("B")
        size = reader.unpack("I")
        if code not in DTYPES:
            raise ModelLoadError(f"{source}: variable {name!r} has unknown dtype code {code}; not a CTranslate2 model")
        raw[name] = _array(reader.take(size, name), DTYPES[code], shape, f"{source}: variable {name!r}")
        if shape and not name.endswith("_scale"):
            stored[DTYPE_NAMES[code]] += 1
    aliases = [(reader.string(), reader.string()) for _ in range(reader.unpack("I"))] if version >= 3 else []
    for alias, target in aliases:
        if target not in raw:
            raise ModelLoadError(f"{source}: alias {alias!r} names {target!r}, which the file does not hold")
        raw[alias] = raw[target]
    for alias, target in aliases:  # a quantised alias (the tied output projection) shares its target's scale
        if f"{target}_scale" in raw:
            raw.setdefault(f"{alias}_scale", raw[f"{target}_scale"])
    dtypes = tuple(name for name, _ in stored.most_common())
    return Ct2Model(spec, revision, version, _dequantise(raw), source, dtypes)


def _model_parts(folders: list[Path]) -> list[Path]:
    """`model.bin.part1`, `model.bin.part2`, ... in `folders` (the first holding each), in order, up to the first
    number missing."""
    parts = []
    while part := next(
        (f / f"model.bin.part{len(parts) + 1}" for f in folders if (f / f"model.bin.part{len(parts) + 1}").is_file()),
        None,
    ):
        parts.append(part)
    return parts


def _model_bytes(path: Path, part_dirs: list[Path]) -> tuple[bytes, str, list[Path]]:
    """The model's bytes, how to name them in messages, and the parts they were joined from (empty for one file)."""
    if path.is_dir():
        if (path / "model.bin").is_file():
            path = path / "model.bin"
        elif parts := _model_parts([path, *part_dirs]):
            if all(part.parent == path for part in parts):
                source = f"{path}/{{{' + '.join(part.name for part in parts)}}}"
            else:
                source = " + ".join(str(part) for part in parts)
            return b"".join(part.read_bytes() for part in parts), source, parts
        else:
            stray = sorted(p.name for p in path.glob("model.bin.part*"))
            found = f" (it has {', '.join(stray)}, but no model.bin.part1)" if stray else ""
            raise ModelLoadError(
                f"{path}: no model.bin{found}; a CTranslate2 model folder holds model.bin, or its parts "
                "model.bin.part1, model.bin.part2, ... side by side"
            )
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file; a CTranslate2 model folder holds model.bin")
    return path.read_bytes(), str(path), []


class _Reader:
    """Sequential little-endian reads over the file's bytes; running past the end names both sizes."""

    def __init__(self, data: memoryview, source: str, parts: list[Path]):
        self.data, self.source, self.parts, self.offset = data, source, parts, 0

    def take(self, size: int, what: str) -> memoryview:
        end = self.offset + size
        if end > len(self.data):
            raise ModelLoadError(f"{self.source}: truncated while reading {what}: {self._truncation(end)}")
        chunk, self.offset = self.data[self.offset : end], end
        return chunk

    def _truncation(self, end: int) -> str:
        if not self.parts:
            return (
                f"the file is {len(self.data):,} bytes, its contents need at least {end:,}. A model shipped in parts "
                "must be joined first (cat model.bin.part1 model.bin.part2 > model.bin); otherwise the file was cut "
                "short: copy it again"
            )
        found = ", ".join(part.name for part in self.parts)
        following = f"model.bin.part{len(self.parts) + 1}"
        return (
            f"the part(s) found ({found}) are {len(self.data):,} bytes, the model needs at least {end:,}: {following} "
            f"is missing. Put the missing part(s) beside {self.parts[0].name} (links will do), or join every part in "
            f"order into a model.bin of its own beside config.json and tokenizer.json (cat {self.parts[0]} "
            f"OTHER/{following} > DIR/model.bin)"
        )

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), "the header"))[0]

    def string(self) -> str:
        start = self.offset
        raw = bytes(self.take(self.unpack("H"), "a name")).rstrip(b"\0")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelLoadError(
                f"{self.source}: garbled name at byte {start:,}: not a CTranslate2 model.bin, or its parts were joined "
                "in the wrong order"
            ) from None


def _array(chunk: memoryview, dtype, shape: tuple, where: str) -> np.ndarray:
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    if len(chunk) != int(np.prod(shape, dtype=np.int64)) * itemsize:
        raise ModelLoadError(
            f"{where} has shape {shape} but {len(chunk):,} bytes; not a CTranslate2 model.bin, or its parts were "
            "joined in the wrong order"
        )
    if dtype == "bfloat16":  # NumPy has no bfloat16: its bits are float32's upper half
        values = np.frombuffer(chunk, dtype=np.uint16).astype(np.uint32) << 16
        return values.view(np.float32).reshape(shape)
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _dequantise(raw: dict) -> dict:
    """Float arrays for quantised weights (`x_scale` beside `x`); the scales themselves are dropped."""
    out = {}
    for name, value in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        scale = raw.get(f"{name}_scale")
        if scale is not None:
            scale = np.asarray(scale, dtype=np.float32)
            value = value.astype(np.float32)
            # int8: one scale per output row (conv weights are scaled as rows of their flattened kernel)
            value = value / (scale.reshape(-1, *([1] * (value.ndim - 1))) if scale.ndim else scale)
        out[name] = value
    return out
