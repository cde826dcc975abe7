"""Dataset, collate and a length-bucketed batch sampler for paired transcript/audio rows."""

from __future__ import annotations

import copy
import math
import random
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mmemo.data.audio import audio_duration, load_audio
from mmemo.data.augment import Augmenter
from mmemo.data.cache import AudioCache, clip_functionals
from mmemo.data.speakers import POOLED_STD_FLOOR_REL, STD_FLOOR_REL, speaker_statistics
from mmemo.errors import DataError

# The shortest audio a tower takes: wav2vec2's convolutional front end needs 400 samples (25 ms) for one frame, a
# log-mel front end (Whisper's) one 25 ms window.
MIN_AUDIO_SAMPLES = 400
# Log-mel feature extractors (Whisper's) step 160 samples (10 ms at 16 kHz) per frame.
MEL_HOP = 160
# Added to (seed, epoch, index) so augmentation draws are independent of the crop's draws.
AUGMENT_SALT = 0xA06
POOLED_SALT = 0xC09  # ... and the choice of a clip's cached tower-state copy too


def clip_seconds(row: dict) -> float:
    """A manifest row's audio duration in seconds, from its start/end or the file header (0 without audio)."""
    if not row["audio"]:
        return 0.0
    start, end = row.get("start") or 0.0, row.get("end")
    seconds = (end - start) if end is not None else (audio_duration(row["audio"]) or 0.0) - start
    return max(seconds, 0.0)


class EmotionDataset(Dataset):
    """Manifest rows → dicts with `text`, `audio` (float32 array or None) and `label` (int).

    Training clips longer than `max_seconds` are randomly cropped (seeded by seed, epoch and index, so a
    resumed run sees the same crops); evaluation clips are centre-cropped. With `skip_bad`, a clip that fails
    to decode gives None (the collator drops and counts it) instead of raising. With `cache_dir`, clips are
    decoded once into an `AudioCache` there and memory-mapped afterwards (see mmemo/data/cache.py). With
    `augment`, training clips are augmented after the crop (the cache keeps the clean clip), seeded by seed,
    epoch and index like the crop; the item then carries its generator as `augment_rng` for the collator's
    spectrogram masks. An index past the last row is a further copy of row `index % len(rows)` (what an
    oversampling `BucketBatchSampler` draws): the same row with its own crop and augmentation.

    With `pooled`, a frozen audio tower's pooled states computed beforehand (`mmemo.data.tower_cache`; (copies, N,
    layers, D), copy 0 the clean clip), items carry `pooled` (layers, D) instead of audio, and nothing is decoded:
    a training item draws one copy per epoch (seeded like the crop), evaluation takes the clean one. With
    `pooled_speaker` they also carry `pooled_reference` (2, layers, D): their speaker's mean and std.
    """

    def __init__(
        self,
        rows: list[dict],
        label_to_id: dict[str, int],
        sampling_rate: int = 16000,
        max_seconds: float = 8.0,
        train: bool = False,
        seed: int = 0,
        skip_bad: bool = False,
        cache_dir: str | None = None,
        acoustic: str | None = None,
        augment: Augmenter | None = None,
        pooled: np.ndarray | None = None,
        pooled_speaker: bool = False,
    ):
        self.rows = rows
        self.label_to_id = label_to_id
        self.sampling_rate = sampling_rate
        self.max_samples = int(max_seconds * sampling_rate) if max_seconds else None
        self.train = train
        self.seed = seed
        self.skip_bad = skip_bad
        self.cache = AudioCache(cache_dir, sampling_rate) if cache_dir else None
        self.augment = augment
        self.epoch = 0
        self.functionals = self.references = None
        if acoustic:
            self.functionals = self._clip_functionals()
            if acoustic == "speaker":
                self.references = self._speaker_references(self.functionals, self.has_functionals(), STD_FLOOR_REL)
        self.pooled, self.pooled_references = pooled, None
        if pooled is not None and pooled_speaker:
            clean = pooled[0].reshape(len(rows), -1)
            usable = np.flatnonzero(np.isfinite(clean).all(axis=1))
            self.pooled_references = self._speaker_references(clean, usable, POOLED_STD_FLOOR_REL)
            self.pooled_references = self.pooled_references.reshape(len(rows), 2, *pooled.shape[2:])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict | None:
        row_index = index % len(self.rows)  # index itself seeds the crop and augmentation: copies differ
        row = self.rows[row_index]
        audio, extra = None, {}
        if row["audio"] and self.pooled is not None:
            extra = self._pooled_item(row, row_index, index)
            if extra is None:
                return None
        elif row["audio"]:
            try:
                if self.cache is not None:
                    audio = self.cache.load(row["audio"], row.get("start"), row.get("end"))
                else:
                    audio = load_audio(row["audio"], self.sampling_rate, row.get("start"), row.get("end"))
            except DataError as e:
                if not self.skip_bad:
                    raise DataError(f"row {row['id']}: {e}") from None
                warnings.warn(f"skipping row {row['id']}: {e}")
                return None
            audio = self._crop(audio, index)
            if self.train and self.augment is not None:
                rng = np.random.default_rng((self.seed, self.epoch, index, AUGMENT_SALT))
                try:  # a noise file that stopped decoding is a bad sample too, not the end of the run
                    audio, extra = self.augment(audio, self.sampling_rate, rng), {"augment_rng": rng}
                except DataError as e:
                    if not self.skip_bad:
                        raise DataError(f"row {row['id']}: augmenting: {e}") from None
                    warnings.warn(f"skipping row {row['id']}: augmenting: {e}")
                    return None
        item = {
            "id": row["id"],
            "text": row["text"].strip(),
            "audio": audio,
            "label": self.label_to_id.get(row["label"], -100),
            **extra,
        }
        if self.functionals is not None:  # of the whole clip, not the crop: utterance-level statistics
            item["functionals"] = self.functionals[row_index]
            item["reference"] = None if self.references is None else self.references[row_index]
        return item

    def _pooled_item(self, row: dict, row_index: int, index: int) -> dict | None:
        """A clip's pooled tower states (one copy: drawn per epoch in training, the clean one otherwise)."""
        copy = 0
        if self.train and len(self.pooled) > 1:
            copy = int(np.random.default_rng((self.seed, self.epoch, index, POOLED_SALT)).integers(len(self.pooled)))
        states = self.pooled[copy, row_index]
        if not np.isfinite(states).all():  # the clip failed to decode when the states were computed
            if not self.skip_bad:
                raise DataError(f"row {row['id']}: its audio could not be decoded for the audio tower")
            return None
        item = {"pooled": states}
        if self.pooled_references is not None:
            item["pooled_reference"] = self.pooled_references[row_index]
        return item

    def _clip_functionals(self) -> np.ndarray:
        """(N, F) acoustic functionals of every row's whole clip, cached with the audio; zeros without audio, NaN
        for a clip that cannot be decoded (skipped later; left out of every statistic)."""
        from mmemo.data.acoustic import FEATURE_NAMES

        table = np.zeros((len(self.rows), len(FEATURE_NAMES)), dtype=np.float32)
        for i, row in enumerate(self.rows):
            if not row["audio"]:
                continue
            try:
                table[i] = clip_functionals(
                    row["audio"], row.get("start"), row.get("end"), self.cache, self.sampling_rate
                )
            except DataError as e:
                if not self.skip_bad:
                    raise DataError(f"row {row['id']}: {e}") from None
                table[i] = np.nan
        return table

    def has_functionals(self) -> np.ndarray:
        """Indices of the rows whose clip gave functionals (has audio, and it decoded)."""
        ok = np.array([bool(row["audio"]) for row in self.rows]) & np.isfinite(self.functionals).all(axis=1)
        return np.flatnonzero(ok)

    def _speaker_references(self, features: np.ndarray, usable: np.ndarray, relative_floor: float) -> np.ndarray:
        """(N, 2, F) each row's speaker's mean and (floored) std of `features` (N, F), from that speaker's `usable`
        rows here (labels unused); NaN for rows without a speaker or usable audio (the model then uses its
        training statistics)."""
        references = np.full((len(self.rows), 2, features.shape[1]), np.nan, dtype=np.float32)
        known = [i for i in usable if self.rows[i].get("speaker")]
        speakers = [self.rows[i]["speaker"] for i in known]
        statistics = speaker_statistics(speakers, features[known], relative_floor)
        for i, speaker in zip(known, speakers):
            references[i] = statistics[speaker]
        return references

    def durations(self) -> list[float]:
        """Clip durations in seconds from file headers (0 for text-only rows), capped at the crop length.

        Speed perturbation makes a training clip up to 1 / speed[0] times longer than this (the sampler's
        buckets and `max_batch_seconds` are then that much looser).
        """
        cap = self.max_samples / self.sampling_rate if self.max_samples else math.inf
        return [min(clip_seconds(row), cap) for row in self.rows]

    def _crop(self, audio: np.ndarray, index: int) -> np.ndarray:
        if self.max_samples is None or len(audio) <= self.max_samples:
            return audio
        spare = len(audio) - self.max_samples
        if self.train:
            offset = int(np.random.default_rng((self.seed, self.epoch, index)).integers(spare + 1))
        else:
            offset = spare // 2
        return audio[offset : offset + self.max_samples]


class Collator:
    """Tokenizes text and pads audio for a list of dataset items.

    Returns a batch dict: `text` (input_ids, attention_mask) or None, `audio` (input_values, attention_mask)
    or None, `text_present` / `audio_present` (B,) bools, `labels` (B,), `ids`. An empty transcript or a
    row without audio is a missing modality for that sample, not an error. With `train` and an `augmenter`,
    log-mel `input_features` get SpecAugment masks within each clip's frames (waveform towers: no change).
    """

    def __init__(
        self,
        tokenizer,
        feature_extractor,
        max_text_tokens: int = 128,
        augmenter: Augmenter | None = None,
        train: bool = False,
        acoustic_features: bool = False,
    ):
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.max_text_tokens = max_text_tokens
        self.augmenter = augmenter
        self.train = train
        self.acoustic_features = acoustic_features

    def for_training(self, augmenter: Augmenter) -> Collator:
        """A copy that applies `augmenter`'s spectrogram masks; this one (evaluation, inference) stays clean."""
        if augmenter.masks_spectrogram and "input_features" not in self.feature_extractor.model_input_names:
            warnings.warn(
                "data.augment.spec_mask needs a log-mel audio tower and is ignored for this waveform one; "
                "for wav2vec2 use model.audio_config.mask_time_prob / mask_feature_prob instead"
            )
        collator = copy.copy(self)
        collator.augmenter, collator.train = augmenter, True
        return collator

    def __call__(self, items: list[dict | None]) -> dict:
        skipped = sum(item is None for item in items)
        items = [item for item in items if item is not None]
        texts = [item["text"] or "" for item in items]
        audios = [item["audio"] for item in items]
        text_present = torch.tensor([bool(t) for t in texts])
        audio_present = torch.tensor([a is not None or "pooled" in item for a, item in zip(audios, items)])
        batch = {
            "ids": [item["id"] for item in items],
            "labels": torch.tensor([item["label"] for item in items]),
            "text_present": text_present,
            "audio_present": audio_present,
            "text": None,
            "audio": None,
        }
        if skipped:
            batch["skipped"] = skipped
        if text_present.any():
            batch["text"] = dict(
                self.tokenizer(
                    texts, padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
                )
            )
        if audio_present.any():
            pooled = any("pooled" in item for item in items)
            batch["audio"] = self.pooled_inputs(items) if pooled else self.pad_audio(audios)
            if any("pooled_reference" in item for item in items):
                batch["audio"]["pooled_reference"] = self.pooled_references(items)
            if self.acoustic_features:
                batch["audio"].update(self.acoustic_inputs(items))
            if self.train and self.augmenter is not None and "input_features" in batch["audio"]:
                self._mask_features(batch["audio"], items)
        return batch

    @staticmethod
    def pooled_inputs(items: list[dict]) -> dict:
        """`pooled` (B, layers, D): tower states computed beforehand; an item without audio gets zeros (it is
        marked absent)."""
        blank = np.zeros(next(item["pooled"].shape for item in items if "pooled" in item), np.float32)
        return {"pooled": torch.from_numpy(np.stack([item.get("pooled", blank) for item in items]).astype(np.float32))}

    @staticmethod
    def pooled_references(items: list[dict]) -> torch.Tensor:
        """(B, 2, layers, D) each item's speaker statistics of the pooled states; NaN where it has none."""
        unknown = np.full(next(item["pooled_reference"].shape for item in items if "pooled_reference" in item), np.nan)
        references = [item.get("pooled_reference", unknown) for item in items]
        return torch.from_numpy(np.stack(references).astype(np.float32))

    def acoustic_inputs(self, items: list[dict]) -> dict:
        """`functionals` (B, F) and `reference` (B, 2, F; NaN: no speaker profile) for the acoustic token.

        Items from an EmotionDataset carry their whole clip's functionals; others (inference) get them computed
        from their audio here.
        """
        from mmemo.data.acoustic import FEATURE_NAMES, functionals

        rate = self.feature_extractor.sampling_rate
        values, references = [], []
        for item in items:
            value = item.get("functionals")
            if value is None:
                audio = item["audio"]
                value = np.zeros(len(FEATURE_NAMES), np.float32) if audio is None else functionals(audio, rate)
            values.append(value)
            reference = item.get("reference")
            references.append(np.full((2, len(value)), np.nan, np.float32) if reference is None else reference)
        return {
            "functionals": torch.from_numpy(np.stack(values).astype(np.float32)),
            "reference": torch.from_numpy(np.stack(references).astype(np.float32)),
        }

    def _mask_features(self, audio: dict, items: list[dict]) -> None:
        features, mask = audio["input_features"], audio.get("attention_mask")  # (B, n_mels, frames), (B, frames)
        for i, item in enumerate(items):
            if item["audio"] is not None and "augment_rng" in item:
                valid = int(mask[i].sum()) if mask is not None else math.ceil(len(item["audio"]) / MEL_HOP)
                masked = self.augmenter.mask_spectrogram(features[i].numpy(), valid, item["augment_rng"])
                features[i] = torch.from_numpy(masked)

    def pad_audio(self, audios: list[np.ndarray | None]) -> dict:
        """Normalise and zero-pad clips (missing ones become a silent stub).

        Returns:
            input_values (B, S) and attention_mask (B, S) for a waveform tower, or input_features
            (B, n_mels, frames) and a frame-level attention_mask for a log-mel (Whisper) feature extractor, padded
            to the longest clip, not to Whisper's 30 s. Log-mel features are computed clip by clip and padded with
            zeros, so a clip's frames are what they are alone (the extractor would compute the STFT over the padded
            batch, which changes the last frames of every shorter clip, and through attention all of them).
        """
        stub = np.zeros(MIN_AUDIO_SAMPLES, dtype=np.float32)
        audios = [stub if a is None else np.pad(a, (0, max(0, MIN_AUDIO_SAMPLES - len(a)))) for a in audios]
        if "input_features" in self.feature_extractor.model_input_names:
            return self._log_mel(audios)
        features = self.feature_extractor(
            audios,
            sampling_rate=self.feature_extractor.sampling_rate,
            padding="longest",
            return_attention_mask=True,
            return_tensors="pt",
        )
        return {"input_values": features["input_values"], "attention_mask": features["attention_mask"]}

    def _log_mel(self, audios: list[np.ndarray]) -> dict:
        rate = self.feature_extractor.sampling_rate
        clips = [self.feature_extractor(a, sampling_rate=rate, padding="longest").input_features[0] for a in audios]
        frames = max(clip.shape[-1] for clip in clips)
        features = np.zeros((len(clips), clips[0].shape[0], frames), dtype=np.float32)  # (B, n_mels, frames)
        mask = np.zeros((len(clips), frames), dtype=np.int64)
        for i, clip in enumerate(clips):
            features[i, :, : clip.shape[-1]], mask[i, : clip.shape[-1]] = clip, 1
        return {"input_features": torch.from_numpy(features), "attention_mask": torch.from_numpy(mask)}


def split_batch(batch: dict, part: slice) -> dict:
    """The samples `part` of a collated batch (tensors, nested dicts and lists sliced along the batch axis)."""

    def cut(value):
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        if isinstance(value, (torch.Tensor, list)):
            return value[part]
        return value

    return cut(batch)


def move_batch(batch: dict, device: torch.device | str, non_blocking: bool = False) -> dict:
    """Move every tensor in a (nested) batch dict to `device`."""

    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=non_blocking)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    return move(batch)


class BucketBatchSampler(Sampler):
    """Batches of similar-length clips, the batch order shuffled each epoch; deterministic per seed and epoch.

    Clips are sorted by duration (with a little seeded jitter so buckets differ between epochs) and cut into
    batches of `batch_size` clips, or, when `max_batch_seconds` > 0, of as many clips as fit that total of
    padded audio seconds. Sorting keeps padding near 1.0× where random batches pad 1.5–3×. Under DDP every
    rank computes the same batch order and takes every `world_size`-th batch from its `rank` on (dropping the
    few at the end that would give ranks unequal counts), so ranks see disjoint data in equal steps.

    With `groups` (each clip's corpus index) and `shares` (each corpus's share of an epoch) an epoch first draws
    its clips: `round(share × len(durations))` from each corpus, every clip of a corpus as often as that
    allows and a fresh random subset for the rest, so a small corpus repeats and a large one is subsampled.
    The draw is then bucketed as above. The k-th extra copy of clip i is yielded as index i + k × len(durations),
    which `EmotionDataset` reads as the same row with its own crop and augmentation.
    """

    def __init__(
        self,
        durations: list[float],
        batch_size: int,
        max_batch_seconds: float = 0.0,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        groups: list[int] | None = None,
        shares: list[float] | None = None,
    ):
        if (groups is None) != (shares is None) or groups is not None and len(groups) != len(durations):
            raise ValueError("give groups (one per clip) and shares (one per group) together")
        self.groups, self.shares = groups, shares
        self.durations = durations
        self.batch_size = batch_size
        self.max_batch_seconds = max_batch_seconds
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's batch order; iteration begins at batch `start` (for resuming mid-epoch)."""
        self.epoch, self.start = epoch, start

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + self.epoch)
        jitter = [rng.uniform(0.0, 0.3) if self.shuffle else 0.0 for _ in self.durations]
        if self.shares is None:
            order = sorted(range(len(self.durations)), key=lambda i: self.durations[i] + jitter[i])
        else:
            # Each drawn copy gets its own jitter: the copies of a repeated clip have one duration, and with one
            # jitter they would sort side by side into the same batch (the same clip, crop and augmentation twice).
            drawn = self.draw(rng)
            keys = [self.seconds(i) + (rng.uniform(0.0, 0.3) if self.shuffle else 0.0) for i in drawn]
            order = [drawn[k] for k in sorted(range(len(drawn)), key=keys.__getitem__)]
        batches, current, longest = [], [], 0.0
        for i in order:
            longest_if_added = max(longest, self.seconds(i))
            too_long = (
                self.max_batch_seconds > 0
                and current
                and longest_if_added * (len(current) + 1) > self.max_batch_seconds
            )
            if current and (len(current) >= self.batch_size and self.max_batch_seconds <= 0 or too_long):
                batches.append(current)
                current, longest_if_added = [], self.seconds(i)
            current.append(i)
            longest = longest_if_added
        if current:
            batches.append(current)
        if self.shuffle:
            rng.shuffle(batches)
        if self.world_size > 1:
            usable = len(batches) // self.world_size * self.world_size
            batches = batches[self.rank : usable : self.world_size]
        return batches

    def draw(self, rng: random.Random) -> list[int]:
        """The epoch's clips under corpus shares: each corpus's count by largest remainder, so they sum to the
        number of clips, then whole passes over the corpus plus a random subset."""
        members: dict[int, list[int]] = {}
        for i, group in enumerate(self.groups):
            members.setdefault(group, []).append(i)
        total = len(self.durations)
        wanted = {g: self.shares[g] * total for g in members}
        counts = {g: int(w) for g, w in wanted.items()}
        for g in sorted(members, key=lambda g: counts[g] - wanted[g])[: total - sum(counts.values())]:
            counts[g] += 1
        drawn = []
        for g, clips in sorted(members.items()):
            passes, rest = divmod(counts[g], len(clips))
            drawn += [i + copy * total for copy in range(passes) for i in clips]
            drawn += [i + passes * total for i in rng.sample(clips, rest)]
        return drawn

    def seconds(self, index: int) -> float:
        """The duration of the clip an index names (a copy's index past the end names clip `index % len`)."""
        return self.durations[index % len(self.durations)]

    def __iter__(self):
        return iter(self.batches()[self.start :])

    def __len__(self) -> int:
        return len(self.batches())


def padding_ratio(batches: list[list[int]], durations: list[float]) -> float:
    """Padded audio seconds over real audio seconds for a list of batches (1.0 = no padding)."""
    n = len(durations)  # an index past the end is a further copy of clip index % n (corpus oversampling)
    real = sum(durations[i % n] for b in batches for i in b)
    padded = sum(max(durations[i % n] for i in b) * len(b) for b in batches)
    return padded / real if real else 1.0
