"""`mmemo bench serve`: `mmemo serve` under load, started as a real subprocess on 127.0.0.1 and hit by concurrent
HTTP clients from this process.

The requests are clips of 3-5 s with their transcripts from a synthetic corpus (`mmemo.data.synthetic`, what
`mmemo synth` writes) generated into a temporary folder, uploaded as WAV files. Every answer is compared with the
Python API's prediction for the same file and transcript (`EmotionRecognizer.predict`, one input at a time): it
is wrong when a probability differs by more than `TOLERANCE`, or the label differs while the Python API's top
probability is at least 0.5 (a batch pads its clips to the longest, which moves probabilities a little).

Three runs, each client sending its requests one after another (a closed loop), every loop bounded in count and
in time:
- load: for each N in `clients`, N clients send `requests` requests each; throughput, p50/p95/p99 latency,
  errors, wrong answers, and the server's mean batch size (from its /stats).
- batching: `gain_clients` clients against a second server started with --max-batch 1, then against the batched
  one again, back to back.
- faults: the largest N, with `fault_rate` of the requests replaced by faults in turn: a client that disconnects
  halfway through its upload, a malformed body, an undecodable file and a file over the upload limit. Every
  well-formed request must be answered correctly, every fault refused with its 4xx, the server's count of
  answers must equal the clients' (none lost), and the server must still answer afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mmemo.bench.measure import load_average
from mmemo.errors import MmemoError

CLIENTS = (1, 8, 32, 64)
CLIP_SECONDS = (3.0, 5.0)
# The largest probability difference from the one-at-a-time Python API counted as the same answer. A batch pads its
# clips to the longest, and a group-norm wav2vec2 tower (the quick-start model's) normalises over the padding too:
# in batches of 16 clips of 3.0-3.9 s that moved the quick-start model's probabilities by up to 0.043, no label.
TOLERANCE = 0.05
CONFIDENT = 0.5  # a label may differ only where the Python API's top probability is below this
REQUEST_TIMEOUT_S = 120.0
PHASE_TIMEOUT_S = 900.0  # a client sends nothing more after this many seconds in a run
START_TIMEOUT_S = 180.0
FAULTS = {  # kind → the status the server must answer (None: the client hangs up, nobody reads an answer)
    "disconnect": None,
    "malformed": 400,
    "undecodable": 422,
    "huge": 413,
}


def bench_serve(
    model_dir: str | os.PathLike,
    clients: tuple[int, ...] = CLIENTS,
    requests: int = 16,
    max_batch: int = 16,
    batch_wait_ms: float = 10.0,
    gain_clients: int = 32,
    fault_rate: float = 0.1,
    n_clips: int = 32,
    max_upload_mb: float = 20.0,
    device: str = "cpu",
    threads: int | None = None,
    log=print,
) -> dict:
    """Run the load, batching and fault runs; returns their results and the setup (see `format_results`).

    Args:
        model_dir: the model folder to serve.
        clients: the numbers of concurrent clients of the load run.
        requests: requests per client in every run.
        max_batch, batch_wait_ms: the batched server's options (`mmemo serve`).
        gain_clients: clients of the batching comparison (0: skip it).
        fault_rate: share of the fault run's requests that are faults (0: skip the fault run).
        n_clips: distinct clips (each with its transcript) the requests cycle through.
        max_upload_mb: the servers' upload limit; the "huge" faults send 1 MB more.
        device: where the servers run the model.
        threads: torch threads of the servers (None: torch's default).
        log: where progress lines go.

    Raises:
        MmemoError: the serve extra is missing, or a server did not start (the message holds its log's end).
    """
    import httpx  # noqa: F401  (the serve extra: fail before the minutes of setup)

    from mmemo.inference import EmotionRecognizer

    if not 0 <= fault_rate < 1:
        raise MmemoError(f"--fault-rate must be in [0, 1), got {fault_rate:g}")
    with tempfile.TemporaryDirectory(prefix="mmemo-bench-serve-") as tmp:
        tmp = Path(tmp)
        log(f"generating {n_clips} clips of {CLIP_SECONDS[0]:g}-{CLIP_SECONDS[1]:g} s (synthetic corpus)")
        clips = _clips(tmp / "synth", n_clips)
        log("predicting every clip with the Python API (the reference answers)")
        recognizer = EmotionRecognizer.from_pretrained(model_dir, device=device, threads=threads)
        for clip in clips:
            clip["expected"] = recognizer.predict(text=clip["text"], audio=clip["path"]).to_dict()
        del recognizer
        options = {"device": device, "threads": threads, "max_upload_mb": max_upload_mb}
        servers = {"batched": _Server(model_dir, tmp / "batched.log", max_batch, batch_wait_ms, **options)}
        if gain_clients:
            servers["one"] = _Server(model_dir, tmp / "one.log", 1, 0.0, **options)
        results = {"load": [], "batching": None, "faults": None}
        with contextlib.ExitStack() as running:
            log(f"starting {len(servers)} server(s)")
            running.callback(_stop, servers.values())
            for server in servers.values():  # both start at once; they then take turns, the other one idle
                server.start()
            for server in servers.values():
                server.wait_ready()
            server = servers["batched"]
            for n in clients:
                log(f"load: {n} client(s) × {requests} requests")
                results["load"].append(_load_run(server, clips, n, requests))
            if fault_rate:
                n = max(clients)
                log(f"faults: {n} clients × {requests} requests, {fault_rate:.0%} of them faults")
                results["faults"] = _fault_run(server, clips, n, requests, fault_rate, max_upload_mb)
            if gain_clients:  # the two runs back to back, so that other work on the machine weighs on both alike
                log(f"batching: {gain_clients} clients × {requests} requests, --max-batch 1 then {max_batch}")
                one = _load_run(servers["one"], clips, gain_clients, requests)
                batched = _load_run(server, clips, gain_clients, requests)
                gain = batched["throughput_rps"] / one["throughput_rps"]
                results["batching"] = {"batched": batched, "one_at_a_time": one, "gain": round(gain, 2)}
    results["setup"] = {
        "model": str(model_dir),
        "requests_per_client": requests,
        "clips": len(clips),
        "clip_seconds": [round(min(c["seconds"] for c in clips), 2), round(max(c["seconds"] for c in clips), 2)],
        "max_batch": max_batch,
        "batch_wait_ms": batch_wait_ms,
        "max_upload_mb": max_upload_mb,
        "device": device,
        "threads": threads,
        "tolerance": TOLERANCE,
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    return results


def format_results(results: dict) -> str:
    """Markdown tables of `bench_serve` results, with the setup underneath."""
    s = results["setup"]
    header = (
        "| clients | requests | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | mean batch | errors | wrong "
        "| max \\|Δp\\| |"
    )
    lines = [header, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [_row(r) for r in results["load"]]
    if results["batching"]:
        b = results["batching"]
        lines += ["", "request batching:", "", header.replace("| clients |", "| server | clients |")]
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        lines.append(f"| --max-batch {s['max_batch']} {_row(b['batched'])}")
        lines.append(f"| --max-batch 1 {_row(b['one_at_a_time'])}")
        lines += ["", f"batching's gain in throughput at {b['batched']['clients']} clients: {b['gain']:.2f}×"]
    if results["faults"]:
        f = results["faults"]
        lines += [
            "",
            f"fault run: {f['clients']} clients, {f['requests']} requests, {f['fault_share']:.0%} faults:",
            "",
            "| request | sent | expected | as expected |",
            "|---|---:|---|---:|",
            f"| well-formed | {f['well_formed']} | 200, the Python API's answer | {f['answered_correctly']} |",
        ]
        for kind, k in f["faults"].items():
            expected = k["expected_status"] or "client hangs up"
            lines.append(f"| {kind} | {k['sent']} | {expected} | {k['as_expected']} |")
        lines += [
            "",
            f"lost: {f['lost']}, wrong: {f['wrong']}, max |Δp| {_diff(f)}; answers counted by the server: {f['server_answered']} "
            f"(clients got {f['answered_correctly'] + f['wrong']}); disconnects the server saw: "
            f"{f['server_disconnects']}; answering afterwards: {'yes' if f['answering_after'] else 'NO'}",
        ]
    lines += [
        "",
        f"{s['model']} on {s['device']} ({s['threads'] or 'default'} torch threads), --max-batch {s['max_batch']} "
        f"--batch-wait-ms {s['batch_wait_ms']:g}; {s['requests_per_client']} requests per client over {s['clips']} "
        f"clips of {s['clip_seconds'][0]:g}-{s['clip_seconds'][1]:g} s with transcripts; Δp = an answer's probability "
        f"minus the one-at-a-time Python API's; wrong = another label where the Python API is confident, or "
        f"|Δp| > {s['tolerance']:g}; clients and server on one machine, {s['cpu_count']} CPU "
        f"cores, load average {s['load_average']} at the end",
    ]
    return "\n".join(lines)


def _row(r: dict) -> str:
    return (
        f"| {r['clients']} | {r['requests']} | {r['throughput_rps']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
        f"{r['p99_ms']:.0f} | {r['mean_batch_size']} | {r['errors']} | {r['wrong']} | {_diff(r)} |"
    )


def _diff(run: dict) -> str:
    return "-" if run["max_abs_diff"] is None else f"{run['max_abs_diff']:.3f}"


def _clips(folder: Path, n: int) -> list[dict]:
    """`n` synthetic clips of 3-5 s: {"path", "text", "seconds", "bytes"}."""
    import soundfile as sf

    from mmemo.data.manifest import read_manifest
    from mmemo.data.synthetic import generate_corpus

    clips = []
    for row in read_manifest(generate_corpus(folder, n=max(48, 3 * n), seed=0)):
        seconds = sf.info(row["audio"]).duration
        if CLIP_SECONDS[0] <= seconds <= CLIP_SECONDS[1]:
            data = Path(row["audio"]).read_bytes()
            clips.append({"path": row["audio"], "text": row["text"], "seconds": seconds, "bytes": data})
        if len(clips) == n:
            return clips
    raise MmemoError(f"the synthetic corpus gave {len(clips)} clips of 3-5 s, fewer than the {n} asked for")


class _Server:
    """`mmemo serve` in a subprocess on a free port of 127.0.0.1: `start`, then `wait_ready`; `_stop` ends it."""

    def __init__(self, model_dir, log_path: Path, max_batch: int, batch_wait_ms: float, **options):
        self.log_path = log_path
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable, "-m", "mmemo", "serve", str(model_dir), "--port", str(self.port),
            "--max-batch", str(max_batch), "--batch-wait-ms", str(batch_wait_ms),
            "--max-upload-mb", str(options["max_upload_mb"]), "--device", options["device"],
        ]  # fmt: skip
        if options["threads"]:
            self.command += ["--threads", str(options["threads"])]
        self.process = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        """Return once /health answers.

        Raises:
            MmemoError: the server exited or did not answer within START_TIMEOUT_S (with its log's end).
        """
        import httpx

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.5)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise MmemoError(f"`{' '.join(self.command)}` did not start within {START_TIMEOUT_S:g} s:\n{tail}")

    def get(self, path: str) -> dict:
        import httpx

        return httpx.get(f"{self.url}{path}", timeout=10).json()

    def stats(self) -> dict:
        return self.get("/stats")


def _stop(servers) -> None:
    """SIGINT to every server (uvicorn finishes the requests in flight, then exits), then wait for each; a server
    still running 30 s later is killed."""
    running = [s.process for s in servers if s.process is not None and s.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGINT)
    for process in running:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _load_run(server: _Server, clips: list[dict], n_clients: int, requests: int) -> dict:
    """N clients, each sending `requests` well-formed requests one after another; the run's figures."""
    plans = [[("ok", (c * requests + i) % len(clips)) for i in range(requests)] for c in range(n_clients)]
    before = server.stats()
    start = time.perf_counter()
    outcomes = asyncio.run(_clients(server, clips, plans))
    wall = time.perf_counter() - start
    after = server.stats()
    latencies = [o["seconds"] for o in outcomes if o["status"] == 200]
    diffs = [o["diff"] for o in outcomes if o.get("diff") is not None]
    batches = after["batches"] - before["batches"]
    return {
        "clients": n_clients,
        "requests": len(outcomes),
        "ok": sum(o["correct"] for o in outcomes),
        "errors": sum(o["status"] != 200 for o in outcomes),
        "wrong": sum(o["status"] == 200 and not o["correct"] for o in outcomes),
        "throughput_rps": round(len(latencies) / wall, 2),
        "p50_ms": _ms(latencies, 50),
        "p95_ms": _ms(latencies, 95),
        "p99_ms": _ms(latencies, 99),
        "max_abs_diff": max(diffs, default=None),
        "mean_batch_size": round((after["predicted"] - before["predicted"]) / batches, 2) if batches else None,
        "wall_s": round(wall, 2),
        "error_reasons": sorted({o["reason"] for o in outcomes if o["status"] != 200})[:5],
    }


def _fault_run(
    server: _Server, clips: list[dict], n_clients: int, requests: int, fault_rate: float, max_upload_mb: float
) -> dict:
    """The load run with `fault_rate` of the requests replaced by faults (kinds in turn, at seeded places)."""
    total = n_clients * requests
    places = np.random.default_rng(0).permutation(total)[: round(total * fault_rate)]
    kinds = list(FAULTS)
    kind_at = {int(p): kinds[i % len(kinds)] for i, p in enumerate(places)}
    plans = [
        [(kind_at.get(c * requests + i, "ok"), (c * requests + i) % len(clips)) for i in range(requests)]
        for c in range(n_clients)
    ]
    huge = os.urandom(int((max_upload_mb + 1) * 1024 * 1024))
    before = server.stats()
    outcomes = asyncio.run(_clients(server, clips, plans, huge=huge))
    well_formed = [o for o in outcomes if o["kind"] == "ok"]
    # the server still answers: its health, and one more well-formed request answered correctly
    healthy = server.get("/health").get("status") == "ok"
    check = asyncio.run(_clients(server, clips, [[("ok", 0)]]))[0]
    after = server.stats()
    faults = {}
    for kind, status in FAULTS.items():
        sent = [o for o in outcomes if o["kind"] == kind]
        got = {}
        for o in sent:
            got[str(o["status"])] = got.get(str(o["status"]), 0) + 1
        faults[kind] = {
            "sent": len(sent),
            "expected_status": status,
            "as_expected": sum(o["status"] == status for o in sent),
            "got": got,
        }
    correct = sum(o["correct"] for o in well_formed)
    wrong = sum(o["status"] == 200 and not o["correct"] for o in well_formed)
    return {
        "clients": n_clients,
        "requests": total,
        "fault_share": len(places) / total,
        "well_formed": len(well_formed),
        "answered_correctly": correct,
        "wrong": wrong,
        "lost": len(well_formed) - correct - wrong,
        "max_abs_diff": max((o["diff"] for o in well_formed if o.get("diff") is not None), default=None),
        "faults": faults,
        "server_answered": after["answered"] - before["answered"] - 1,  # less the check afterwards
        "server_disconnects": after["disconnected"] - before["disconnected"],
        "answering_after": healthy and check["correct"],
        "error_reasons": sorted({o["reason"] for o in well_formed if o["status"] != 200})[:5],
    }


async def _clients(server: _Server, clips: list[dict], plans: list[list[tuple[str, int]]], huge: bytes = b"") -> list:
    """Run one client per plan (a list of (kind, clip index)), all at once; every request's outcome."""
    import httpx

    deadline = time.monotonic() + PHASE_TIMEOUT_S

    async def client(plan):
        outcomes = []
        async with httpx.AsyncClient(base_url=server.url, timeout=REQUEST_TIMEOUT_S) as http:
            for kind, i in plan:
                if time.monotonic() > deadline:
                    outcomes.append({"kind": kind, "status": None, "correct": False, "reason": "not sent: time up"})
                    continue
                outcomes.append(await _request(http, server, kind, clips[i], huge))
        return outcomes

    per_client = await asyncio.gather(*(client(plan) for plan in plans))
    return [o for outcomes in per_client for o in outcomes]


async def _request(http, server: _Server, kind: str, clip: dict, huge: bytes) -> dict:
    """Send one request of `kind`; its status, latency and, for a well-formed one, whether the answer is right."""
    import httpx

    out = {"kind": kind, "status": None, "correct": False, "reason": ""}
    files = {"audio": ("clip.wav", clip["bytes"], "audio/wav")}
    if kind == "undecodable":
        files = {"audio": ("clip.wav", b"RIFF" + os.urandom(4096), "audio/wav")}
    elif kind == "huge":
        files = {"audio": ("clip.wav", huge, "audio/wav")}
    start = time.perf_counter()
    try:
        if kind == "disconnect":
            await _disconnect_midway(server.port, clip)
            return out
        if kind == "malformed":
            headers = {"content-type": "multipart/form-data; boundary=mmemo"}
            response = await http.post("/predict", content=os.urandom(2048), headers=headers)
        else:
            response = await http.post("/predict", files=files, data={"text": clip["text"]})
    except httpx.HTTPError as e:
        return {**out, "reason": f"{type(e).__name__}: {e}"}
    out |= {"status": response.status_code, "seconds": time.perf_counter() - start}
    if response.status_code != 200:
        return {**out, "reason": f"{response.status_code}: {response.text[:200]}"}
    if kind == "ok":
        out["diff"], out["correct"] = _compare(response.json(), clip["expected"])
    return out


async def _disconnect_midway(port: int, clip: dict) -> None:
    """Send the headers and half the body of a well-formed request, then close the connection."""
    import httpx

    request = httpx.Request(
        "POST", f"http://127.0.0.1:{port}/predict", files={"audio": ("clip.wav", clip["bytes"])}, data={"text": "x"}
    )
    body = request.read()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {request.headers['content-type']}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body[: len(body) // 2])
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def _compare(got: dict, expected: dict) -> tuple[float, bool]:
    """The largest probability difference (fused and per modality), and whether the answer is the Python API's."""
    pairs = [(got.get("probabilities"), expected["probabilities"])]
    pairs += [(got.get("per_modality", {}).get(m), p) for m, p in expected["per_modality"].items()]
    if any(not isinstance(g, dict) or set(g) != set(e) for g, e in pairs):
        return float("inf"), False
    diff = max(abs(g[label] - p) for g, e in pairs for label, p in e.items())
    same_label = got["label"] == expected["label"] or max(expected["probabilities"].values()) < CONFIDENT
    return round(diff, 6), diff <= TOLERANCE and same_label and got["modalities"] == expected["modalities"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ms(seconds: list[float], percentile: float) -> float | None:
    return round(float(np.percentile(seconds, percentile)) * 1000, 1) if seconds else None
