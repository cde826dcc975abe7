"""The one row-scoring loop: rows in, a Prediction (or an error message) per row out, chunk by chunk.

`predict_rows` scores rows for `mmemo predict-batch` (`mmemo.batch_predict`), `mmemo evaluate`
(`mmemo.evaluate.row_logits`) and `mmemo data audit --model` (`mmemo.audit.model_probabilities`), so the three give
the same probabilities for every clip.

**Long clips are segmented.** A row is scored as `EmotionRecognizer.predict` scores it: audio longer than the
window (`mmemo.segmentation.WINDOW_SECONDS`, 8 s) is cut into speech segments, each is classified, and the clip's
probabilities are their duration-weighted mean. `mmemo evaluate` used to score whole clips; that was dropped
because the model is trained on clips cropped to `data.max_audio_seconds`, so a 40 s clip in one piece is an input
it never saw (attention pooling over five times the frames, a group-norm front end's statistics over another
span) at a cost growing with the square of its length; and segments are what users get from `predict`, so the
scores evaluate reports are those of what users run. (A training run's own validation and test loaders still
centre-crop long clips to `data.max_audio_seconds`: those scores hear the middle of a long clip only.)

**The plan.** Rows are dealt in input order into chunks of `chunk_rows`; inside a chunk they are sorted by duration
(file headers) and cut into batches of `batch_size`. A clip's probabilities depend a little on its batch
neighbours (a group-norm wav2vec2 front end normalises over the zero padding, and float sums follow tensor
shapes); the plan depends on nothing but the rows and the two sizes, so every run that scores a chunk scores it
alike: evaluate and predict-batch agree on the same rows, a resumed run equals an uninterrupted one, and shards
merged equal one process (with the same sizes, device and thread count). Audio is decoded in DataLoader workers
(`workers`); the model runs in the calling process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from mmemo.errors import DataError

if TYPE_CHECKING:  # torch and the audio stack load on first use: `predict-batch --merge` needs neither
    from mmemo.inference import EmotionRecognizer

CHUNK_ROWS = 256  # rows per chunk: what a killed predict-batch can lose, and the unit shards are dealt in


def chunk_ranges(n_rows: int, chunk_rows: int = CHUNK_ROWS) -> list[range]:
    """Row index ranges of the plan's chunks: consecutive runs of `chunk_rows` rows in input order."""
    if chunk_rows < 1:
        raise DataError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    return [range(start, min(start + chunk_rows, n_rows)) for start in range(0, n_rows, chunk_rows)]


class _Clips:
    """A map-style dataset that decodes a row's audio (in a DataLoader worker): (row index, waveform or None, error
    message or None)."""

    def __init__(self, rows: list[dict], sampling_rate: int):
        self.rows, self.sampling_rate = rows, sampling_rate

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        row = self.rows[i]
        if not row["audio"]:
            return i, None, None
        from mmemo.data.audio import load_audio

        try:
            return i, load_audio(row["audio"], self.sampling_rate, row.get("start"), row.get("end")), None
        except DataError as e:
            return i, None, str(e)


class _Batches:
    """The plan's batches, chunk after chunk; a chunk's durations are read from headers only when it comes up."""

    def __init__(self, rows: list[dict], chunks: list[range], batch_size: int):
        self.rows, self.chunks, self.batch_size = rows, chunks, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        from mmemo.data.dataset import clip_seconds

        for chunk in self.chunks:
            order = sorted(chunk, key=lambda i: clip_seconds(self.rows[i]))  # stable: ties keep input order
            for start in range(0, len(order), self.batch_size):
                yield order[start : start + self.batch_size]


def predict_rows(
    recognizer: EmotionRecognizer,
    rows: list[dict],
    chunks: list[range] | None = None,
    batch_size: int = 16,
    chunk_rows: int = CHUNK_ROWS,
    workers: int = 0,
    transcriber=None,
    progress: bool = False,
    desc: str = "predict",
) -> Iterator[tuple[range, list]]:
    """Score rows chunk by chunk: the one row-scoring loop (see the module docstring for the plan).

    With a speaker-normalised model (`model.acoustic_normalization: speaker`) and rows that carry a `speaker`,
    each speaker is first enrolled from all of `rows` (every clip decoded once more), as training and evaluation
    do; the enrolment covers every row, not only `chunks`, so shards and resumed runs use the same profiles.

    Args:
        recognizer: the model.
        rows: dicts with `id`, `audio` (a path or ""), `text`, optional `start`/`end` seconds and `speaker`.
        chunks: the chunks to score, from `chunk_ranges(len(rows), chunk_rows)` (None: all of them).
        batch_size: rows per batch (a long clip's segments may take more than one forward pass).
        chunk_rows: rows per chunk, when `chunks` is None.
        workers: DataLoader worker processes decoding audio (0: decode in this process).
        transcriber: a `mmemo.asr.Transcriber`: each chunk's rows with audio but no text are transcribed
            (`mmemo.asr.transcribe_missing`, in place) before they are scored.
        progress: a progress bar over rows on a terminal.
        desc: the bar's label (the command that scores: predict, evaluate).

    Yields:
        (chunk, results): per row of the chunk, in input order, a `Prediction` or an error message (audio that
        cannot be decoded, a row with neither text nor audio).
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    chunks = chunk_ranges(len(rows), chunk_rows) if chunks is None else chunks
    if not chunks:
        return
    rate = recognizer.config.sampling_rate
    profiles = speaker_profiles(recognizer, rows)
    loader = DataLoader(
        _Clips(rows, rate), batch_sampler=_Batches(rows, chunks, batch_size), collate_fn=list, num_workers=workers
    )
    bar = tqdm(total=sum(map(len, chunks)), unit="row", desc=desc, disable=None if progress else True)
    k, results = 0, {}
    with bar:
        for batch in loader:  # batches arrive in plan order, and no batch spans two chunks
            if not results and transcriber is not None:
                from mmemo.asr import transcribe_missing

                transcribe_missing([rows[i] for i in chunks[k]], transcriber, progress=False)
            results.update(_score_batch(recognizer, rows, batch, profiles, batch_size))
            bar.update(len(batch))
            if len(results) == len(chunks[k]):
                yield chunks[k], [results[i] for i in chunks[k]]
                k, results = k + 1, {}


def _score_batch(recognizer: EmotionRecognizer, rows: list[dict], batch: list, profiles, batch_size: int) -> dict:
    """{row index: Prediction or error message} for one decoded batch; a batch the model refuses is retried row by
    row, so one bad input costs its own row only."""
    results, ready = {}, []
    for i, audio, error in batch:
        if error is None and audio is None and not rows[i]["text"].strip():
            error = "row has neither text nor audio"
        if error is None:
            ready.append((i, audio))
        else:
            results[i] = error

    def predict(items: list) -> list:
        return recognizer.predict(
            text=[rows[i]["text"] for i, _ in items],
            audio=[audio for _, audio in items],
            sampling_rate=recognizer.config.sampling_rate,
            batch_size=batch_size,
            speaker_profile=None if profiles is None else [profiles[i] for i, _ in items],
        )

    if not ready:
        return results
    try:
        results.update(zip([i for i, _ in ready], predict(ready)))
    except DataError:
        for item in ready:
            try:
                results[item[0]] = predict([item])[0]
            except DataError as e:
                results[item[0]] = str(e)
    return results


def speaker_profiles(recognizer: EmotionRecognizer, rows: list[dict]) -> list | None:
    """Per row, its speaker's `SpeakerProfile` enrolled from `rows` as `enrol_speaker` enrols one
    (`enrolment_statistics`, `profile_from`; None for a row without speaker or decodable audio); None when the model does
    not standardise per speaker or no row names one. Clips are decoded one at a time and only their statistics kept.
    """
    config = recognizer.config
    if config.acoustic_normalization != "speaker" or not recognizer.uses_profiles:
        return None
    from mmemo.data.audio import load_audio

    rows_of, statistics_of = {}, {}
    for i, row in enumerate(rows):
        if row.get("speaker") and row["audio"]:
            try:
                audio = load_audio(row["audio"], config.sampling_rate, row.get("start"), row.get("end"))
            except DataError:
                continue  # the row reports its error when it is scored
            rows_of.setdefault(row["speaker"], []).append(i)
            statistics_of.setdefault(row["speaker"], []).append(recognizer.enrolment_statistics([audio]))
    out = [None] * len(rows)
    for speaker, indices in rows_of.items():
        features, pooled = zip(*statistics_of[speaker])
        profile = recognizer.profile_from(
            np.concatenate(features), None if pooled[0] is None else np.concatenate(pooled)
        )
        for i in indices:
            out[i] = profile
    return out if rows_of else None
