"""The decoded-audio cache: hits equal decoding, keys follow content and settings, bad entries heal."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from mmemo.data.audio import load_audio
from mmemo.data.cache import AudioCache
from mmemo.data.dataset import EmotionDataset
from mmemo.errors import DataError


def _write_clip(path, seconds=3.0, rate=44100, channels=2, seed=0):
    """A stereo 44.1 kHz clip: loading it downmixes and resamples, as for many corpus releases."""
    rng = np.random.default_rng(seed)
    sf.write(path, rng.normal(0, 0.1, (int(seconds * rate), channels)).astype(np.float32), rate, subtype="PCM_16")
    return path


def test_hit_returns_the_decoded_samples(tmp_path):
    clip = _write_clip(tmp_path / "a.wav")
    cache = AudioCache(tmp_path / "cache")
    first = cache.load(clip)  # a miss: decodes and stores
    assert cache.entry(clip).is_file()
    second = AudioCache(tmp_path / "cache").load(clip)  # a fresh instance: no in-memory state, a disk hit
    assert isinstance(second, np.memmap) or isinstance(second.base, np.memmap)
    expected = load_audio(clip, 16000)
    assert second.dtype == np.float32
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)


def test_start_end_and_rate_are_part_of_the_key(tmp_path):
    clip = _write_clip(tmp_path / "a.wav")
    cache = AudioCache(tmp_path / "cache")
    entries = {
        cache.entry(clip),
        cache.entry(clip, 0.5),
        cache.entry(clip, 0.5, 2.0),
        cache.entry(clip, None, 2.0),
        AudioCache(tmp_path / "cache", sampling_rate=8000).entry(clip),
    }
    assert len(entries) == 5
    np.testing.assert_array_equal(cache.load(clip, 0.5, 2.0), load_audio(clip, 16000, 0.5, 2.0))
    np.testing.assert_array_equal(cache.load(clip), load_audio(clip, 16000))


def test_changed_content_misses_and_moved_file_hits(tmp_path):
    clip = _write_clip(tmp_path / "a.wav", seed=0)
    cache = AudioCache(tmp_path / "cache")
    old = np.array(cache.load(clip))
    old_entry = cache.entry(clip)
    _write_clip(clip, seed=1)  # same size and path, new samples
    assert cache.entry(clip) != old_entry
    new = cache.load(clip)
    np.testing.assert_array_equal(new, load_audio(clip, 16000))
    assert not np.array_equal(new, old)
    new_entry = cache.entry(clip)
    moved = clip.rename(tmp_path / "b.wav")
    assert AudioCache(tmp_path / "cache").entry(moved) == new_entry  # a content key: the path does not matter


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "wrong_dtype"])
def test_corrupt_entry_is_ignored_and_rewritten(tmp_path, damage):
    clip = _write_clip(tmp_path / "a.wav")
    cache = AudioCache(tmp_path / "cache")
    expected = load_audio(clip, 16000)
    cache.load(clip)
    entry = cache.entry(clip)
    if damage == "truncated":  # as if a writer without temp+rename had been killed mid-write
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "garbage":
        entry.write_bytes(b"not an npy file at all")
    elif damage == "empty":
        entry.write_bytes(b"")
    else:
        np.save(entry, expected.astype(np.float64))
    np.testing.assert_array_equal(AudioCache(tmp_path / "cache").load(clip), expected)
    reread = np.load(entry)  # healed on disk
    assert reread.dtype == np.float32
    np.testing.assert_array_equal(reread, expected)


def test_no_temp_files_left_and_errors_pass_through(tmp_path):
    clip = _write_clip(tmp_path / "a.wav")
    cache = AudioCache(tmp_path / "cache")
    cache.load(clip)
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == [cache.entry(clip).name]
    with pytest.raises(DataError, match="does not exist"):
        cache.load(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(DataError):
        cache.load(tmp_path / "bad.wav")


def test_unwritable_cache_falls_back_to_decoding(tmp_path):
    clip = _write_clip(tmp_path / "a.wav")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="cannot write"):
        audio = AudioCache(blocker).load(clip)
    np.testing.assert_array_equal(audio, load_audio(clip, 16000))


def test_dataset_reads_through_the_cache(tmp_path):
    clips = [_write_clip(tmp_path / f"{i}.wav", seconds=1.0 + i, seed=i) for i in range(3)]
    rows = [{"id": str(i), "audio": str(c), "text": "hello", "label": "x"} for i, c in enumerate(clips)]
    plain = EmotionDataset(rows, {"x": 0}, max_seconds=2.5)
    cached = EmotionDataset(rows, {"x": 0}, max_seconds=2.5, cache_dir=str(tmp_path / "cache"))
    for _ in range(2):  # miss, then hit
        for i in range(3):
            np.testing.assert_array_equal(cached[i]["audio"], plain[i]["audio"])
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 3


def test_a_hit_does_not_decode_again(tmp_path, monkeypatch):
    """A fresh cache over filled entries returns the decoded samples without calling the decoder."""
    import mmemo.data.cache as cache_module

    decoded_paths = []

    def counting_load_audio(path, *args, **kwargs):  # the real decoder, counted
        decoded_paths.append(path)
        return load_audio(path, *args, **kwargs)

    monkeypatch.setattr(cache_module, "load_audio", counting_load_audio)
    clips = [_write_clip(tmp_path / f"{i}.wav", seconds=2.0, seed=i) for i in range(4)]
    for clip in clips:
        AudioCache(tmp_path / "cache").load(clip)
    assert len(decoded_paths) == len(clips)  # every first load decodes
    decoded_paths.clear()
    hits = [np.array(AudioCache(tmp_path / "cache").load(clip)) for clip in clips]
    assert decoded_paths == []  # every second load is a hit
    for clip, hit in zip(clips, hits):
        np.testing.assert_array_equal(hit, load_audio(clip, 16000))
