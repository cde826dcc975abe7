"""`mmemo serve`: real uvicorn servers on 127.0.0.1, real audio files over HTTP, answers checked against the Python API."""

import concurrent.futures
import contextlib
import io
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from mmemo import EmotionRecognizer  # noqa: E402
from mmemo.batcher import Batcher, RequestError  # noqa: E402
from mmemo.cli import main  # noqa: E402
from mmemo.data.manifest import read_manifest  # noqa: E402
from mmemo.serve import create_app  # noqa: E402

pytestmark = pytest.mark.slow  # real uvicorn servers and `mmemo serve` subprocesses

MAX_UPLOAD_MB = 0.5  # a 4 s clip is 128 kB
MAX_SECONDS = 10
TIMEOUT = 120  # seconds per request: a loaded 2-core machine, and librosa imported on the first undecodable file
TOLERANCE = 0.02  # a batch pads its clips to the longest, which moves probabilities a little (as in test_inference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _running(app):
    """Serve `app` with uvicorn on a free loopback port in a thread; yields its URL once it answers."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def model_dir(trained_run):
    return trained_run["model_dir"]


@pytest.fixture(scope="module")
def rec(model_dir):
    return EmotionRecognizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def server(model_dir):
    app = create_app(
        EmotionRecognizer.from_pretrained(model_dir),
        max_batch=8,
        batch_wait_ms=20,
        max_upload_mb=MAX_UPLOAD_MB,
        max_seconds=MAX_SECONDS,
    )
    with _running(app) as url:
        yield url


@pytest.fixture(scope="module")
def clips(synth_corpus):
    """Test-split rows with audio and transcript: {"audio": path, "text": str}."""
    return [{"audio": r["audio"], "text": r["text"]} for r in read_manifest(synth_corpus) if r["split"] == "test"]


def _post(url, audio=None, text=None):
    files = {"audio": (Path(audio).name, Path(audio).read_bytes(), "audio/wav")} if audio else None
    data = {"text": text} if text is not None else None
    return httpx.post(f"{url}/predict", files=files, data=data, timeout=TIMEOUT)


def _close(got: dict, expected: dict, atol: float) -> bool:
    """Same modalities, and every probability (fused and per modality) within `atol`."""
    if got["modalities"] != expected["modalities"]:
        return False
    pairs = [(got["probabilities"], expected["probabilities"])]
    pairs += [(got["per_modality"][m], p) for m, p in expected["per_modality"].items()]
    return all(abs(g[label] - p) <= atol for g, e in pairs for label, p in e.items())


def test_answers_are_the_python_apis(server, rec, clips, tmp_path):
    clip = clips[0]
    flac = tmp_path / "clip.flac"
    sf.write(flac, *sf.read(clip["audio"]))
    cases = {
        "text+audio": ({"audio": clip["audio"], "text": clip["text"]}, {"audio": clip["audio"], "text": clip["text"]}),
        "audio only": ({"audio": clip["audio"]}, {"audio": clip["audio"]}),
        "text only": ({"text": clip["text"]}, {"text": clip["text"]}),
        "flac": ({"audio": str(flac), "text": clip["text"]}, {"audio": flac, "text": clip["text"]}),
    }
    for kind, (request, api) in cases.items():
        response = _post(server, **request)
        assert response.status_code == 200, (kind, response.text)
        assert response.headers["x-batch-size"] == "1", kind  # alone, so exactly the Python API's computation
        assert response.json() == rec.predict(**api).to_dict(), kind


def test_health_and_info(server, rec):
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    info = httpx.get(f"{server}/info").json()
    assert info["labels"] == rec.labels and info["sampling_rate"] == rec.config.sampling_rate
    assert info["limits"]["max_upload_mb"] == MAX_UPLOAD_MB and info["limits"]["max_batch"] == 8
    assert info["test_scores"]["both"]["ua"] == pytest.approx(rec.card.test["both"]["ua"])
    assert httpx.get(f"{server}/docs").status_code == 404  # its page would load scripts from a CDN


def _multipart(fields: dict) -> tuple[bytes, str]:
    """A multipart body and its Content-Type, as httpx encodes `files`."""
    request = httpx.Request("POST", "http://x/", files=fields)
    return request.read(), request.headers["content-type"]


def _bad_requests(clip, long_clip):
    wav = Path(clip["audio"]).read_bytes()
    big = b"RIFF" + bytes(int(MAX_UPLOAD_MB * 1024 * 1024))
    body, content_type = _multipart({"audio": ("big.wav", big)})
    half = len(body) // 2
    return {  # name: (request keyword arguments, status, words the reason must hold)
        "no body": ({}, 415, "no Content-Type"),
        "json": ({"json": {"text": "hi"}}, 415, "Content-Type application/json"),
        "garbage multipart": (
            {"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=b"}},
            400,
            "not valid multipart/form-data",
        ),
        "no boundary": (
            {"content": b"garbage", "headers": {"content-type": "multipart/form-data"}},
            400,
            "boundary",
        ),
        "nothing": ({"data": {"text": "  "}}, 422, "nothing to classify"),
        "wrong field": ({"files": {"file": ("clip.wav", wav)}}, 422, "unknown form field 'file'"),
        "audio as text": ({"data": {"audio": "clip.wav"}}, 422, "'audio' must be a file upload"),
        "text as file": ({"files": {"text": ("t.txt", b"hello")}}, 422, "'text' must be a plain form field"),
        "text twice": ({"data": {"text": ["a", "b"]}}, 422, "'text' is given 2 times"),
        "undecodable": ({"files": {"audio": ("notes.wav", b"this is not audio")}}, 422, "cannot decode audio file"),
        "empty file": ({"files": {"audio": ("empty.wav", b"")}}, 422, "empty.wav is empty"),
        "too long": ({"files": {"audio": ("long.wav", long_clip)}}, 422, "long.wav is 12.0 s long"),
        "over the limit": ({"files": {"audio": ("big.wav", big)}}, 413, "limit of 0.5 MB"),
        "over the limit, no length": (  # chunked: the server counts the bytes as they arrive
            {"content": iter([body[:half], body[half:]]), "headers": {"content-type": content_type}},
            413,
            "limit of 0.5 MB",
        ),
    }


@pytest.fixture(scope="module")
def long_clip(clips):
    """12 s of speech (over MAX_SECONDS) as an 8 kHz WAV, small enough to pass the upload limit."""
    wave = np.concatenate([sf.read(c["audio"], dtype="float32")[0] for c in clips[:6]])
    buffer = io.BytesIO()
    sf.write(buffer, np.resize(wave, 12 * 16000)[::2], 8000, format="WAV")
    return buffer.getvalue()


def test_bad_requests_get_a_4xx_with_the_reason_and_the_server_goes_on(server, rec, clips, long_clip):
    before = httpx.get(f"{server}/stats").json()["refused"]
    expected_text = rec.predict(text=clips[1]["text"]).to_dict()
    cases = _bad_requests(clips[0], long_clip)
    for name, (request, status, reason) in cases.items():
        response = httpx.post(f"{server}/predict", timeout=TIMEOUT, **request)
        assert response.status_code == status, (name, response.text)
        assert reason in response.json()["detail"], (name, response.json())
        after = _post(server, text=clips[1]["text"])  # the next client is served as if nothing happened
        assert after.status_code == 200 and after.json() == expected_text, name
    assert httpx.get(f"{server}/predict").status_code == 405
    refused = httpx.get(f"{server}/stats").json()["refused"]
    for status in {status for _, status, _ in cases.values()}:
        sent = sum(s == status for _, s, _ in cases.values())
        assert refused[str(status)] - before.get(str(status), 0) == sent, status
    response = _post(server, audio=clips[0]["audio"], text=clips[0]["text"])
    assert response.status_code == 200
    assert _close(response.json(), rec.predict(audio=clips[0]["audio"], text=clips[0]["text"]).to_dict(), 1e-6)


def _distinct_inputs(rec, clips, n: int) -> list[tuple[dict, dict]]:
    """`n` (request, expected answer) pairs whose expected probabilities differ pairwise by more than 2 × TOLERANCE,
    so that an answer given to the wrong client cannot pass for its own."""
    chosen = []
    candidates = [{"audio": c["audio"], "text": c["text"]} for c in clips]
    candidates += [{"audio": c["audio"]} for c in clips] + [{"text": c["text"]} for c in clips]
    for request in candidates:
        expected = rec.predict(**request).to_dict()
        if all(not _close(expected, other, 2 * TOLERANCE) for _, other in chosen):
            chosen.append((request, expected))
        if len(chosen) == n:
            return chosen
    raise AssertionError(f"only {len(chosen)} distinct inputs among {len(candidates)}")


def test_concurrent_clients_each_get_their_own_answer(server, rec, clips):
    inputs = _distinct_inputs(rec, clips, 12)
    before = httpx.get(f"{server}/stats").json()
    rounds = 3

    def client(k):  # client k sends every input once, starting at its own, one request after another
        answers = []
        with httpx.Client(base_url=server, timeout=TIMEOUT) as http:
            for r in range(rounds):
                request, expected = inputs[(k + r) % len(inputs)]
                files = {"audio": ("clip.wav", Path(request["audio"]).read_bytes())} if "audio" in request else None
                response = http.post("/predict", files=files, data={"text": request.get("text", "")})
                answers.append((response.status_code, response.json(), expected))
        return answers

    with concurrent.futures.ThreadPoolExecutor(len(inputs)) as pool:
        answers = [a for per_client in pool.map(client, range(len(inputs))) for a in per_client]
    assert len(answers) == len(inputs) * rounds
    for status, answer, expected in answers:
        assert status == 200, answer
        assert _close(answer, expected, TOLERANCE), (answer, expected)
    after = httpx.get(f"{server}/stats").json()
    assert after["answered"] - before["answered"] == len(answers)  # the server answered each request once


def test_batching_groups_concurrent_requests(model_dir, rec, clips):
    """Four requests sent together run as one batch: the window is long, and the batch closes when it is full."""
    app = create_app(EmotionRecognizer.from_pretrained(model_dir), max_batch=4, batch_wait_ms=10_000)
    inputs = [{"audio": c["audio"], "text": c["text"]} for c in clips[:2]] + [{"text": c["text"]} for c in clips[2:4]]
    with _running(app) as url:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda request: _post(url, **request), inputs))
        stats = httpx.get(f"{url}/stats").json()
    assert [r.headers["x-batch-size"] for r in responses] == ["4"] * 4
    assert stats["batch_sizes"] == {"4": 1} and stats["answered"] == 4
    for request, response in zip(inputs, responses):
        assert _close(response.json(), rec.predict(**request).to_dict(), TOLERANCE)


def test_a_full_queue_and_shutdown_refuse_with_503(rec):
    batcher = Batcher(rec, max_batch=2, batch_wait_ms=0, max_queue=2)  # not started: nothing takes from the queue
    waiting = [batcher.submit("a", None), batcher.submit("b", None)]
    with pytest.raises(RequestError, match="busy") as refused:
        batcher.submit("c", None)
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
    batcher.close()
    for future in waiting:
        assert future.exception().status == 503 and "shutting down" in future.exception().reason
    with pytest.raises(RequestError, match="shutting down"):
        batcher.submit("d", None)


def test_the_library_does_not_import_fastapi():
    code = "import sys, mmemo, mmemo.serve; assert not {'fastapi', 'uvicorn'} & set(sys.modules), 'imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bench_serve_runs_the_cli_server_under_load_and_faults(model_dir, tmp_path, capsys):
    """`mmemo bench serve` starts `mmemo serve` as subprocesses (batched, then --max-batch 1): every answer right."""
    out = tmp_path / "bench.json"
    argv = ["bench", "serve", str(model_dir), "--clients", "1", "4", "--requests", "4", "--gain-clients", "4"]
    assert main([*argv, "--fault-rate", "0.25", "-o", str(out)]) == 0
    results = json.loads(out.read_text())
    for run in [*results["load"], results["batching"]["one_at_a_time"]]:
        assert run["errors"] == 0 and run["wrong"] == 0 and run["ok"] == run["requests"], run
    assert results["batching"]["one_at_a_time"]["mean_batch_size"] == 1.0
    faults = results["faults"]
    assert faults["lost"] == 0 and faults["wrong"] == 0 and faults["answering_after"]
    assert faults["answered_correctly"] == faults["well_formed"] == faults["server_answered"] == 12
    assert all(k["sent"] == 1 and k["as_expected"] == 1 for k in faults["faults"].values()), faults["faults"]
    assert faults["server_disconnects"] == 1
    printed = capsys.readouterr().out
    assert "| clients | requests | throughput (req/s)" in printed and "batching's gain" in printed


def test_the_curl_examples_in_docs_serving_run_as_written(server, clips, tmp_path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    text = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = [line for block in blocks for line in block.splitlines() if line.startswith("curl ")]
    assert len(commands) >= 3
    shutil.copy(clips[0]["audio"], tmp_path / "clip.wav")
    labels = httpx.get(f"{server}/info").json()["labels"]
    for command in commands:
        argv = shlex.split(command.replace("http://127.0.0.1:8000", server))
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, (command, proc.stderr)
        assert json.loads(proc.stdout)["label"] in labels, command
