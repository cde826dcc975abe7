"""`mmemo predict-batch` at scale: killed and resumed, sharded and merged, decoded in workers; a table and JSON.

    python benchmarks/batch_scale.py [--model runs/quickstart/model] [--rows 5000] [--json docs/batch_scale.json]

EmoDB's clips (../shared/data/emodb, with their transcripts) are repeated under new ids to `--rows` input rows.
Every run is the command users run, `python -m mmemo predict-batch`, in a process of its own:

1. start-up: a one-row run, the cost every process pays (importing torch, loading the model);
2. throughput: `--workers 0` and `--workers 2` taking turns (`--repeats` each) on the EmoDB rows (16 kHz WAV:
   decoding is nearly free) and on `--flac-rows` rows of 48 kHz FLAC copies (a FLAC decode and a resample per
   clip, as recorders' files need); every output must equal the first;
3. kill/resume: `--resume` runs killed with SIGKILL at `--kills` random points (once a random number of rows is
   on disk, plus a random 0-1 s; seeded), then one run to the end; the output must equal the uninterrupted
   run's byte for byte (every id once, the same predictions);
4. shards: `--shard I/4` for I = 0..3 one after another, then `--merge`; the merged output must equal it too.

Timings are wall-clock seconds of whole processes, start-up included, on whatever else the machine is doing; all
runs use `--threads` torch threads, so their sums take one path and the byte comparisons are meaningful.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_EMODB = REPO.parent / "shared" / "data" / "emodb"


def emodb_clips(emodb: Path) -> list[dict]:
    """EmoDB's rows (`mmemo prepare emodb`), with their transcripts."""
    from mmemo.data.corpora import prepare

    return prepare("emodb", emodb)


def write_inputs(clips: list[dict], rows: int, path: Path, audio_of=None) -> Path:
    """`clips` cycled under new ids to `rows` input rows (audio path, transcript); `audio_of` maps a clip's path."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            clip = clips[i % len(clips)]
            audio = audio_of(clip["audio"]) if audio_of else clip["audio"]
            f.write(json.dumps({"id": f"{i:06d}-{clip['id']}", "audio": audio, "text": clip["text"]}) + "\n")
    return path


def flac_48k_copies(clips: list[dict], folder: Path) -> dict[str, str]:
    """Each clip resampled to 48 kHz FLAC (what recorders write): decoding then costs a FLAC decode and a
    48 -> 16 kHz resample per clip, as real collections do."""
    import soundfile as sf
    from scipy.signal import resample_poly

    folder.mkdir(parents=True, exist_ok=True)
    copies = {}
    for clip in clips:
        target = folder / (Path(clip["audio"]).stem + ".flac")
        if not target.exists():
            audio, rate = sf.read(clip["audio"], dtype="float32")
            sf.write(target, resample_poly(audio, 48000 // rate, 1), 48000)
        copies[clip["audio"]] = str(target)
    return copies


def run(command: list[str], partial: Path | None = None, kill_at: int = 0, extra: float = 0.0) -> dict:
    """Run a predict-batch process to its end; or, with `partial`, SIGKILL it `extra` seconds after that file holds
    `kill_at` rows. Returns its wall time, whether it was killed, and its printed summary."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if partial is not None:
        while proc.poll() is None and count_lines(partial) < kill_at:
            time.sleep(0.02)
        time.sleep(extra)
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, -signal.SIGKILL):
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{err}")
    return {"seconds": seconds, "killed": proc.returncode == -signal.SIGKILL, "stdout": out.strip()}


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "runs" / "quickstart" / "model"))
    parser.add_argument("--emodb", default=str(DEFAULT_EMODB))
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--flac-rows", type=int, default=1000, help="rows of the 48 kHz FLAC throughput input")
    parser.add_argument("--repeats", type=int, default=2, help="throughput runs per input and worker count")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every run (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-rows", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill points")
    parser.add_argument("--work", default=None, help="a folder for inputs and outputs (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write the results here (e.g. docs/batch_scale.json)")
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="batch_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    clips = emodb_clips(Path(args.emodb))
    source = write_inputs(clips, args.rows, work / "inputs.jsonl")
    flac = write_inputs(clips, args.flac_rows, work / "inputs_flac48k.jsonl", flac_48k_copies(clips, work / "flac").get)
    one = write_inputs(clips, 1, work / "one.jsonl")

    def command(input_path: Path, output: Path, *extra: str) -> list[str]:
        return [
            *[sys.executable, "-m", "mmemo", "predict-batch", args.model, str(input_path), "-o", str(output)],
            *["--threads", str(args.threads), "--device", args.device, "--batch-size", str(args.batch_size)],
            *["--chunk-rows", str(args.chunk_rows), *extra],
        ]

    load_before = os.getloadavg()
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    startup = run(command(one, work / "one.jsonl.out.jsonl", "--overwrite"))["seconds"]
    log(f"start-up (a 1-row run): {startup:.1f} s")

    # Throughput: --workers 0 and 2 taking turns, on EmoDB's 16 kHz WAVs and on 48 kHz FLAC copies.
    throughput, outputs = {}, {}
    for name, input_path, rows in (("emodb_wav16k", source, args.rows), ("flac48k", flac, args.flac_rows)):
        for repeat in range(args.repeats):
            for workers in (0, 2):
                output = work / f"{name}_w{workers}_{repeat}.jsonl"
                seconds = run(command(input_path, output, "--overwrite", "--workers", str(workers)))["seconds"]
                throughput.setdefault(name, {}).setdefault(f"workers_{workers}", []).append(round(seconds, 1))
                outputs.setdefault(name, []).append(output.read_bytes())
                log(f"{name} --workers {workers} (run {repeat + 1}): {seconds:.1f} s, {rows / seconds:.1f} clips/s")
    reference = outputs["emodb_wav16k"][0]

    killed = work / "killed.jsonl"
    partial = killed.with_name(killed.name + ".partial")
    for stale in (killed, partial):
        stale.unlink(missing_ok=True)
    rng = random.Random(args.seed)
    # Kill points: a random row count each (the run is killed once that many rows are on disk, and it has written
    # a chunk of its own), then a random extra 0-1 s, so a kill lands anywhere in a chunk's scoring or, now and
    # then, in its write. The last point leaves two chunks to go, so every kill lands before the end.
    targets = sorted(rng.sample(range(args.rows // 20, args.rows - 2 * args.chunk_rows), args.kills))
    kills, resumed_seconds = [], 0.0
    for k, target in enumerate(targets):
        extra = rng.uniform(0.0, 1.0)
        before = count_lines(partial)
        result = run(command(source, killed, "--resume"), partial, max(target, before + 1), extra)
        resumed_seconds += result["seconds"]
        tail = partial.read_bytes()[-1:] if partial.exists() else b""
        kills.append(
            {
                "at_rows": target,
                "extra_s": round(extra, 2),
                "killed_mid_run": result["killed"] and partial.exists() and not killed.exists(),
                "rows_on_disk": count_lines(partial),
                "torn_tail": tail not in (b"", b"\n"),
            }
        )
        log(f"kill {k + 1}: {kills[-1]}")
    final = run(command(source, killed, "--resume"))
    resumed_seconds += final["seconds"]
    log(f"final resume: {final['seconds']:.1f} s: {final['stdout'].splitlines()[0]}")

    parts = [work / f"shard{i}.jsonl" for i in range(4)]
    shard_seconds = [
        run(command(source, part, "--overwrite", "--shard", f"{i}/4"))["seconds"] for i, part in enumerate(parts)
    ]
    merged = work / "merged.jsonl"
    merge = run(command(source, merged, "--overwrite", "--merge", *map(str, parts)))
    log(f"shards: {', '.join(f'{s:.1f}' for s in shard_seconds)} s; merge {merge['seconds']:.1f} s")

    ids = [json.loads(line)["id"] for line in killed.read_text().splitlines()]
    checks = {
        "workers_2_equals_workers_0": all(o == outputs[n][0] for n in outputs for o in outputs[n]),
        "every_kill_landed_mid_run": all(k["killed_mid_run"] for k in kills),
        "resumed_equals_reference": killed.read_bytes() == reference,
        "resumed_every_id_once": len(ids) == len(set(ids)) == args.rows,
        "shards_merged_equal_reference": merged.read_bytes() == reference,
    }
    rows_of = {"emodb_wav16k": args.rows, "flac48k": args.flac_rows}
    results = {
        "rows": args.rows,
        "flac_rows": args.flac_rows,
        "emodb_clips": len(clips),
        "model": os.path.relpath(args.model, REPO) if Path(args.model).resolve().is_relative_to(REPO) else args.model,
        "device": args.device,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "chunk_rows": args.chunk_rows,
        "cpu_cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "startup_s": round(startup, 1),
        "throughput_s": throughput,
        "clips_per_s": {
            name: {w: round(rows_of[name] / statistics.median(times), 1) for w, times in by_workers.items()}
            for name, by_workers in throughput.items()
        },
        "clips_per_s_after_startup": {
            name: {w: round(rows_of[name] / (statistics.median(times) - startup), 1) for w, times in by_workers.items()}
            for name, by_workers in throughput.items()
        },
        "kills": kills,
        "killed_and_resumed_total_s": round(resumed_seconds, 1),
        "shards_s": [round(s, 1) for s in shard_seconds],
        "merge_s": round(merge["seconds"], 1),
        "error_rows": reference.count(b'"error"'),
        "checks": checks,
    }
    print(format_table(results))
    if args.json:
        from mmemo.io import write_json

        write_json(args.json, results)
    if not all(checks.values()):
        raise SystemExit(f"a check failed: {checks}")


def format_table(results: dict) -> str:
    checks = results["checks"]
    lines = [
        f"# predict-batch: {results['device']}, {results['threads']} torch thread(s), {results['cpu_cores']} cores "
        f"(load average {results['load_average_before'][0]} before, {results['load_average_after'][0]} after), "
        f"start-up {results['startup_s']} s per process",
        "",
        "| input | --workers | wall s (each run) | clips/s (median) | clips/s after start-up |",
        "|---|---:|---|---:|---:|",
    ]
    names = {"emodb_wav16k": f"{results['rows']} EmoDB 16 kHz WAV", "flac48k": f"{results['flac_rows']} 48 kHz FLAC"}
    for name, by_workers in results["throughput_s"].items():
        for workers, times in by_workers.items():
            lines.append(
                f"| {names[name]} | {workers.removeprefix('workers_')} | {', '.join(map(str, times))} | "
                f"{results['clips_per_s'][name][workers]} | {results['clips_per_s_after_startup'][name][workers]} |"
            )
    same = "yes" if checks["workers_2_equals_workers_0"] else "NO"
    kills = ", ".join(f"{k['rows_on_disk']}{' + a torn record' if k['torn_tail'] else ''}" for k in results["kills"])
    lines += [
        "",
        f"- --workers 2 output identical to --workers 0: {same}",
        f"- killed {len(results['kills'])}x with SIGKILL (rows on disk at each kill: {kills}), resumed each time: "
        f"{results['killed_and_resumed_total_s']} s in all; output identical to the uninterrupted run: "
        f"{'yes' if checks['resumed_equals_reference'] else 'NO'}; every id once: "
        f"{'yes' if checks['resumed_every_id_once'] else 'NO'}",
        f"- 4 shards ({' + '.join(map(str, results['shards_s']))} s) merged ({results['merge_s']} s): identical to "
        f"the uninterrupted run: {'yes' if checks['shards_merged_equal_reference'] else 'NO'}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
