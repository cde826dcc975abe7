"""A decoded-audio cache: each clip is decoded, downmixed and resampled once, then memory-mapped from disk.

Layout: `<root>/<aa>/<key>.npy`, one float32 `.npy` per clip (the exact array `load_audio` returns), read back
with `np.load(mmap_mode="r")`, so a hit costs a file open and the pages the crop touches.

The key is a BLAKE2b hash of:
- the file's content: its size plus the bytes of its first and last MiB (the whole file for clips up to 2 MiB,
  which covers ~60 s of 16-bit 16 kHz audio). A file edited only in the middle, with its size unchanged, and
  larger than 2 MiB keeps its key: hashing every byte would make a hit cost as much as reading the file.
  Renaming, moving or copying a file keeps its entry (the path is not part of the key);
- the settings: sampling rate, clip start and end, and `CACHE_VERSION` (bumped when `load_audio` changes what
  it returns).
Within one process the content hash is remembered per (path, size, mtime, inode), so a hit does not re-read
the file; a file rewritten in place within one timestamp tick of a filesystem with coarse timestamps can be
missed by that memo until the process restarts.

float32, not int16: an entry is bit-identical to decoding (resampled audio is not on the int16 grid), at twice
the disk size (64 KB per second of audio at 16 kHz).

Writes go to a temporary file in the same folder, then `os.replace`: concurrent DataLoader workers and killed
runs leave either a whole entry or none. An entry that fails to load (truncated, garbage, wrong dtype or shape)
is ignored, decoded afresh and rewritten. The cache never deletes anything; remove the folder to clear it.

Acoustic functionals (`mmemo.data.acoustic.functionals` of the whole decoded clip) are cached beside the audio entry
as `<key>.functionals-v{FEATURES_VERSION}.npy` (float32, one value per `FEATURE_NAMES`): `AudioCache.functionals`
reads them, or decodes (through the cache) and computes them once. A new `FEATURES_VERSION` gets new files.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from mmemo.data.audio import load_audio
from mmemo.io import atomic_write

CACHE_VERSION = 1
_EDGE_BYTES = 1 << 20  # hash the first and last MiB of each file


class AudioCache:
    """Decoded clips on disk, keyed by file content and decoding settings.

    Args:
        root: the cache folder (created on first write); `~` is expanded.
        sampling_rate: the rate clips are resampled to.
    """

    def __init__(self, root: str | os.PathLike, sampling_rate: int = 16000):
        self.root = Path(os.path.expanduser(os.fspath(root)))
        self.sampling_rate = int(sampling_rate)
        self._digests: dict[tuple, str] = {}
        self._write_failed = False

    def load(self, path: str | os.PathLike, start: float | None = None, end: float | None = None) -> np.ndarray:
        """`load_audio(path, self.sampling_rate, start, end)`, from the cache when it holds the clip.

        Returns:
            A read-only 1-D float32 array (memory-mapped on a hit).

        Raises:
            DataError: as `load_audio` (missing, undecodable, empty or non-finite audio).
        """
        path = os.fspath(path)
        try:
            entry = self.entry(path, start, end)
        except OSError:  # missing or unreadable: let load_audio raise its DataError
            return load_audio(path, self.sampling_rate, start, end)
        cached = self._read(entry)
        if cached is not None:
            return cached
        audio = load_audio(path, self.sampling_rate, start, end)
        self._write(entry, audio)
        return audio

    def functionals(self, path: str | os.PathLike, start: float | None = None, end: float | None = None) -> np.ndarray:
        """`mmemo.data.acoustic.functionals` of the decoded clip, from the cache when it holds them.

        Returns:
            A float32 vector of `len(mmemo.data.acoustic.FEATURE_NAMES)` values.

        Raises:
            DataError: as `load_audio`.
        """
        from mmemo.data.acoustic import FEATURE_NAMES, FEATURES_VERSION, functionals  # imports librosa: only here

        try:
            audio_entry = self.entry(path, start, end)
        except OSError:  # missing or unreadable: let load_audio raise its DataError
            return functionals(load_audio(path, self.sampling_rate, start, end), self.sampling_rate)
        entry = audio_entry.with_name(f"{audio_entry.stem}.functionals-v{FEATURES_VERSION}.npy")
        cached = self._read(entry)
        if cached is not None and cached.size == len(FEATURE_NAMES):
            return np.array(cached)  # a small vector: copy it rather than keep the file mapped
        values = functionals(self.load(path, start, end), self.sampling_rate)
        self._write(entry, values)
        return values

    def entry(self, path: str | os.PathLike, start: float | None = None, end: float | None = None) -> Path:
        """The cache file that holds (or would hold) this clip."""
        settings = f"v{CACHE_VERSION}|sr={self.sampling_rate}|start={_seconds(start)}|end={_seconds(end)}"
        key = hashlib.blake2b(f"{self._content_digest(os.fspath(path))}|{settings}".encode(), digest_size=16)
        name = key.hexdigest()
        return self.root / name[:2] / f"{name}.npy"

    def _content_digest(self, path: str) -> str:
        stat = os.stat(path)
        memo_key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        digest = self._digests.get(memo_key)
        if digest is None:
            h = hashlib.blake2b(str(stat.st_size).encode(), digest_size=16)
            with open(path, "rb") as f:
                h.update(f.read(_EDGE_BYTES))
                if stat.st_size > _EDGE_BYTES:
                    f.seek(max(_EDGE_BYTES, stat.st_size - _EDGE_BYTES))
                    h.update(f.read())
            digest = self._digests[memo_key] = h.hexdigest()
        return digest

    @staticmethod
    def _read(entry: Path) -> np.ndarray | None:
        try:
            audio = np.load(entry, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):  # absent, truncated or not an .npy: a miss
            return None
        if audio.dtype != np.float32 or audio.ndim != 1 or audio.size == 0:
            return None
        return audio

    def _write(self, entry: Path, audio: np.ndarray) -> None:
        try:
            # Atomic: readers see the old entry, or none, or the whole new one.
            with atomic_write(entry, "wb") as f:
                np.save(f, np.ascontiguousarray(audio, dtype=np.float32), allow_pickle=False)
        except OSError as e:  # a full or read-only disk slows training down but must not stop it
            if not self._write_failed:
                warnings.warn(f"audio cache {self.root}: cannot write entries ({e}); decoding without the cache")
                self._write_failed = True


def _seconds(value: float | None) -> str:
    return "none" if value is None else repr(round(float(value), 6))


def clip_functionals(
    path: str | os.PathLike, start: float | None, end: float | None, cache: AudioCache | None, sampling_rate: int
) -> np.ndarray:
    """`mmemo.data.acoustic.functionals` of a decoded clip: through `cache` when there is one, else decoded here.

    Raises:
        DataError: as `load_audio`.
    """
    if cache is not None:
        return cache.functionals(path, start, end)
    from mmemo.data.acoustic import functionals

    return functionals(load_audio(path, sampling_rate, start, end), sampling_rate)
