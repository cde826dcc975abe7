"""Word error rate of the converted real Whisper models on EmoDB (German), on one CPU core: what `--asr` gives.

    python benchmarks/asr_wer.py [EMODB_ROOT] [--every 5] [--models base tiny.en] [--max-new-tokens 64]
                                 [--work DIR] [--json docs/pretrained/asr_wer.json]

The models come from the pip packages (whisper_packages.py) through `mmemo convert ct2-whisper`'s code, and
transcribe through `mmemo.asr.load_transcriber`, the code `mmemo predict --asr` and the demo run: greedy decoding,
base told the language is German, tiny.en (English only) left to speak English. The references are the importer's
sentence texts (`mmemo prepare emodb`). EmoDB has 535 clips of 10 sentences; `--every K` takes every K-th clip in
name order (default 5: 107 clips, every speaker, sentence and emotion), `--every 1` all of them.

Normalisation before counting: lower case, punctuation dropped (letters, digits and apostrophes kept), "ß" spelled
"ss", whitespace split. WER = (substitutions + deletions + insertions) / reference words, over the whole set.
`--max-new-tokens` bounds each transcript (the longest EmoDB sentence is 13 words, about 20 tokens), so a greedy
decoder caught repeating a phrase costs seconds, not minutes; the clips that reach the bound are counted.
Seconds per clip are wall time of the transcriber call (features, encoder, decoding) with torch on one thread.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from emodb_args import DEFAULT_ROOT, REPO
from whisper_packages import LANGUAGE, converted

from mmemo.asr import SAMPLING_RATE, load_transcriber
from mmemo.data.audio import load_audio
from mmemo.data.corpora import prepare
from mmemo.io import write_json


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=str(DEFAULT_ROOT), help="the EmoDB release folder (holds wav/)")
    parser.add_argument("--every", type=int, default=5, help="every K-th clip in name order (default 5; 1 = all)")
    parser.add_argument("--models", nargs="+", default=["base", "tiny.en"], choices=["base", "tiny.en"])
    parser.add_argument("--max-new-tokens", type=int, default=64, help="bound on each transcript (default 64)")
    parser.add_argument("--work", default=None, help="where converted models go (default: a temporary folder)")
    parser.add_argument("--json", default=str(REPO / "docs" / "pretrained" / "asr_wer.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = sorted(prepare("emodb", args.root), key=lambda row: row["id"])[:: args.every]
    results = {"clips": len(rows), "every": args.every, "threads": 1, "max_new_tokens": args.max_new_tokens}
    results["audio_seconds_mean"] = statistics.mean(len(load_audio(r["audio"], SAMPLING_RATE)) for r in rows) / 16000
    results["machine"] = "2 CPU cores shared with other jobs; times are indicative"
    with tempfile.TemporaryDirectory() as tmp:
        results["models"] = [score(name, rows, Path(args.work or tmp), args.max_new_tokens) for name in args.models]
    print(format_table(results))
    write_json(args.json, results)
    print(f"wrote {args.json}", file=sys.stderr)
    return results


def score(name: str, rows: list[dict], work: Path, max_new_tokens: int) -> dict:
    """Transcribe every row with one model; its WER, sentence error rate, seconds per clip and worst transcripts."""
    folder = converted(name, work).out
    transcriber = load_transcriber(folder, LANGUAGE[name], device="cpu", max_new_tokens=max_new_tokens)
    edits = words = wrong_sentences = capped = 0
    seconds, examples = [], []
    for i, row in enumerate(rows):
        waveform = load_audio(row["audio"], SAMPLING_RATE)
        start = time.perf_counter()
        hypothesis = transcriber(waveform, SAMPLING_RATE)
        seconds.append(time.perf_counter() - start)
        reference, heard = normalise(row["text"]), normalise(hypothesis)
        errors = edit_distance(reference, heard)
        edits, words, wrong_sentences = edits + errors, words + len(reference), wrong_sentences + (errors > 0)
        capped += len(heard) > 2 * len(reference) + 5  # a runaway repetition that ran into the bound
        examples.append({"id": row["id"], "reference": row["text"], "transcript": hypothesis, "errors": errors})
        if i % 10 == 0:
            print(f"  {name} {i + 1}/{len(rows)}: WER so far {edits / words:.3f}  {hypothesis!r}", file=sys.stderr)
    examples.sort(key=lambda e: -e["errors"])
    return {
        "model": name,
        "language": LANGUAGE[name] or "English (English-only model)",
        "wer": edits / words,
        "sentence_error_rate": wrong_sentences / len(rows),
        "reference_words": words,
        "runaway_transcripts": capped,
        "seconds_per_clip_mean": statistics.mean(seconds),
        "seconds_per_clip_median": statistics.median(seconds),
        "worst": examples[:5],
        "transcripts": {e["id"]: e["transcript"] for e in examples},
    }


def normalise(text: str) -> list[str]:
    """Lower case, "ß" as "ss", punctuation dropped (word characters and apostrophes kept), split on whitespace."""
    text = text.lower().replace("ß", "ss")
    return re.sub(r"[^\w\s']", " ", text).split()


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level Levenshtein distance: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, word in enumerate(reference, 1):
        current = [i]
        for j, heard in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != heard)))
        previous = current
    return previous[-1]


def format_table(results: dict) -> str:
    subset = "all" if results["every"] == 1 else f"every {results['every']}th in name order"
    lines = [
        f"ASR on EmoDB: {results['clips']} clips ({subset}), mean {results['audio_seconds_mean']:.1f} s of audio, "
        "greedy decoding, 1 thread",
        "",
        "| model | language | WER | sentences with an error | runaway transcripts | s / clip (mean) | s / clip (median) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in results["models"]:
        lines.append(
            f"| whisper {m['model']} | {m['language']} | {m['wer']:.3f} | {m['sentence_error_rate']:.2f} | "
            f"{m['runaway_transcripts']} | {m['seconds_per_clip_mean']:.2f} | {m['seconds_per_clip_median']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
