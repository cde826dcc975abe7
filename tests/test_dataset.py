"""The dataset, collator and bucketed sampler: padding and masks for any batch, every clip once per epoch."""

import numpy as np
import pytest
from conftest import HYPOTHESIS_SETTINGS as SETTINGS
from hypothesis import given
from hypothesis import strategies as st

from mmemo.config import ModelConfig
from mmemo.data.dataset import MIN_AUDIO_SAMPLES, BucketBatchSampler, Collator
from mmemo.data.text import train_wordpiece


@pytest.fixture(scope="module")
def collator():
    from mmemo.builders import load_feature_extractor

    tokenizer = train_wordpiece(["what a day", "I am so angry", "fine thanks"], vocab_size=100)
    return Collator(tokenizer, load_feature_extractor(ModelConfig()), max_text_tokens=16)


def _clip(length: int, kind: str, seed: int) -> np.ndarray:
    if kind == "silence":
        return np.zeros(length, dtype=np.float32)
    if kind == "constant":  # zero variance but not zero: the normaliser's other corner
        return np.full(length, 0.3, dtype=np.float32)
    return np.random.default_rng(seed).uniform(-1, 1, length).astype(np.float32)


items = st.lists(
    st.one_of(
        st.none(),  # a clip that failed to decode with on_bad_sample=skip
        st.fixed_dictionaries(
            {
                "text": st.text(max_size=40).map(str.strip),  # the dataset strips transcripts
                "audio": st.one_of(
                    st.none(), st.tuples(st.integers(1, 20000), st.sampled_from(["noise", "silence", "constant"]))
                ),
            }
        ),
    ),
    min_size=1,
    max_size=6,
)


@SETTINGS
@given(raw=items)
def test_collator_pads_to_the_longest_clip_and_masks_real_samples(collator, raw):
    batch_items = [
        None
        if r is None
        else {
            "id": str(i),
            "text": r["text"],
            "label": i,
            "audio": None if r["audio"] is None else _clip(*r["audio"], seed=i),
        }
        for i, r in enumerate(raw)
    ]
    kept = [item for item in batch_items if item is not None]
    batch = collator(batch_items)

    assert batch.get("skipped", 0) == len(batch_items) - len(kept)
    assert batch["ids"] == [item["id"] for item in kept] and batch["labels"].tolist() == [i["label"] for i in kept]
    assert batch["audio_present"].tolist() == [item["audio"] is not None for item in kept]
    assert batch["text_present"].tolist() == [bool(item["text"]) for item in kept]

    real = [
        MIN_AUDIO_SAMPLES if item["audio"] is None else max(len(item["audio"]), MIN_AUDIO_SAMPLES) for item in kept
    ]  # a missing clip is a silent 400-sample stub; short ones are padded to 400
    if not any(item["audio"] is not None for item in kept):
        assert batch["audio"] is None
    else:
        values, mask = batch["audio"]["input_values"], batch["audio"]["attention_mask"]
        assert values.shape == (len(kept), max(real))
        assert mask.sum(1).tolist() == real
        assert np.isfinite(values.numpy()).all()
        for row, n in zip(values, real):
            assert not row[n:].any()  # padding is zeros

    if not batch["text_present"].any():
        assert batch["text"] is None
    else:
        ids, mask = batch["text"]["input_ids"], batch["text"]["attention_mask"]
        assert ids.shape[0] == len(kept) and ids.shape[1] <= collator.max_text_tokens
        assert (mask.sum(1) >= 2).all()  # at least [CLS] [SEP]


@SETTINGS
@given(
    durations=st.lists(st.one_of(st.just(0.0), st.floats(0.05, 30.0)), max_size=60),
    batch_size=st.integers(1, 10),
    max_batch_seconds=st.one_of(st.just(0.0), st.floats(0.5, 60.0)),
    shuffle=st.booleans(),
    seed=st.integers(0, 10_000),
    epoch=st.integers(0, 5),
    data=st.data(),
)
def test_bucket_sampler_covers_every_clip_once_deterministically(
    durations, batch_size, max_batch_seconds, shuffle, seed, epoch, data
):
    def make():
        sampler = BucketBatchSampler(durations, batch_size, max_batch_seconds, shuffle=shuffle, seed=seed)
        sampler.set_epoch(epoch)
        return sampler

    sampler = make()
    batches = sampler.batches()
    assert sorted(i for b in batches for i in b) == list(range(len(durations)))
    assert all(batches) and len(sampler) == len(batches)
    assert make().batches() == batches  # the same seed and epoch give the same batches

    if max_batch_seconds > 0:  # padded seconds within the budget, except a single clip that alone exceeds it
        assert all(len(b) == 1 or max(durations[i] for i in b) * len(b) <= max_batch_seconds + 1e-9 for b in batches)
    else:  # cut in sorted order: all full except at most one
        sizes = [len(b) for b in batches]
        assert all(s <= batch_size for s in sizes) and sum(s < batch_size for s in sizes) <= 1

    start = data.draw(st.integers(0, len(batches)), label="start")
    sampler.set_epoch(epoch, start=start)  # a resumed run skips exactly the batches already trained
    assert list(sampler) == batches[start:]
