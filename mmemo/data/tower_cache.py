"""A frozen audio tower's pooled states, computed once per clip and reused across epochs, folds and seeds.

A pretrained tower that is not trained (`model.freeze_audio_layers: -1`) gives every clip the same output in
every epoch, fold and seed, so with `model.audio_head: pooled` its per-layer mean-pooled hidden states are
computed once and the training steps run the head alone. Entries live under `<data.cache_dir>/tower/`, one
float32 `.npy` of shape (layers, D) per clip and copy, keyed by a BLAKE2b hash of:
- the tower: a digest of its weights and Hugging Face config (`tower_digest`), so a changed checkpoint recomputes;
- the clip: its decoded-audio cache key (file content, sampling rate, start and end; mmemo/data/cache.py);
- the crop policy (the centre crop to `data.max_audio_seconds`), the pooled layers and the feature extractor's
  settings;
- for augmented copies, the copy number and the augmentation spec (copy k of a clip is the same draw in every
  run, whatever the training seed).
Copy 0 is the clean clip (what validation, test and speaker statistics use); copies 1..K are augmented with
`data.augment` and training draws one of the K + 1 per clip and epoch. Writes are atomic, an unreadable entry is
recomputed, and nothing is ever deleted: remove the folder to clear it. Without a cache folder the table is kept
in memory for the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmemo.data.audio import load_audio
from mmemo.data.cache import AudioCache
from mmemo.data.dataset import clip_seconds
from mmemo.errors import DataError
from mmemo.io import atomic_write

TOWER_CACHE_VERSION = 2  # 2: log-mel features and the first convolution made batch-independent
BATCH_SECONDS = 60.0  # audio per encoder call when filling the cache

Encode = Callable[[list[np.ndarray]], np.ndarray]  # clips (float32 waveforms) → (B, layers, D) pooled states


def tower_digest(module, config: dict) -> str:
    """A digest of a module's weights (names, shapes, bytes) and a config dict: the tower part of every key."""
    import torch

    h = hashlib.blake2b(json.dumps(config, sort_keys=True, default=str).encode(), digest_size=16)
    for name, tensor in module.state_dict().items():
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def pooled_table(
    rows: list[dict],
    encode: Encode,
    settings: dict,
    *,
    sampling_rate: int,
    max_seconds: float,
    cache_dir: str | None = None,
    copies: int = 0,
    augment=None,
    skip_bad: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """The pooled states of every row's (centre-cropped) clip: (1 + copies, N, layers, D), float32.

    Args:
        rows: manifest rows (`audio`, optional `start`/`end`, `id`); a row without audio gets NaN.
        encode: runs the tower on a list of clips and returns their (B, layers, D) pooled states.
        settings: what else the states depend on (tower digest, layers, feature extractor); part of every key.
        sampling_rate / max_seconds: decoding rate and centre-crop length (0: whole clips).
        cache_dir: the `data.cache_dir` folder (entries under `tower/`), or None to keep nothing on disk.
        copies: augmented copies per clip besides the clean one (needs `augment`).
        augment: an `Augmenter` for the copies.
        skip_bad: a clip that fails to decode gets NaN (the dataset drops it later) instead of raising.
        progress: show a progress bar while encoding.

    Raises:
        DataError: a clip cannot be decoded and `skip_bad` is False (the message names the row).
    """
    if copies and augment is None:
        raise ValueError("augmented copies need an augmenter (data.augment)")
    audio_cache = AudioCache(cache_dir, sampling_rate) if cache_dir else None
    root = Path(os.path.expanduser(cache_dir)) / "tower" if cache_dir else None
    settings = {
        **settings,
        "version": TOWER_CACHE_VERSION,
        "max_seconds": max_seconds,
        "augment": repr(augment) if copies else None,
    }
    table: np.ndarray | None = None
    todo: list[tuple[int, int, str, Path | None]] = []  # (copy, row, clip identity, entry) still to compute
    for i, row in enumerate(rows):
        if not row.get("audio"):
            continue
        identity = _identity(row, audio_cache)
        for copy in range(1 + copies):
            entry = None
            if root is not None:
                key = hashlib.blake2b(
                    f"{identity}|{copy}|{json.dumps(settings, sort_keys=True)}".encode(), digest_size=16
                )
                entry = root / key.hexdigest()[:2] / f"{key.hexdigest()}.npy"
                states = _read(entry)
                if states is not None:
                    table = _store(table, copies, len(rows), copy, i, states)
                    continue
            todo.append((copy, i, identity, entry))
    order = sorted(todo, key=lambda item: clip_seconds(rows[item[1]]))  # similar lengths share a batch
    batch: list[tuple[int, int, Path | None, np.ndarray]] = []
    writer, bar = _Writer(), _progress_bar(len(order), progress)
    for copy, i, identity, entry in order:
        clip = _clip(rows[i], audio_cache, sampling_rate, max_seconds, skip_bad)
        if clip is None:
            table = _store(table, copies, len(rows), copy, i, None)
            bar.update(1)
            continue
        if copy:  # seeded by the clip and the copy number: the same draw in every run, fold and seed
            clip = augment(clip, sampling_rate, np.random.default_rng((int(identity[:15], 16), copy)))
        batch.append((copy, i, entry, clip))
        if sum(len(c) for *_, c in batch) >= BATCH_SECONDS * sampling_rate:
            table = _flush(batch, encode, table, copies, len(rows), writer, bar)
    table = _flush(batch, encode, table, copies, len(rows), writer, bar)
    bar.close()
    if table is None:
        raise DataError("no row has audio: a pooled audio tower needs clips")
    return table


def _flush(batch: list, encode: Encode, table, copies: int, n: int, writer: _Writer, bar) -> np.ndarray | None:
    if not batch:
        return table
    states = np.asarray(encode([clip for *_, clip in batch]), dtype=np.float32)  # (B, layers, D)
    for (copy, i, entry, _), value in zip(batch, states):
        table = _store(table, copies, n, copy, i, value)
        if entry is not None:
            writer(entry, value)
    bar.update(len(batch))
    batch.clear()
    return table


def _store(table, copies: int, n: int, copy: int, i: int, states: np.ndarray | None) -> np.ndarray | None:
    if states is None:
        if table is not None:
            table[copy, i] = np.nan
        return table
    if table is None:
        table = np.full((1 + copies, n, *states.shape), np.nan, dtype=np.float32)
    table[copy, i] = states
    return table


def _clip(row: dict, cache: AudioCache | None, rate: int, max_seconds: float, skip_bad: bool) -> np.ndarray | None:
    """The row's decoded clip, centre-cropped (evaluation's crop); None for a bad clip when skipping."""
    try:
        if cache is not None:
            audio = np.asarray(cache.load(row["audio"], row.get("start"), row.get("end")))
        else:
            audio = load_audio(row["audio"], rate, row.get("start"), row.get("end"))
    except DataError as e:
        if not skip_bad:
            raise DataError(f"row {row['id']}: {e}") from None
        return None
    limit = int(max_seconds * rate) if max_seconds else 0
    if limit and len(audio) > limit:
        start = (len(audio) - limit) // 2
        audio = audio[start : start + limit]
    return audio


def _identity(row: dict, cache: AudioCache | None) -> str:
    """A hex digest naming the clip: its decoded-audio cache key (content-based), else its path and times."""
    if cache is not None:
        return cache.entry(row["audio"], row.get("start"), row.get("end")).stem
    name = f"{os.path.abspath(row['audio'])}|{row.get('start')}|{row.get('end')}"
    return hashlib.blake2b(name.encode(), digest_size=16).hexdigest()


def _read(entry: Path) -> np.ndarray | None:
    try:
        states = np.load(entry, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # absent, truncated or not an .npy: compute it again
        return None
    return states if states.dtype == np.float32 and states.ndim == 2 and np.isfinite(states).all() else None


class _Writer:
    """Writes entries atomically; a full or read-only disk slows the next run down but must not stop this one."""

    def __init__(self):
        self.failed = False

    def __call__(self, entry: Path, states: np.ndarray) -> None:
        if self.failed:
            return
        try:
            with atomic_write(entry, "wb") as f:
                np.save(f, np.ascontiguousarray(states, dtype=np.float32), allow_pickle=False)
        except OSError as e:
            warnings.warn(f"tower cache {entry.parent.parent}: cannot write entries ({e}); computing without it")
            self.failed = True


def _progress_bar(total: int, on: bool):
    from mmemo.progress import progress_bar

    return progress_bar(enabled=on and total > 0, total=total, desc="audio tower", unit="clip", leave=False)
