"""EmotionRecognizer: a trained model with its tokenizer, feature extractor and labels; save, load, predict.

A model folder holds `config.json` (mmemo's model config with the label names, the calibration temperature
and both encoders' full Hugging Face configs), `model.safetensors`, the tokenizer files and
`preprocessor_config.json`. Loading needs nothing else: no network, no pickle.

Prediction runs in length-sorted mini-batches; every input is encoded once and fused three ways, so a
text+audio prediction also reports what the same checkpoint says from the text alone and the audio alone.

Long recordings (longer than `window_seconds`) are split where there is speech: frame energy against a
threshold adapted to the recording (its loud level minus `SPEECH_TOP_DB`, and at least `NOISE_MARGIN_DB` over
its noise floor); silences of `MIN_SILENCE_SECONDS` or more are skipped, shorter pauses stay inside speech.
Each speech region longer than the window is cut into windows overlapping by `overlap_seconds`. Every region
or window is classified on its own (a `Segment`), and the recording's probabilities are the duration-weighted
mean of its segments'. A transcript given with a long recording is not time-aligned, so the whole transcript
is fused with every segment (the model was trained on utterance-level text+audio pairs): the text sets what
it can tell (e.g. valence) and each segment's voice the rest.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_model

from mmemo.config import ModelConfig, build_section
from mmemo.data.audio import load_audio, prepare_waveform
from mmemo.data.dataset import Collator, clip_seconds
from mmemo.errors import ConfigError, DataError, MmemoError, ModelLoadError
from mmemo.io import atomic_folder, atomic_write
from mmemo.model import EmotionModel, encoders_from_configs

FORMAT_VERSION = 1
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", "preprocessor_config.json")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

WINDOW_SECONDS = 8.0  # the training crop length (data.max_audio_seconds); longer audio is segmented
OVERLAP_SECONDS = 1.0
SPEECH_TOP_DB = 35.0  # frames this far below the recording's loud level (95th-percentile frame) are silence
NOISE_MARGIN_DB = 6.0  # ... and so are frames within this of its noise floor (10th-percentile frame)
MIN_SILENCE_SECONDS = 0.5  # quieter stretches shorter than this are pauses inside speech
MIN_SPEECH_SECONDS = 0.2  # louder blips shorter than this are clicks, not speech
SPEECH_PAD_SECONDS = 0.1  # kept on each side of a speech region (onsets and decays sit under the threshold)


@dataclass(frozen=True)
class Segment:
    """One classified stretch of a long recording: start and end in seconds, top label, probabilities."""

    start: float
    end: float
    label: str
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "label": self.label,
            "probabilities": self.probabilities,
        }


@dataclass(frozen=True)
class Prediction:
    """One prediction.

    Attributes:
        label: the top label.
        probabilities: a probability per label (summing to 1) from everything given (fused).
        modalities: the modalities used, ("text",), ("audio",) or ("text", "audio").
        per_modality: {"text": probabilities, "audio": probabilities} from the same checkpoint with one
            modality at a time; one entry (equal to `probabilities`) when one modality was given.
        segments: for audio longer than the window, its classified speech segments in time order; else ().
    """

    label: str
    probabilities: dict[str, float]
    modalities: tuple[str, ...]
    per_modality: dict[str, dict[str, float]] = field(default_factory=dict)
    segments: tuple[Segment, ...] = ()

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "modalities": list(self.modalities),
            "per_modality": self.per_modality,
            "segments": [s.to_dict() for s in self.segments],
        }


class EmotionRecognizer:
    """Predict emotions from text, audio or both with one trained checkpoint.

    Args:
        model: the EmotionModel.
        tokenizer: its Hugging Face tokenizer.
        feature_extractor: its Hugging Face audio feature extractor.
        config: the model config; `config.labels` names the classes in logit order.
        temperature: logits are divided by it before the softmax (fitted on validation data by
            `mmemo.calibration`; 1.0 leaves them as trained).
    """

    def __init__(
        self, model: EmotionModel, tokenizer, feature_extractor, config: ModelConfig, temperature: float = 1.0
    ):
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.config = config
        self.temperature = float(temperature)
        self.labels = list(config.labels)
        self.collator = Collator(tokenizer, feature_extractor, config.max_text_tokens)
        self.quantized = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> EmotionRecognizer:
        self.model.to(device)
        return self

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", int8: bool = False, threads: int | None = None
    ) -> EmotionRecognizer:
        """Load a model folder written by `save_pretrained` (or a Hugging Face hub id holding one).

        Args:
            path: the model folder or hub id.
            device: where to run.
            int8: quantize the linear layers to int8 after loading (CPU only; see `quantize`).
            threads: set torch's CPU thread count (process-wide) when given.

        Raises:
            ModelLoadError: a required file is missing, or the folder comes from an incompatible version.
        """
        from transformers import AutoFeatureExtractor, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        folder = _local_folder(path)
        missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
        if missing:
            raise ModelLoadError(
                f"model folder {folder} is missing {', '.join(missing)}; "
                "it should be a folder written by `save_pretrained` (e.g. runs/NAME/model)"
            )
        try:
            meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"{folder}/config.json is not valid JSON ({e}); copy the model folder again") from None
        version = meta.get("mmemo_format")
        if version != FORMAT_VERSION:
            raise ModelLoadError(
                f"{folder}/config.json has mmemo_format {version!r}; this mmemo reads "
                f"format {FORMAT_VERSION}. Retrain the model or use the mmemo version that wrote it"
            )
        try:
            config = build_section(ModelConfig, meta["model"], f"{folder}/config.json: model")
        except (ConfigError, KeyError) as e:
            raise ModelLoadError(f"{folder}/config.json is not a valid mmemo model config: {e}") from None
        temperature = meta.get("temperature", 1.0)  # folders written before calibration have none
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ModelLoadError(f"{folder}/config.json: temperature must be a positive number, got {temperature!r}")
        text_model, audio_model = encoders_from_configs(meta["text_config"], meta["audio_config"])
        model = EmotionModel(config, len(config.labels), text_model, audio_model)
        try:
            state = load_file(folder / "model.safetensors")
        except Exception as e:  # safetensors raises SafetensorError for a truncated or corrupt file
            raise ModelLoadError(
                f"{folder}/model.safetensors cannot be read ({e}); copy the model folder again"
            ) from None
        expected = model.state_dict()
        wrong = [
            f"{k} {tuple(v.shape)} (config.json gives {tuple(expected[k].shape)})"
            for k, v in state.items()
            if k in expected and v.shape != expected[k].shape
        ]
        if wrong:
            raise ModelLoadError(f"{folder}/model.safetensors does not match config.json: {', '.join(wrong[:3])}")
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ModelLoadError(
                f"{folder}/model.safetensors does not match config.json "
                f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
            )
        tokenizer = AutoTokenizer.from_pretrained(folder)
        feature_extractor = AutoFeatureExtractor.from_pretrained(folder)
        recognizer = cls(model, tokenizer, feature_extractor, config, temperature).to(device)
        return recognizer.quantize() if int8 else recognizer

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the model folder atomically (a temporary folder renamed into place); returns its path.

        Raises:
            MmemoError: the recognizer was quantized (save the fp32 model and quantize after loading).
        """
        if self.quantized:
            raise MmemoError(
                "an int8-quantized recognizer cannot be saved; save the fp32 one and load it "
                "with from_pretrained(..., int8=True)"
            )
        meta = {
            "mmemo_format": FORMAT_VERSION,
            "model": dataclasses.asdict(self.config),
            "temperature": self.temperature,
            "text_config": self.model.text_encoder.hf_config.to_dict(),
            "audio_config": self.model.audio_encoder.hf_config.to_dict(),
        }
        with atomic_folder(path) as tmp:
            (tmp / "config.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
            save_model(self.model, str(tmp / "model.safetensors"))
            self.tokenizer.save_pretrained(tmp)
            self.feature_extractor.save_pretrained(tmp)
        return Path(path)

    def quantize(self) -> EmotionRecognizer:
        """Replace every `nn.Linear` with a dynamically quantized int8 one (CPU inference only); returns self.

        The wav2vec2 convolutional front end stays fp32, so audio gains less than text.
        """
        if self.device.type != "cpu":
            raise MmemoError(f"int8 quantization runs on the CPU only; the model is on {self.device}")
        if not self.quantized:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated but still the simplest path
                self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
            self.quantized = True
        return self

    @torch.inference_mode()
    def predict(
        self,
        text: str | list[str] | None = None,
        audio=None,
        sampling_rate: int | None = None,
        batch_size: int = 16,
        window_seconds: float = WINDOW_SECONDS,
        overlap_seconds: float = OVERLAP_SECONDS,
    ):
        """Classify text, audio or both.

        Args:
            text: a transcript, or a list of them for a batch (None or "" = no text).
            audio: a file path (wav, flac, ogg, mp3), a NumPy array or torch tensor (mono, or channels ×
                samples, any rate, float or integer PCM), or a list of them.
            sampling_rate: the rate of array/tensor audio (required for arrays; files carry their own).
            batch_size: inputs (or long-audio segments) per forward pass; inputs are sorted by length first.
            window_seconds: audio longer than this is split into speech segments of at most this length.
            overlap_seconds: overlap between consecutive windows inside one long speech region.

        Returns:
            A Prediction, or a list of them (in input order) when a list was given.

        Raises:
            DataError: no input, mismatched list lengths, unreadable audio, or an array without sampling_rate.
            ValueError: batch_size < 1, or overlap_seconds not in [0, window_seconds).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= overlap_seconds < window_seconds:
            raise ValueError(f"need 0 <= overlap_seconds < window_seconds, got {overlap_seconds} and {window_seconds}")
        batched = isinstance(text, (list, tuple)) or isinstance(audio, (list, tuple))
        texts, audios = _as_list(text), _as_list(audio)
        n = max(len(texts), len(audios))
        if n == 0:
            raise DataError("predict() needs text=..., audio=... or both")
        texts = texts or [None] * n
        audios = audios or [None] * n
        if len(texts) != len(audios):
            raise DataError(f"predict(): {len(texts)} texts but {len(audios)} audio inputs; give one of each per item")
        items = []
        for i, (t, a) in enumerate(zip(texts, audios)):
            where = f"audio[{i}]" if batched else "audio"
            waveform = None if a is None else self._waveform(a, sampling_rate, where=where)
            t = (t or "").strip()
            if not t and waveform is None:
                raise DataError(f"input {i}: empty text and no audio; give a transcript, audio, or both")
            items.append({"text": t, "audio": waveform})
        predictions = self._predict_items(items, batch_size, window_seconds, overlap_seconds)
        return predictions if batched else predictions[0]

    def _predict_items(
        self, items: list[dict], batch_size: int, window_seconds: float, overlap_seconds: float
    ) -> list[Prediction]:
        """Cut long audio into segments, classify every unit in sorted mini-batches, put predictions together."""
        rate = self.config.sampling_rate
        units, spans = [], []  # spans[i]: None for a whole input, else its segments' (start, end) samples
        for item in items:
            wave = item["audio"]
            if wave is None or len(wave) <= window_seconds * rate:
                spans.append(None)
                units.append(item)
                continue
            windows = speech_windows(wave, rate, window_seconds, overlap_seconds)
            spans.append(windows)
            units += [{"text": item["text"], "audio": wave[a:b]} for a, b in windows]
        outputs = self._classify(units, batch_size)
        out, k = [], 0
        for item, item_spans in zip(items, spans):
            count = 1 if item_spans is None else len(item_spans)
            out.append(self._assemble(item, item_spans, outputs[k : k + count]))
            k += count
        return out

    def _assemble(self, item: dict, spans: list[tuple[int, int]] | None, outputs: list[dict]) -> Prediction:
        """One input's Prediction from its units' outputs (one for a whole input, one per segment of long audio)."""
        present = {"text": bool(item["text"]), "audio": item["audio"] is not None}
        modalities = tuple(m for m in ("text", "audio") if present[m])
        if spans is None:
            fused = outputs[0]["fused"]
            return Prediction(
                self.labels[int(fused.argmax())],
                self._named(fused),
                modalities,
                {m: self._named(outputs[0][m]) for m in modalities},
            )
        rate = self.config.sampling_rate
        weights = np.array([b - a for a, b in spans], dtype=np.float64)  # duration-weighted mean over segments
        fused = np.average([v["fused"] for v in outputs], axis=0, weights=weights)
        per_modality = {"audio": self._named(np.average([v["audio"] for v in outputs], axis=0, weights=weights))}
        if item["text"]:  # the same transcript in every segment: any segment's text-alone output is the text one
            per_modality = {"text": self._named(outputs[0]["text"]), **per_modality}
        segments = tuple(
            Segment(int(a) / rate, int(b) / rate, self.labels[int(v["fused"].argmax())], self._named(v["fused"]))
            for (a, b), v in zip(spans, outputs)
        )
        return Prediction(self.labels[int(fused.argmax())], self._named(fused), modalities, per_modality, segments)

    def _classify(self, units: list[dict], batch_size: int) -> list[dict]:
        """Per unit {"fused", "text", "audio"} probability arrays (an entry is None when its modality is absent)."""

        def length(i):
            audio = units[i]["audio"]
            return (0 if audio is None else len(audio), len(units[i]["text"]))

        order = sorted(range(len(units)), key=length)
        outputs = [None] * len(units)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for i, output in zip(chunk, self._forward([units[i] for i in chunk])):
                outputs[i] = output
        return outputs

    def _forward(self, units: list[dict]) -> list[dict]:
        """One mini-batch: encode each modality once, fuse it three ways (both, text alone, audio alone)."""
        batch = move_batch(self.collator([{"id": "", "label": -100, **u} for u in units]), self.device)
        by_condition = self.model.logits_by_condition(
            batch["text"], batch["audio"], batch["text_present"], batch["audio_present"]
        )
        outputs = [{"fused": p, "text": None, "audio": None} for p in self._probabilities(by_condition["both"][0])]
        for modality in ("text", "audio"):
            logits, rows = by_condition[modality]
            for i, p in zip(rows.tolist(), self._probabilities(logits)):
                outputs[i][modality] = p
        return outputs

    def _probabilities(self, logits: torch.Tensor) -> np.ndarray:
        return torch.softmax(logits.float() / self.temperature, dim=-1).cpu().numpy().astype(np.float64)

    def _named(self, probs: np.ndarray) -> dict[str, float]:
        return {label: float(p) for label, p in zip(self.labels, probs)}

    def _waveform(self, audio, sampling_rate: int | None, where: str) -> np.ndarray:
        rate = self.config.sampling_rate
        if isinstance(audio, (str, os.PathLike)):
            return load_audio(audio, rate)
        if sampling_rate is None:
            raise DataError(f"{where}: an array needs sampling_rate=... (e.g. predict(audio=x, sampling_rate=16000))")
        return prepare_waveform(audio, sampling_rate, rate, where=where)


def speech_regions(wave: np.ndarray, rate: int) -> list[tuple[int, int]]:
    """Sample ranges [start, end) that hold speech, in order; [] when nothing stands out from the floor.

    A 25 ms frame is speech when its RMS level is above both the recording's loud level (95th-percentile
    frame) minus `SPEECH_TOP_DB` and its noise floor (10th-percentile frame) plus `NOISE_MARGIN_DB`, so the
    threshold follows the recording's gain and background noise. Pauses shorter than `MIN_SILENCE_SECONDS`
    are bridged, regions shorter than `MIN_SPEECH_SECONDS` dropped, and `SPEECH_PAD_SECONDS` kept on each side.
    """
    frame, hop = int(0.025 * rate), int(0.010 * rate)
    if len(wave) < frame:
        return [(0, len(wave))]
    frames = np.lib.stride_tricks.sliding_window_view(wave, frame)[::hop]  # (F, frame)
    level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)  # (F,) dB
    loud, floor = np.percentile(level, [95, 10])
    voiced = level > max(loud - SPEECH_TOP_DB, floor + NOISE_MARGIN_DB)
    edges = np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]]))
    runs = [[s * hop, (e - 1) * hop + frame] for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]
    merged = []
    for run in runs:
        if merged and run[0] - merged[-1][1] < MIN_SILENCE_SECONDS * rate:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    pad = int(SPEECH_PAD_SECONDS * rate)
    regions = []
    for a, b in merged:
        if b - a < MIN_SPEECH_SECONDS * rate:
            continue
        a, b = max(0, a - pad), min(len(wave), b + pad)
        if regions and a <= regions[-1][1]:
            regions[-1] = (regions[-1][0], b)
        else:
            regions.append((a, b))
    return regions


def speech_windows(
    wave: np.ndarray, rate: int, window_seconds: float = WINDOW_SECONDS, overlap_seconds: float = OVERLAP_SECONDS
) -> list[tuple[int, int]]:
    """The segments a long recording is classified in: its speech regions, each longer one cut into windows.

    Windows are `window_seconds` long and overlap by at least `overlap_seconds` (the last one of a region
    ends where the region ends). A recording without detectable speech is windowed whole.
    """
    size, stride = int(window_seconds * rate), int((window_seconds - overlap_seconds) * rate)
    windows = []
    for a, b in speech_regions(wave, rate) or [(0, len(wave))]:
        if b - a <= size:
            windows.append((a, b))
        else:
            windows += [(s, s + size) for s in [*range(a, b - size, stride), b - size]]
    return windows


def batch_inputs(source: str | os.PathLike) -> list[dict]:
    """Rows ({id, audio, text, start, end}) from a manifest, or one per audio file under a folder (recursive).

    Raises:
        DataError: the manifest is invalid, or the folder holds no audio files.
    """
    from mmemo.data.manifest import read_manifest

    source = Path(source)
    if not source.is_dir():
        return read_manifest(source)
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"{source}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder or below")
    return [
        {
            "id": p.relative_to(source).with_suffix("").as_posix(),
            "audio": str(p),
            "text": "",
            "start": None,
            "end": None,
        }
        for p in files
    ]


def predict_to_file(
    recognizer: EmotionRecognizer,
    source: str | os.PathLike,
    output: str | os.PathLike,
    batch_size: int = 16,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Predict every row of a manifest (or every audio file under a folder); write one row per input.

    Inputs are sorted by duration (from file headers) so each mini-batch pads little; the output keeps input
    order. A row whose audio cannot be read gets an empty label and an `error` instead of stopping the run.

    Args:
        recognizer: the model.
        source: a manifest (.jsonl/.csv; its text and audio are used) or a folder of audio files.
        output: a `.csv` (id, path, label, prob_<label>..., error) or `.jsonl` file, written atomically.
        batch_size: inputs per forward pass.
        overwrite: replace an existing output file.
        progress: show a progress bar.

    Returns:
        {"output": Path, "rows": number of inputs, "errors": number that failed}.

    Raises:
        DataError: bad output suffix, output exists without `overwrite`, or an unusable source.
    """
    from tqdm.auto import tqdm

    output = Path(output)
    if output.suffix.lower() not in (".csv", ".jsonl"):
        raise DataError(f"output {output} must end in .csv or .jsonl")
    if output.exists() and not overwrite:
        raise DataError(f"output {output} already exists; pass --overwrite to replace it")
    rows = batch_inputs(source)
    rate = recognizer.config.sampling_rate
    order = sorted(range(len(rows)), key=lambda i: clip_seconds(rows[i]))
    results = [None] * len(rows)  # a Prediction or an error message per row
    with tqdm(total=len(rows), unit="input", desc="predict", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            chunk, texts, audios = [], [], []
            for i in order[start : start + batch_size]:
                row = rows[i]
                try:
                    audio = load_audio(row["audio"], rate, row.get("start"), row.get("end")) if row["audio"] else None
                except DataError as e:
                    results[i] = str(e)
                    continue
                if audio is None and not row["text"].strip():
                    results[i] = "row has neither text nor audio"
                    continue
                chunk.append(i)
                texts.append(row["text"])
                audios.append(audio)
            if chunk:
                predictions = recognizer.predict(text=texts, audio=audios, sampling_rate=rate, batch_size=batch_size)
                for i, prediction in zip(chunk, predictions):
                    results[i] = prediction
            bar.update(min(batch_size, len(order) - start))
    _write_results(output, rows, results, recognizer.labels)
    return {"output": output, "rows": len(rows), "errors": sum(isinstance(r, str) for r in results)}


def _write_results(output: Path, rows: list[dict], results: list, labels: list[str]) -> None:
    with atomic_write(output, "w", encoding="utf-8", newline="") as f:
        if output.suffix.lower() == ".csv":
            writer = csv.writer(f)
            writer.writerow(["id", "path", "label", *(f"prob_{label}" for label in labels), "error"])
            for row, result in zip(rows, results):
                if isinstance(result, Prediction):
                    probs = [f"{result.probabilities[label]:.6f}" for label in labels]
                    writer.writerow([row["id"], row["audio"], result.label, *probs, ""])
                else:
                    writer.writerow([row["id"], row["audio"], "", *[""] * len(labels), result])
        else:
            for row, result in zip(rows, results):
                record = {"id": row["id"], "path": row["audio"]}
                if isinstance(result, Prediction):
                    record |= {k: v for k, v in result.to_dict().items() if k != "segments" or v}
                else:
                    record |= {"label": None, "error": result}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


def move_batch(batch: dict, device: torch.device | str, non_blocking: bool = False) -> dict:
    """Move every tensor in a (nested) batch dict to `device`."""

    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=non_blocking)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    return move(batch)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _local_folder(path: str | os.PathLike) -> Path:
    folder = Path(path)
    if folder.is_dir():
        return folder
    if isinstance(path, str) and path.count("/") == 1 and not path.startswith((".", "/")):
        from huggingface_hub import snapshot_download  # a hub id: users with network access get the download

        try:
            return Path(snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
        except Exception as e:
            raise ModelLoadError(
                f"cannot load model {path!r}: not a local folder, and the hub download failed ({e})"
            ) from None
    raise ModelLoadError(f"model folder {path} does not exist; train one with `mmemo train` (see README)")
