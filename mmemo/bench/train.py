"""`mmemo bench train`: training throughput of the fast path against a naive baseline, in one process.

Both recipes train a random-weight model of the chosen size (built from configs, nothing downloaded) on the
same generated utterances (16-bit mono WAV at 48 kHz, as RAVDESS ships, of uniformly drawn
lengths, with random transcripts) for one pass over all of them, the first few steps untimed. On CUDA the
recipes run one after the other, each pass timed as a whole; on CPU (a shared machine whose load changes) they
take turns step by step, each step timed with the loading of its batch, so that load hits every recipe alike.

    recipe  precision       attention  CNN        batches                       audio               loader
    fast    bf16 autocast*  SDPA       frozen     bucketed by max seconds       memory-mapped cache workers*
    naive   fp32            eager      trainable  random, fixed batch size      decoded every step  main process

(* on CUDA only, with pinned memory, non-blocking copies and fused AdamW; on CPU both run fp32 in the main
process.) The fast path is the trainer itself: the generated utterances are written as a manifest, and
`mmemo.train.setup` builds its recognizer, loader (`mmemo.builders.make_loader`: dataset, bucketed sampler,
collator), optimizer and schedule from a config, and each step is `mmemo.train.optimizer_step` (the loss step,
backward, clipping, optimizer and schedule), with modality dropout off so that every step runs both towers. The
naive baseline is a separate, plainly written loop over the same utterances with the same collator. The fast
path's cache is filled before timing, as an earlier epoch or run would have. SpecAugment (`mask_time_prob`) and
layerdrop are off in both: the first draws masks with NumPy on the host (a graph break under torch.compile),
the second makes the work per step random. `--ablate` adds runs of the fast path with one feature at a time
switched to the naive setting, to show where the speed comes from.

Model FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on single-utterance training steps
(forward + backward, no padding) at the shortest and longest clip length, fitted as `a + b·seconds` per
utterance and summed over the utterances trained: padding is not credited. MFU divides the achieved FLOP/s
by `--peak-tflops`, else by a measured large-matmul rate (bf16 on CUDA, fp32 on CPU).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from mmemo.bench.measure import PeakRSS, flop_formulas, load_average, measure_peak_tflops, synchronize
from mmemo.bench.predict import random_sentences
from mmemo.bench.sizes import TRAIN as SIZES
from mmemo.config import Config, DataConfig, ModelConfig, TrainConfig
from mmemo.data.cache import AudioCache
from mmemo.data.dataset import Collator, EmotionDataset, padding_ratio
from mmemo.data.manifest import write_manifest
from mmemo.device import resolve_device
from mmemo.errors import ConfigError

LABELS = ["angry", "happy", "neutral", "sad"]
SOURCE_RATE = 48000  # the generated files' rate: loading them resamples to 16 kHz, as for RAVDESS
METRICS = ("utt_per_s", "audio_h_per_min", "padding_ratio", "tflops", "mfu", "peak_mem_gb")


@dataclass(frozen=True)
class Recipe:
    """The switches that separate the fast path from the naive baseline."""

    name: str
    bf16: bool  # bf16 autocast (CUDA only)
    sdpa: bool  # scaled_dot_product_attention, else eager attention
    freeze_cnn: bool  # no gradients through the convolutional front end
    bucketing: bool  # length-bucketed batches of `max_batch_seconds`, else random batches of `batch_size`
    cache: bool  # memory-mapped decoded audio, else decode and resample every clip every step
    loader: bool  # DataLoader workers, pinned memory, non-blocking copies, fused AdamW (CUDA only)
    compile: bool = False


FAST = Recipe("fast", bf16=True, sdpa=True, freeze_cnn=True, bucketing=True, cache=True, loader=True)
NAIVE = Recipe("naive", bf16=False, sdpa=False, freeze_cnn=False, bucketing=False, cache=False, loader=False)
ABLATIONS = ("bucketing", "cache", "freeze_cnn", "sdpa", "bf16", "loader")


def bench_train(
    device: str = "cpu",
    size: str = "tiny",
    steps: int = 20,
    warmup: int = 2,
    peak_tflops: float | None = None,
    compile: bool = False,
    ablate: bool = False,
    threads: int | None = None,
    seed: int = 0,
    log=print,
) -> dict:
    """Time the fast path and the naive baseline on the same generated utterances.

    Args:
        device: "cpu", "cuda", "cuda:N" or "auto" (`mmemo.device.resolve_device`).
        size: "tiny" (quick-start shapes, 1–4 s clips) or "base" (BERT-base + wav2vec2-base, 2–10 s clips).
        steps: each recipe makes one pass over `(steps + warmup) × batch_size` utterances: the naive baseline
            in `steps + warmup` random batches, the fast path in its own bucketed batches.
        warmup: the first steps of each pass are not timed (first calls, workers starting, compilation).
        peak_tflops: the device's peak for MFU; None measures a large matmul.
        compile: torch.compile the fast path's model (`train.compile`).
        ablate: also time the fast path with each feature in `ABLATIONS` switched off in turn.
        threads: torch CPU threads (None: torch's default).
        seed: data, weights and batch order.
        log: where progress lines go.

    Returns:
        {"fast": metrics, "naive": metrics, "speedup": fast/naive utterances per second, "setup": {...}},
        metrics holding `METRICS`; with `ablate`, also "ablation": {"fast - FEATURE": metrics}.
    """
    if size not in SIZES:
        raise ConfigError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    device = resolve_device(device, setting="--device")
    if threads:
        torch.set_num_threads(threads)
    spec = SIZES[size]
    fast = dataclasses.replace(FAST, compile=compile)
    recipes = [NAIVE, fast]
    if ablate:
        recipes += [
            dataclasses.replace(fast, name=f"fast - {f}", **{f: getattr(NAIVE, f)})
            for f in ABLATIONS
            if device.type == "cuda" or f not in ("bf16", "loader")
        ]  # CUDA-only switches
    rng = np.random.default_rng(seed)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="mmemo-bench-train-") as tmp:
        tmp = Path(tmp)
        n = (steps + warmup) * spec["batch_size"]
        log(f"writing {n} utterances of {spec['seconds'][0]:g}-{spec['seconds'][1]:g} s at {SOURCE_RATE} Hz")
        rows = _write_corpus(tmp / "wavs", n, spec["seconds"], rng)
        # One more clip as the validation split, which the trainer's setup requires; it is never timed.
        valid = _write_corpus(tmp / "valid", 1, spec["seconds"], rng)
        manifest = write_manifest(
            [{**r, "split": "train"} for r in rows] + [{**r, "id": "valid0", "split": "valid"} for r in valid],
            tmp / "manifest.csv",
        )
        log("filling the audio cache (untimed, as an earlier epoch would)")
        cache = AudioCache(tmp / "cache")
        for row in rows:
            cache.load(row["audio"])
        peak = peak_tflops or measure_peak_tflops(device)

        def build(recipe: Recipe, index: int) -> _RecipeRun:
            if recipe.name == "naive":
                return _naive_run(size, device, rows, collator, seed)
            return _fast_run(recipe, size, device, manifest, tmp / "cache", tmp / f"run{index}", rows, seed)

        # The fast path's builders train the tokenizer; the naive loop collates with the same one.
        fast_run = build(recipes[1], 1)
        collator = fast_run.collator
        if device.type == "cuda":  # a dedicated device: one recipe after the other, each timed as a whole pass
            results = {}
            for index in [1, 0, *range(2, len(recipes))]:  # the fast path first: it is built already
                log(f"timing {recipes[index].name}")
                run = fast_run if index == 1 else build(recipes[index], index)
                fast_run = None
                run.warm_up(warmup)
                results[recipes[index].name] = run.timed_pass().metrics(peak, log)
                del run
                gc.collect()
                torch.cuda.empty_cache()
        else:  # a shared CPU: one step of each recipe in turn, so changing load hits every recipe alike
            log(f"timing {', '.join(r.name for r in recipes)}, interleaved step by step")
            runs = [fast_run if index == 1 else build(recipe, index) for index, recipe in enumerate(recipes)]
            for run in runs:
                run.warm_up(warmup)
            while any(not run.done for run in runs):
                for run in runs:
                    run.timed_step()
            results = {run.recipe.name: run.metrics(peak, log) for run in runs}
    out = {
        "fast": results["fast"],
        "naive": results["naive"],
        "speedup": results["fast"]["utt_per_s"] / results["naive"]["utt_per_s"],
        "setup": {
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "size": size,
            "utterances": len(rows),
            "warmup_steps": warmup,
            "clip_seconds": list(spec["seconds"]),
            "batch_size": spec["batch_size"],
            "max_batch_seconds": _max_batch_seconds(spec),
            "peak_tflops": peak,
            "peak_source": "given" if peak_tflops else "measured matmul",
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "compile": compile,
            "load_average": [load_before, load_average()],
        },
    }
    if ablate:
        out["ablation"] = {name: r for name, r in results.items() if name not in ("fast", "naive")}
    return out


def format_results(results: dict) -> str:
    """A Markdown table of `bench_train` results, with the setup underneath."""
    s = results["setup"]
    lines = [
        "| recipe | utterances/s | audio h/min | padding ratio | TFLOP/s | MFU | peak memory (GB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = {"fast": results["fast"], "naive": results["naive"], **results.get("ablation", {})}
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['utt_per_s']:.2f} | {r['audio_h_per_min']:.3f} | {r['padding_ratio']:.2f} | "
            f"{r['tflops']:.4g} | {r['mfu']:.2%} | {r['peak_mem_gb']:.2f} |"
        )
    memory = "process RSS, every recipe resident" if s["device"] == "cpu" else "torch.cuda.max_memory_allocated"
    lines += [
        "",
        f"speed-up (fast / naive utterances per second): {results['speedup']:.2f}×",
        f"{s['size']} model on {s['device']} ({s['threads']} CPU threads), one pass over {s['utterances']} "
        f"utterances of {s['clip_seconds'][0]:g}-{s['clip_seconds'][1]:g} s per recipe, the first "
        f"{s['warmup_steps']} steps untimed; naive batches of {s['batch_size']}, fast batches of "
        f"≤ {s['max_batch_seconds']:g} padded s; peak {s['peak_tflops']:.4g} TFLOP/s ({s['peak_source']}); "
        f"peak memory is {memory}; {s['cpu_count']} CPU cores, load average {s['load_average'][0]} before, "
        f"{s['load_average'][1]} after",
    ]
    return "\n".join(lines)


def count_step_flops(
    model, collator: Collator, seconds: float, text: str, device: torch.device, bf16: bool = False
) -> int:
    """FLOPs of one training step (forward + backward) on one utterance of `seconds` of audio and `text`."""
    from torch.utils.flop_counter import FlopCounterMode

    audio = np.random.default_rng(0).normal(0, 0.1, int(seconds * 16000)).astype(np.float32)
    batch = collator([{"id": "x", "text": text, "audio": audio, "label": 0}])
    with FlopCounterMode(display=False, custom_mapping=flop_formulas()) as counter:
        plain_step(model, None, batch, device, bf16=bf16, non_blocking=False)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def build_model(size: str, sdpa: bool = True, freeze_cnn: bool = True, vocab_size: int | None = None):
    """A random-weight EmotionModel of `size` with SDPA or eager attention (set in the encoder configs)."""
    from mmemo.encoders import build_encoders
    from mmemo.model import EmotionModel

    cfg = _model_config(size, sdpa, freeze_cnn, vocab_size)
    text, audio = build_encoders(cfg)
    return EmotionModel(cfg, len(LABELS), text, audio)


def _model_config(size: str, sdpa: bool, freeze_cnn: bool, vocab_size: int | None = None) -> ModelConfig:
    """The size's ModelConfig; the text embedding has the size's vocabulary (as a pretrained BERT's), whatever
    the WordPiece trained on the generated transcripts holds (at most that many tokens)."""
    cfg = ModelConfig(
        **copy.deepcopy(SIZES[size]["model"]),
        freeze_feature_encoder=freeze_cnn,
        labels=list(LABELS),
        tokenizer_vocab_size=SIZES[size]["vocab_size"],
    )
    cfg.text_config["vocab_size"] = vocab_size or SIZES[size]["vocab_size"]
    if not sdpa:
        cfg.text_config["attn_implementation"] = cfg.audio_config["attn_implementation"] = "eager"
    return cfg


class _RecipeRun:
    """One recipe's loader and training step over the utterances, and the clock on its steps.

    Args:
        recipe: the recipe's name and switches.
        model: the (uncompiled) model, for counting FLOPs.
        loader: yields the recipe's collated batches, one pass over the utterances.
        step: trains on one batch.
        collator: the collator, for counting FLOPs on single utterances.
        rows: the utterances (id, text, seconds).
        size: the SIZES entry.
        device: where the model is.
    """

    def __init__(self, recipe: Recipe, model, loader, step, collator: Collator, rows: list, size: str, device):
        spec = SIZES[size]
        self.recipe, self.device, self.rows = recipe, device, rows
        self.cuda = device.type == "cuda"
        self.model, self.loader, self.step, self.collator = model, loader, step, collator
        bf16 = recipe.bf16 and self.cuda
        text = sorted((r["text"] for r in rows), key=len)[len(rows) // 2]  # a median-length transcript
        lo, hi = spec["seconds"]
        flops_lo, flops_hi = (count_step_flops(model, collator, s, text, device, bf16) for s in (lo, hi))
        self.flops_per_second = (flops_hi - flops_lo) / (hi - lo)  # FLOPs(utterance) ≈ fixed + per_second · s
        self.flops_fixed = flops_lo - self.flops_per_second * lo
        self.seconds_of = {r["id"]: r["seconds"] for r in rows}
        sampler = loader.batch_sampler
        self.padding = padding_ratio(list(sampler), [self.seconds_of[r["id"]] for r in loader.dataset.rows])
        self.batches = iter(loader)
        self.done = False
        self.utterances, self.audio_seconds, self.steps, self.elapsed = 0, 0.0, 0, 0.0
        self.peak_rss = 0

    def warm_up(self, steps: int) -> None:
        """Untimed steps: first calls, DataLoader workers starting, compilation."""
        for _ in range(steps):
            batch = next(self.batches, None)
            if batch is None:
                raise ConfigError(
                    f"{len(self.loader)} batches are not more than the {steps} warm-up steps; raise --steps"
                )
            self.step(batch)
        synchronize(self.device)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def timed_step(self) -> None:
        """One timed step, loading its batch included, waiting for the device before the clock stops."""
        if self.done:
            return
        with PeakRSS() as rss:
            start = time.perf_counter()
            batch = next(self.batches, None)
            if batch is not None:
                self.step(batch)
                synchronize(self.device)
            self.elapsed += time.perf_counter() - start
        self.peak_rss = max(self.peak_rss, rss.peak)
        if batch is None:
            self.done = True
            return
        self._count(batch)

    def timed_pass(self) -> _RecipeRun:
        """The rest of the pass timed as a whole: the device is waited for only at the end."""
        with PeakRSS() as rss:
            start = time.perf_counter()
            for batch in self.batches:
                self.step(batch)
                self._count(batch)
            synchronize(self.device)
            self.elapsed += time.perf_counter() - start
        self.peak_rss, self.done = rss.peak, True
        return self

    def metrics(self, peak_tflops: float, log) -> dict:
        if not self.steps:
            raise ConfigError(f"{len(self.loader)} batches leave none to time after the warm-up; raise --steps")
        flops = self.flops_fixed * self.utterances + self.flops_per_second * self.audio_seconds
        tflops = flops / self.elapsed / 1e12
        log(
            f"  {self.recipe.name}: {self.steps} timed steps, {self.utterances} utterances, {self.elapsed:.2f} s, "
            f"padding {self.padding:.2f}, {flops / self.utterances / 1e9:.3g} GFLOP per utterance"
        )
        memory = torch.cuda.max_memory_allocated(self.device) if self.cuda else self.peak_rss
        return {
            "utt_per_s": self.utterances / self.elapsed,
            "audio_h_per_min": self.audio_seconds / 3600 / (self.elapsed / 60),
            "padding_ratio": self.padding,
            "tflops": tflops,
            "mfu": tflops / peak_tflops,
            "peak_mem_gb": memory / 1e9,
        }

    def _count(self, batch: dict) -> None:
        self.utterances += len(batch["ids"])
        self.audio_seconds += sum(self.seconds_of[uid] for uid in batch["ids"])
        self.steps += 1


def _fast_run(
    recipe: Recipe,
    size: str,
    device: torch.device,
    manifest: Path,
    cache_dir: Path,
    out_dir: Path,
    rows: list,
    seed: int,
) -> _RecipeRun:
    """The trainer's own setup and optimizer step, from a config that sets the recipe's switches."""
    from mmemo.checkpoint import TrainState
    from mmemo.train import optimizer_step, setup

    spec = SIZES[size]
    workers = min(4, (os.cpu_count() or 1) - 1) if recipe.loader and device.type == "cuda" else 0
    cfg = Config(
        model=_model_config(size, recipe.sdpa, recipe.freeze_cnn),
        data=DataConfig(
            manifest=str(manifest),
            max_audio_seconds=spec["seconds"][1],
            batch_size=spec["batch_size"],
            max_batch_seconds=_max_batch_seconds(spec),
            num_workers=workers,
            cache_dir=str(cache_dir) if recipe.cache else "",
        ),
        train=TrainConfig(
            output_dir=str(out_dir),
            seed=seed,
            device=str(device),
            epochs=1,
            lr=1e-4,
            encoder_lr=1e-4,
            warmup_ratio=0.0,
            bf16=recipe.bf16,
            compile=recipe.compile,
            modality_dropout={"name": "none"},  # every step runs both towers, as the naive loop does
            progress=False,
        ),
    )
    run = setup(cfg)
    run.model.train()
    loader = run.loaders["train"]
    if not recipe.bucketing:  # the ablation: the same dataset in random batches of `batch_size`
        loader = _random_batches(loader.dataset, spec["batch_size"], run.recognizer.collator, seed)
    state = TrainState()

    def step(batch: dict) -> None:
        optimizer_step(run, batch, 0.0, state)

    return _RecipeRun(recipe, run.model, loader, step, run.recognizer.collator, rows, size, device)


def _naive_run(size: str, device: torch.device, rows: list, collator: Collator, seed: int) -> _RecipeRun:
    """The baseline: fp32, eager attention, a trainable CNN, random batches, every clip decoded every step."""
    torch.manual_seed(seed)
    model = build_model(size, sdpa=False, freeze_cnn=False).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    label_to_id = {label: i for i, label in enumerate(LABELS)}
    dataset = EmotionDataset(rows, label_to_id, max_seconds=SIZES[size]["seconds"][1], train=True, seed=seed)
    loader = _random_batches(dataset, SIZES[size]["batch_size"], collator, seed)

    def step(batch: dict) -> None:
        plain_step(model, optimizer, batch, device, bf16=False, non_blocking=False)

    return _RecipeRun(NAIVE, model, loader, step, collator, rows, size, device)


def _random_batches(dataset, batch_size: int, collator: Collator, seed: int):
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    generator = torch.Generator().manual_seed(seed)
    sampler = BatchSampler(RandomSampler(dataset, generator=generator), batch_size, drop_last=False)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, generator=generator)


def plain_step(model, optimizer, batch: dict, device: torch.device, bf16: bool, non_blocking: bool) -> torch.Tensor:
    """One plain training step (the naive baseline's, and the one FLOPs are counted on): forward, loss,
    backward and, with an optimizer, a clipped update. No `.item()`, so nothing waits on the device until the pass
    ends; returns the loss tensor."""
    from mmemo.data.dataset import move_batch
    from mmemo.model import cross_entropy

    batch = move_batch(batch, device, non_blocking=non_blocking)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(batch["text"], batch["audio"], batch["text_present"], batch["audio_present"])["logits"]
    loss = cross_entropy(logits, batch["labels"])
    loss.backward()
    if optimizer is not None:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return loss


def _write_corpus(folder: Path, n: int, seconds: tuple[float, float], rng: np.random.Generator) -> list[dict]:
    folder.mkdir(parents=True)
    texts = random_sentences(rng, n)
    rows = []
    for i in range(n):
        duration = round(float(rng.uniform(*seconds)), 3)
        t = np.arange(int(duration * SOURCE_RATE)) / SOURCE_RATE
        audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + rng.normal(0, 0.05, t.size)
        path = folder / f"utt{i:05d}.wav"
        sf.write(path, audio.astype(np.float32), SOURCE_RATE, subtype="PCM_16")
        rows.append(
            {
                "id": f"utt{i:05d}",
                "audio": str(path),
                "text": texts[i],
                "label": LABELS[i % len(LABELS)],
                "seconds": t.size / SOURCE_RATE,
            }
        )
    return rows


def _max_batch_seconds(spec: dict) -> float:
    """The fast path's batch budget: the naive batch's real audio on average, so memory per step is comparable."""
    return spec["batch_size"] * sum(spec["seconds"]) / 2
