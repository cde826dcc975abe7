"""Bad input, one case per test: each gets a clear error (what, where, what to do) or a defined behaviour.

docs/reliability.md lists every case with its behaviour and the test that covers it.
"""

import ast
import json
import shutil
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tiny_config_dict
from safetensors.torch import load_file, save_file

from mmemo import EmotionRecognizer
from mmemo.config import config_from_dict, load_config
from mmemo.data.audio import load_audio, prepare_waveform
from mmemo.data.dataset import EmotionDataset
from mmemo.data.manifest import read_manifest
from mmemo.errors import ConfigError, DataError, ModelLoadError
from mmemo.model_folder import REQUIRED_FILES

RATE = 16000
MMEMO = Path(__file__).resolve().parent.parent / "mmemo"


@pytest.fixture(scope="module")
def corpus_rows(synth_corpus):
    """The synthetic manifest's raw rows with absolute audio paths, to copy and spoil."""
    rows = [json.loads(line) for line in synth_corpus.read_text().splitlines()]
    return [{**r, "audio": str(synth_corpus.parent / r["audio"])} for r in rows]


def _tone(seconds=1.0, rate=RATE, freq=220.0, amplitude=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_manifest(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _assert_valid(prediction, rec, modalities=None):
    probs = np.array(list(prediction.probabilities.values()))
    assert prediction.label in rec.labels and list(prediction.probabilities) == rec.labels
    assert np.isfinite(probs).all() and probs.sum() == pytest.approx(1.0, abs=1e-5)
    if modalities is not None:
        assert prediction.modalities == modalities


# --- audio files -----------------------------------------------------------------------------------------------


def test_missing_file_names_it_and_points_at_the_manifest(rec, tmp_path):
    with pytest.raises(DataError, match=r"audio file .*nope\.wav does not exist; check the manifest's audio path"):
        rec.predict(audio=tmp_path / "nope.wav")


@pytest.mark.parametrize(
    "name, content",
    [
        ("random.wav", np.random.default_rng(0).bytes(3000)),
        ("random.mp3", np.random.default_rng(1).bytes(3000)),
        ("text.wav", b"this is not audio\n" * 20),
    ],
)
def test_corrupt_file_is_a_decode_error_naming_the_file(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=rf"cannot decode audio file .*{name}: .+; is it a valid audio file\?"):
        load_audio(tmp_path / name)


def test_wav_cut_inside_its_header_is_a_decode_error(tmp_path):
    sf.write(tmp_path / "full.wav", _tone(), RATE, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes((tmp_path / "full.wav").read_bytes()[:30])
    with pytest.raises(DataError, match=r"cannot decode audio file .*cut\.wav"):
        load_audio(tmp_path / "cut.wav")


def test_wav_cut_inside_its_data_loads_the_samples_present(tmp_path):
    # Defined behaviour: libsndfile reads what is there; `mmemo data check` reports the file as truncated.
    from mmemo.data.check import check_manifest

    sf.write(tmp_path / "full.wav", _tone(), RATE, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: 44 + 2 * 8000])  # header + the first 8000 samples
    np.testing.assert_allclose(load_audio(tmp_path / "cut.wav"), _tone()[:8000], atol=1e-4)
    row = {"id": "a", "audio": "cut.wav", "text": "hi", "label": "x", "speaker": "s", "split": "train"}
    report = check_manifest(_write_manifest(tmp_path / "m.jsonl", [row]), progress=False)
    assert [p.kind for p in report.errors] == ["truncated"]


@pytest.mark.parametrize("fmt, name", [("FLAC", "flac_named.wav"), ("WAV", "wav_named.mp3"), ("WAV", "wav_named.ogg")])
def test_wrong_extension_still_loads_because_decoders_sniff_content(tmp_path, fmt, name):
    sf.write(tmp_path / name, _tone(), RATE, format=fmt)
    np.testing.assert_allclose(load_audio(tmp_path / name), _tone(), atol=1e-4)


def test_zero_byte_file_says_it_is_empty(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"audio file .*empty\.wav is empty \(0 bytes\); re-export"):
        load_audio(tmp_path / "empty.wav")


def test_wav_with_zero_samples_says_it_is_empty(tmp_path):
    sf.write(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32), RATE)
    with pytest.raises(DataError, match=r"zero\.wav: audio is empty \(0 samples\)"):
        load_audio(tmp_path / "zero.wav")


def test_nan_or_inf_samples_are_refused(rec, tmp_path):
    x = _tone()
    x[100] = np.nan
    sf.write(tmp_path / "nan.wav", x, RATE, subtype="FLOAT")
    with pytest.raises(DataError, match=r"nan\.wav: audio contains NaN or infinite samples; re-export"):
        rec.predict(audio=tmp_path / "nan.wav")
    x[100] = np.inf
    with pytest.raises(DataError, match=r"audio contains NaN or infinite samples"):
        rec.predict(audio=x, sampling_rate=RATE)


def test_start_past_the_end_of_the_file_is_named(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(1.0), RATE)
    with pytest.raises(DataError, match=r"a\.wav: start 5.0s is past the end of the file \(1.00s\)"):
        load_audio(tmp_path / "a.wav", start=5.0)


# --- audio content ---------------------------------------------------------------------------------------------


def test_pure_silence_gives_a_prediction_without_nan(rec, tmp_path):
    silence = np.zeros(RATE, dtype=np.float32)
    features = rec.collator.pad_audio([silence])["input_values"]
    assert np.isfinite(features.numpy()).all() and not features.abs().max()  # zero-variance input stays 0
    sf.write(tmp_path / "silence.wav", silence, RATE)
    _assert_valid(rec.predict(audio=tmp_path / "silence.wav"), rec, ("audio",))
    _assert_valid(rec.predict(text="hello", audio=silence, sampling_rate=RATE), rec, ("text", "audio"))


@pytest.mark.parametrize("amplitude", [50.0, 1e6])
def test_extreme_amplitude_is_normalised(rec, amplitude):
    loud = _tone(amplitude=amplitude)
    features = rec.collator.pad_audio([loud])["input_values"]
    assert features.std().item() == pytest.approx(1.0, abs=0.01)  # the feature extractor's per-clip normalisation
    quiet_probs = rec.predict(audio=_tone(), sampling_rate=RATE).probabilities
    probs = rec.predict(audio=loud, sampling_rate=RATE).probabilities
    assert max(abs(probs[k] - quiet_probs[k]) for k in probs) < 1e-3  # scale does not change the answer


def test_clipped_integer_audio_gives_a_prediction(rec):
    square = np.where(_tone() >= 0, 32767, -32768).astype(np.int16)  # full-scale, hard-clipped
    _assert_valid(rec.predict(audio=square, sampling_rate=RATE), rec)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 44101])
def test_any_sampling_rate_is_resampled(rec, tmp_path, rate):
    # 44101 Hz: an odd rate once made torchaudio build a 12 GB resampling kernel (a minute per clip)
    sf.write(tmp_path / "a.wav", _tone(1.0, rate), rate)
    start = time.perf_counter()
    assert abs(len(load_audio(tmp_path / "a.wav")) - RATE) <= 1
    assert time.perf_counter() - start < 5
    _assert_valid(rec.predict(audio=tmp_path / "a.wav"), rec)


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_audio_is_downmixed(rec, tmp_path, channels):
    frames = np.repeat(_tone()[:, None], channels, axis=1)  # (samples, channels)
    sf.write(tmp_path / "multi.wav", frames, RATE)
    np.testing.assert_allclose(load_audio(tmp_path / "multi.wav"), _tone(), atol=1e-4)
    mono = rec.predict(audio=_tone(), sampling_rate=RATE).probabilities
    for layout in (frames, frames.T):  # samples × channels and channels × samples
        probs = rec.predict(audio=layout, sampling_rate=RATE).probabilities
        assert max(abs(probs[k] - mono[k]) for k in probs) < 1e-4


def test_a_file_with_fewer_frames_than_channels_keeps_its_frames(tmp_path):
    # The file's layout is known, so a 3-frame 6-channel file is 3 samples, not 6 (arrays use the shorter axis).
    sf.write(tmp_path / "tiny.wav", np.full((3, 6), 0.25, dtype=np.float32), RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "tiny.wav"), [0.25] * 3)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float64])
def test_integer_and_double_arrays_match_float32(rec, dtype):
    x = _tone()
    arr = (x * np.iinfo(dtype).max).astype(dtype) if np.issubdtype(dtype, np.integer) else x.astype(dtype)
    reference = rec.predict(audio=x, sampling_rate=RATE).probabilities
    probs = rec.predict(audio=arr, sampling_rate=RATE).probabilities
    assert max(abs(probs[k] - reference[k]) for k in probs) < 1e-3


def test_array_audio_needs_its_rate_and_at_most_two_dimensions(rec):
    with pytest.raises(DataError, match=r"an array needs sampling_rate=\.\.\."):
        rec.predict(audio=_tone())
    with pytest.raises(DataError, match=r"audio must be 1-D .* got shape \(2, 3, 4\)"):
        rec.predict(audio=np.zeros((2, 3, 4), dtype=np.float32), sampling_rate=RATE)
    with pytest.raises(DataError, match=r"sampling rate must be a positive number of Hz, got 0"):
        prepare_waveform(_tone(), 0)


def test_ten_minute_file_is_cropped_at_training_with_bounded_memory(tmp_path):
    minutes = np.tile(_tone(1.0), 600)  # 10 min at 16 kHz
    sf.write(tmp_path / "long.wav", minutes, RATE, subtype="PCM_16")
    row = {"id": "long", "audio": str(tmp_path / "long.wav"), "text": "x", "label": "happy", "start": None, "end": None}
    for train in (True, False):  # random crop for training, centre crop for evaluation
        dataset = EmotionDataset([row], {"happy": 0}, RATE, max_seconds=4.0, train=train)
        assert dataset.durations() == [4.0]
        tracemalloc.start()
        audio = dataset[0]["audio"]
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert audio.shape == (4 * RATE,) and audio.dtype == np.float32
        # Today the whole file is decoded, then cropped: ~2 copies of 38 MB. A float64 copy or a per-sample
        # Python list would break this bound.
        assert peak < 3 * minutes.nbytes, peak


def test_ten_minute_array_is_segmented_at_inference(rec):
    recording = np.zeros(600 * RATE, dtype=np.float32)
    for start in range(5, 600, 30):  # a 1 s burst every 30 s: 20 speech regions, cheap to classify
        recording[start * RATE : (start + 1) * RATE] = _tone(1.0)
    begin = time.perf_counter()
    prediction = rec.predict(audio=recording, sampling_rate=RATE)
    assert time.perf_counter() - begin < 20
    _assert_valid(prediction, rec, ("audio",))
    assert len(prediction.segments) == 20
    assert all(s.end - s.start < 2 for s in prediction.segments)


# --- text ------------------------------------------------------------------------------------------------------


def test_empty_or_blank_text_with_audio_is_audio_only(rec):
    for blank in ("", "   \n\t "):
        _assert_valid(rec.predict(text=blank, audio=_tone(), sampling_rate=RATE), rec, ("audio",))


def test_no_text_and_no_audio_is_refused(rec):
    with pytest.raises(DataError, match=r"input 0: empty text and no audio; give a transcript, audio, or both"):
        rec.predict(text="  ")
    with pytest.raises(DataError, match=r"predict\(\) needs text=\.\.\., audio=\.\.\. or both"):
        rec.predict()


@pytest.mark.parametrize(
    "text",
    [
        "I can't believe it 😡😡🔥",
        "我今天非常开心",
        "今日はとても悲しい",
        "أنا غاضب جدا اليوم",
        "אני שמח מאוד היום",
        "\u200b\u200d\u2060",  # zero-width characters only: the tokenizer keeps just [CLS] [SEP]
    ],
)
def test_any_script_gives_a_prediction(rec, text):
    _assert_valid(rec.predict(text=text), rec, ("text",))


def test_100k_character_text_is_truncated_to_max_text_tokens(rec):
    text = "what a wonderful day " * 5000  # 105,000 characters
    batch = rec.collator([{"id": "x", "text": text, "audio": None, "label": 0}])
    assert batch["text"]["input_ids"].shape == (1, rec.config.max_text_tokens)
    _assert_valid(rec.predict(text=text), rec, ("text",))


# --- labels and manifests --------------------------------------------------------------------------------------


def test_unknown_label_at_training_names_label_and_split(corpus_rows, tmp_path):
    from mmemo.train import setup

    rows = [dict(r) for r in corpus_rows]
    next(r for r in rows if r["split"] == "valid")["label"] = "bored"
    manifest = _write_manifest(tmp_path / "m.jsonl", rows)
    with pytest.raises(DataError, match=r"valid split has labels \['bored'\] that are not in the label set"):
        setup(config_from_dict(tiny_config_dict(manifest, tmp_path / "run")))


def test_unknown_label_at_evaluation_is_named(trained_run, corpus_rows, tmp_path):
    from mmemo.evaluate import evaluate_manifest

    rows = [dict(r) for r in corpus_rows if r["split"] == "test"]
    rows[0]["label"] = "bored"
    manifest = _write_manifest(tmp_path / "m.jsonl", rows)
    with pytest.raises(DataError, match=r"labels \['bored'\] are not in the model's label set"):
        evaluate_manifest(trained_run["model_dir"], manifest, device="cpu")


def test_label_whitespace_is_stripped_but_case_variants_are_refused(tmp_path):
    row = {"id": "a", "audio": "", "text": "hi", "label": " happy\t", "speaker": "s", "split": "train"}
    assert read_manifest(_write_manifest(tmp_path / "ok.jsonl", [row]))[0]["label"] == "happy"
    rows = [row, {**row, "id": "b"}, {**row, "id": "c", "label": "Happy"}]
    with pytest.raises(
        DataError,
        match=r"m\.jsonl:3: label 'Happy' differs only in case from 'happy' "
        r"\(.*m\.jsonl:1\); labels are case-sensitive",
    ):
        read_manifest(_write_manifest(tmp_path / "m.jsonl", rows))


def test_duplicate_ids_name_both_lines(tmp_path):
    row = {"id": "a", "audio": "", "text": "hi", "label": "happy", "speaker": "s", "split": "train"}
    path = tmp_path / "m.csv"
    path.write_text(
        "id,audio,text,label,speaker,split\n"
        + "a,,hi,happy,s,train\n"
        + "b,,hi,sad,s,train\n"
        + "a,,again,sad,s,valid\n"
    )
    with pytest.raises(DataError, match=r"m\.csv:4: duplicate id 'a' \(first at line 2\); ids must be unique"):
        read_manifest(path)
    with pytest.raises(DataError, match=r"m\.jsonl:2: duplicate id 'a' \(first at line 1\)"):
        read_manifest(_write_manifest(tmp_path / "m.jsonl", [row, row]))


def test_csv_missing_a_column_names_it(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("id,audio,text,label,split\na,,hi,happy,train\n")
    with pytest.raises(DataError, match=r"m\.csv:2: missing column\(s\) speaker; a row needs id, audio, text"):
        read_manifest(path)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"text": ["hi"]}, r"column 'text' must be a string, got list"),
        ({"id": 1.5}, r"column 'id' must be a string, got float 1.5"),
        ({"label": None}, r"empty label"),
        ({"end": "late"}, r"column 'end' must be a number of seconds, got 'late'"),
        ({"start": -1}, r"column 'start' is negative"),
    ],
)
def test_wrong_types_in_a_row_name_line_and_column(tmp_path, bad, message):
    row = {"id": "a", "audio": "", "text": "hi", "label": "happy", "speaker": "s", "split": "train"}
    with pytest.raises(DataError, match=r"m\.jsonl:1: " + message):
        read_manifest(_write_manifest(tmp_path / "m.jsonl", [{**row, **bad}]))


def test_relative_audio_path_resolves_against_the_manifest_folder(tmp_path, monkeypatch):
    (tmp_path / "data" / "wavs").mkdir(parents=True)
    sf.write(tmp_path / "data" / "wavs" / "a.wav", _tone(), RATE)
    row = {"id": "a", "audio": "wavs/a.wav", "text": "hi", "label": "happy", "speaker": "s", "split": "train"}
    manifest = _write_manifest(tmp_path / "data" / "m.jsonl", [row])
    monkeypatch.chdir(tmp_path)  # not the manifest's folder: a cwd-relative lookup would miss the file
    rows = read_manifest(Path("data/m.jsonl"))
    assert rows[0]["audio"] == str((manifest.parent / "wavs" / "a.wav").resolve())
    assert EmotionDataset(rows, {"happy": 0})[0]["audio"].shape == (RATE,)


def test_row_with_neither_text_nor_audio_is_refused_before_training(corpus_rows, tmp_path):
    from mmemo.train import setup

    rows = [dict(r) for r in corpus_rows]
    empty = next(r for r in rows if r["split"] == "train")
    empty["audio"], empty["text"] = "", ""
    manifest = _write_manifest(tmp_path / "m.jsonl", rows)
    with pytest.raises(DataError, match=rf"neither text nor audio.*{empty['id']}"):
        setup(config_from_dict(tiny_config_dict(manifest, tmp_path / "run")))


# --- configs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("data:\n  batch_sise: 4\n", r"c\.yaml: data: unknown key 'batch_sise'; did you mean 'batch_size'\?"),
        ("trian:\n  epochs: 1\n", r"c\.yaml: unknown key 'trian'; did you mean 'train'\?"),
        ("train:\n  xyzzy: 1\n", r"unknown key 'xyzzy'; valid keys: output_dir, overwrite"),
        ("train:\n  lr: fast\n", r"c\.yaml: train\.lr must be float, got str 'fast'"),
        ("model:\n  labels: happy\n", r"model\.labels must be list, got str 'happy'"),
        ("- model\n- data\n", r"c\.yaml: the top level must be a mapping with model/data/train sections"),
        ("train: [1, 2]\n", r"section 'train' must be a mapping, got list"),
        ("train:\n  epochs: [1\n", r"c\.yaml: not valid YAML"),
    ],
)
def test_bad_config_names_key_file_and_fix(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "c.yaml")


def test_empty_config_file_is_all_defaults_and_training_asks_for_a_manifest(tmp_path):
    from mmemo.train import setup

    (tmp_path / "c.yaml").write_text("# nothing yet\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg == config_from_dict({})
    with pytest.raises(ConfigError, match=r"data\.manifest is empty; set it in the config or pass data\.manifest="):
        setup(cfg)


# --- model folders ---------------------------------------------------------------------------------------------


@pytest.fixture
def model_copy(trained_run, tmp_path):
    return Path(shutil.copytree(trained_run["model_dir"], tmp_path / "model"))


@pytest.mark.parametrize("name", REQUIRED_FILES)
def test_model_folder_missing_a_file_names_it(model_copy, name):
    (model_copy / name).unlink()
    with pytest.raises(ModelLoadError, match=rf"model folder .* is missing {name}; .*save_pretrained"):
        EmotionRecognizer.from_pretrained(model_copy)


def test_model_folder_that_does_not_exist_says_how_to_make_one(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model folder .*nowhere does not exist; train one with `mmemo train`"):
        EmotionRecognizer.from_pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize("version", [0, 2, None])
def test_model_from_an_incompatible_version_is_refused(model_copy, version):
    meta = json.loads((model_copy / "config.json").read_text())
    meta["mmemo_format"] = version
    (model_copy / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=rf"mmemo_format {version!r}; this mmemo reads format 1\. Retrain"):
        EmotionRecognizer.from_pretrained(model_copy)


def test_model_config_with_a_bad_key_is_a_load_error(model_copy):
    meta = json.loads((model_copy / "config.json").read_text())
    meta["model"]["fusion_dimm"] = 3
    (model_copy / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r"not a valid mmemo model config: .*unknown key 'fusion_dimm'"):
        EmotionRecognizer.from_pretrained(model_copy)


def _wrong_shape(path):
    state = load_file(path)
    name = [k for k in state if k.startswith("classifier") and state[k].ndim == 2][-1]  # the output layer
    state[name] = state[name][:-1].clone()  # one class fewer than config.json's labels
    save_file(state, path)


def _truncated(path):
    path.write_bytes(path.read_bytes()[:1000])


@pytest.mark.parametrize(
    "spoil, message",
    [
        (_wrong_shape, r"does not match config\.json.*classifier"),
        (_truncated, r"cannot be read"),
    ],
    ids=["wrong-shapes", "truncated"],
)
def test_unusable_weights_are_a_load_error(model_copy, spoil, message):
    spoil(model_copy / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"model\.safetensors " + message):
        EmotionRecognizer.from_pretrained(model_copy)


def test_config_json_that_is_not_json_is_a_load_error(model_copy):
    (model_copy / "config.json").write_text("{ half a file")
    with pytest.raises(ModelLoadError, match=r"config\.json is not valid JSON"):
        EmotionRecognizer.from_pretrained(model_copy)


# --- safe loading ----------------------------------------------------------------------------------------------


def _calls(tree):
    """(dotted name such as "torch.load" or "eval", keyword arguments, line) for every call in `tree`."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            name = f"{func.value.id}.{func.attr}"
        else:
            name = func.id if isinstance(func, ast.Name) else None
        yield name, {k.arg: k.value for k in node.keywords}, node.lineno


def test_nothing_in_the_library_can_unpickle_or_run_code_from_a_file():
    problems, safe_yaml = [], 0
    for path in sorted(MMEMO.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = lambda line, path=path: f"{path.relative_to(MMEMO.parent)}:{line}"  # noqa: E731
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                problems += [
                    f"{where(node.lineno)}: imports {m}"
                    for m in modules
                    if m and m.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "marshal", "shelve")
                ]
        for name, kwargs, line in _calls(tree):
            weights_only = kwargs.get("weights_only")
            if name == "torch.load" and not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                problems.append(f"{where(line)}: torch.load without weights_only=True")
            if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "eval", "exec"):
                problems.append(f"{where(line)}: {name}(...)")
            if name in ("np.load", "numpy.load") and not (
                isinstance(kwargs.get("allow_pickle"), ast.Constant) and kwargs["allow_pickle"].value is False
            ):
                problems.append(f"{where(line)}: np.load without allow_pickle=False")
            remote = kwargs.get("trust_remote_code")
            if isinstance(remote, ast.Constant) and remote.value is not False:
                problems.append(f"{where(line)}: trust_remote_code={remote.value!r} (must come from the config)")
            safe_yaml += name == "yaml.safe_load"
    assert not problems, "\n".join(problems)
    assert safe_yaml >= 1  # config files are parsed, and parsed safely
    assert config_from_dict({}).model.trust_remote_code is False


def test_config_yaml_tags_are_not_executed(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        load_config(tmp_path / "c.yaml")
