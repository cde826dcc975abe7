"""`mmemo serve`: a trained model behind an HTTP JSON endpoint that many clients can use at once.

    POST /predict   multipart/form-data with `audio` (a file) and/or `text` (a field): `Prediction.to_dict()`
    GET  /health    {"status": "ok", "queued": inputs waiting for the model}
    GET  /info      the model (labels, encoders, sampling rate, device) and the server's limits
    GET  /stats     predictions answered, batches run and their sizes, requests refused by status

How a request flows. The event loop reads the body, counting bytes as they arrive, so an upload over the limit
is refused while it streams in (413), never held whole; it checks the form fields, and a decoding thread
decodes the audio, so decoding overlaps inference and an undecodable file fails alone (422). The decoded input
joins a queue. One worker thread owns the recognizer (`mmemo.batcher.Batcher`): it takes the oldest input, waits
for more until `batch_wait_ms` after that input arrived or `max_batch` are there, and runs them through
`EmotionRecognizer.predict` as one batch. Inputs that queue while a batch runs go together into the next one
without waiting, so batches grow with the load by themselves and a lone request waits at most the window. A
batch that fails is run again one input at a time, so one input's error cannot fail another's request. Every
refusal is a JSON `{"detail": reason}` with a 4xx status, and the server goes on serving.

FastAPI and uvicorn are the `serve` extra and are imported inside functions only: `import mmemo.serve` never
imports them. By default the server binds 127.0.0.1, writes each upload to a private temporary file only for as
long as decoding takes, logs no request content (uvicorn's access log is off), and sends nothing anywhere;
FastAPI's /docs pages are off because they load their scripts from a CDN.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (`request: Request`) at run
# time, and string annotations would name a module imported inside `create_app`, where FastAPI cannot find it.
import asyncio
import concurrent.futures
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from mmemo.batcher import DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, Batcher, RequestError
from mmemo.data.audio import audio_duration, load_audio
from mmemo.errors import ConfigError, DataError, MmemoError

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_SECONDS = 60.0
FIELDS = ("audio", "text")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_TEXT_BYTES = 64 * 1024  # a transcript is a few hundred bytes; the tokenizer keeps max_text_tokens of it
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def create_app(
    recognizer,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_queue: int = DEFAULT_MAX_QUEUE,
    model_name: str | None = None,
):
    """The FastAPI app serving one recognizer; its worker thread starts and stops with the app's lifespan.

    Args:
        recognizer: an EmotionRecognizer.
        max_batch, batch_wait_ms, max_queue: the batching limits (see `Batcher`).
        max_upload_mb: the largest request body accepted (413 above it).
        max_seconds: the longest audio accepted (422 above it).
        model_name: what /info calls the model (`mmemo serve` gives the folder as written on its command line).

    Raises:
        ConfigError: a limit out of range.
        MmemoError: FastAPI is not installed.
    """
    fastapi, _ = _import_server()
    from contextlib import asynccontextmanager

    from fastapi.responses import JSONResponse
    from starlette.requests import ClientDisconnect

    if not max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {max_upload_mb:g}")
    if not max_seconds > 0:
        raise ConfigError(f"--max-seconds must be positive, got {max_seconds:g}")
    batcher = Batcher(recognizer, max_batch, batch_wait_ms, max_queue)
    # decoding's own threads, stopped with the app (anyio's shared pool would hold the process's exit for 10 s)
    decoders = concurrent.futures.ThreadPoolExecutor(max(2, os.cpu_count() or 1), thread_name_prefix="mmemo-decode")
    rate = recognizer.config.sampling_rate
    limits = {
        "max_upload_mb": max_upload_mb,
        "max_seconds": max_seconds,
        "max_batch": max_batch,
        "batch_wait_ms": batch_wait_ms,
        "max_queue": max_queue,
    }
    counts = Counter()  # "answered", "disconnected", and refusals by status ("413", ...)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        decoders.shutdown(cancel_futures=True)
        batcher.close()  # the server is stopping: blocking the event loop for the batch that runs costs nobody

    app = fastapi.FastAPI(title="mmemo", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(RequestError)
    async def refuse(request, error: RequestError):
        counts[str(error.status)] += 1
        return JSONResponse({"detail": error.reason}, status_code=error.status, headers=error.headers)

    @app.get("/health")
    async def health():
        return {"status": "ok", "queued": batcher.queued}

    @app.get("/info")
    async def info():
        return {"model": model_name, **model_info(recognizer), "limits": limits}

    @app.get("/stats")
    async def stats():
        refused = {k: v for k, v in sorted(counts.items()) if k.isdigit()}
        return {
            "answered": counts["answered"],
            **batcher.stats(),
            "refused": refused,
            "disconnected": counts["disconnected"],
            "queued": batcher.queued,
            "uptime_s": round(time.time() - started, 1),
        }

    @app.post("/predict", openapi_extra=_PREDICT_OPENAPI)
    async def predict(request: fastapi.Request):
        """Classify `audio` (a file) and/or `text` (a field) sent as multipart/form-data."""
        try:
            form = await read_form(request, max_upload_mb)
        except ClientDisconnect:
            counts["disconnected"] += 1
            return fastapi.Response(status_code=400)  # nobody is there to read it
        try:
            text, upload = form_inputs(form)
            audio = None
            if upload is not None:
                audio = await asyncio.get_running_loop().run_in_executor(
                    decoders, decode_upload, upload.file, upload.filename, rate, max_seconds
                )
        finally:
            await form.close()
        future = batcher.submit(text, audio)
        try:
            prediction, batch_size = await asyncio.wrap_future(future)
        except DataError as e:  # predict refused an input the checks above let through
            raise RequestError(422, str(e)) from None
        counts["answered"] += 1
        return JSONResponse(prediction.to_dict(), headers={"X-Batch-Size": str(batch_size)})

    return app


async def read_form(request, max_upload_mb: float):
    """Parse a form body, refusing it (413) as soon as more than `max_upload_mb` have arrived.

    Raises:
        RequestError: 415 for a body that is not a form, 413 for one over the limit, 400 for a malformed one.
        starlette.requests.ClientDisconnect: the client went away before the body was complete.
    """
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in FORM_TYPES:
        given = f"Content-Type {media}" if media else "no Content-Type"
        raise RequestError(
            415, f"send multipart/form-data with an 'audio' file and/or a 'text' field (curl -F); got {given}"
        )
    max_bytes = int(max_upload_mb * 1024 * 1024)
    too_large = RequestError(
        413, f"the request body is over this server's limit of {max_upload_mb:g} MB (--max-upload-mb)"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    received = 0

    async def receive():
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > max_bytes:  # a body sent without a length, or longer than it said
            raise too_large
        return message

    try:
        return await Request(request.scope, receive).form(
            max_files=len(FIELDS) + 2, max_fields=len(FIELDS) + 8, max_part_size=MAX_TEXT_BYTES
        )
    except HTTPException as e:  # starlette's parser refused the body
        cause = e.__context__.__cause__ if e.__context__ is not None else None
        detail = f"{e.detail} ({cause})" if cause and str(cause) else e.detail
        raise RequestError(400, f"the body is not valid {media}: {detail}") from None


def form_inputs(form) -> tuple[str, object | None]:
    """The transcript ("" for none) and the audio upload (None for none) of a parsed form.

    Raises:
        RequestError: 422 for an unknown or repeated field, a field of the wrong kind, or a form with neither.
    """
    unknown = sorted(set(form.keys()) - set(FIELDS))
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise RequestError(422, f"unknown form field {names}; send 'audio' (a file) and/or 'text' (a field)")
    for name in FIELDS:
        if len(form.getlist(name)) > 1:
            raise RequestError(422, f"field {name!r} is given {len(form.getlist(name))} times; send it once")
    audio, text = form.get("audio"), form.get("text")
    if isinstance(audio, str):
        raise RequestError(422, "field 'audio' must be a file upload (curl -F audio=@clip.wav), not a plain text value")
    if text is not None and not isinstance(text, str):
        raise RequestError(422, "field 'text' must be a plain form field (curl -F 'text=...'), not a file")
    text = (text or "").strip()
    if not text and audio is None:
        raise RequestError(422, "nothing to classify: send an 'audio' file, a non-empty 'text' field, or both")
    return text, audio


def decode_upload(file, filename: str | None, rate: int, max_seconds: float) -> np.ndarray:
    """Decode an uploaded audio file (any format `load_audio` reads) to a mono waveform at `rate`.

    The upload is copied to a private temporary file (the decoders read paths) that is deleted before returning.

    Raises:
        RequestError: 422 for audio that cannot be decoded or is longer than `max_seconds`; the reason names the
            upload by its file name.
    """
    name = _upload_name(filename)
    too_long = f"this server takes up to {max_seconds:g} s (--max-seconds); send a shorter clip"
    suffix = Path(name).suffix.lower()  # kept for the decoders that go by it
    suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ""
    fd, path = tempfile.mkstemp(prefix="mmemo-serve-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(file, out)
        seconds = audio_duration(path)  # from the header, before decoding hours of compressed audio
        if seconds is not None and seconds > max_seconds:
            raise RequestError(422, f"field 'audio': {name} is {seconds:.1f} s long; {too_long}")
        try:
            waveform = load_audio(path, rate)
        except DataError as e:
            raise RequestError(422, f"field 'audio': {str(e).replace(path, name)}") from None
    finally:
        os.unlink(path)
    if len(waveform) > max_seconds * rate:  # formats whose header gives no duration
        raise RequestError(422, f"field 'audio': {name} is {len(waveform) / rate:.1f} s long; {too_long}")
    return waveform


def model_info(recognizer) -> dict:
    """What /info says about the model: labels, inputs, encoders, device and test scores from its card."""
    from mmemo import __version__
    from mmemo.model_card import CARD_SCORES, describe_encoder

    config, card = recognizer.config, recognizer.card
    scores = {
        condition: {k: v for k, v in metrics.items() if k in CARD_SCORES}
        for condition, metrics in (card.test or {}).items()
    }
    return {
        "labels": list(recognizer.labels),
        "inputs": ["text", "audio", "text+audio"],
        "sampling_rate": config.sampling_rate,
        "text_encoder": describe_encoder(recognizer.model.text_encoder),
        "audio_encoder": describe_encoder(recognizer.model.audio_encoder),
        "fusion": f"{config.fusion}, dim {config.fusion_dim}",
        "temperature": recognizer.temperature,
        "device": str(recognizer.device),
        "int8": recognizer.quantized,
        "test_scores": scores or None,
        "mmemo_version": __version__,
    }


def serve(
    model_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_queue: int = DEFAULT_MAX_QUEUE,
    device: str = "auto",
    int8: bool = False,
    threads: int | None = None,
) -> None:
    """Load a model folder and serve it until interrupted; what `mmemo serve` runs.

    Args:
        model_dir: a model folder written by `save_pretrained` (or a hub id holding one).
        host, port: where to listen; the default 127.0.0.1 takes connections from this computer only.
        max_batch, batch_wait_ms, max_queue: the batching limits (see `Batcher`).
        max_upload_mb, max_seconds: the largest request body and the longest audio accepted.
        device, int8, threads: as for `EmotionRecognizer.from_pretrained`.

    Raises:
        MmemoError: the serve extra is missing, the model cannot be loaded, or a limit is out of range.
    """
    from mmemo.inference import EmotionRecognizer

    _, uvicorn = _import_server()
    recognizer = EmotionRecognizer.from_pretrained(model_dir, device=device, int8=int8, threads=threads)
    app = create_app(
        recognizer,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        max_upload_mb=max_upload_mb,
        max_seconds=max_seconds,
        max_queue=max_queue,
        model_name=str(model_dir),
    )
    if host not in LOOPBACK:
        print(
            f"mmemo serve: listening on {host}: other computers can reach this server, and it has no "
            "authentication; put it behind a proxy that has"
        )
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")


def _upload_name(filename: str | None) -> str:
    """The client's file name, safe to quote in a message: its last path part, printable, at most 80 characters."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(c for c in name if c.isprintable())[:80]
    return name or "the upload"


def _import_server():
    try:
        import fastapi
        import uvicorn
    except ImportError:
        raise MmemoError("mmemo serve needs FastAPI and uvicorn: pip install 'mmemo[serve]'") from None
    return fastapi, uvicorn


# /openapi.json's description of POST /predict, which reads its form itself (to limit and check it)
_PREDICT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "audio": {"type": "string", "format": "binary", "description": "wav, flac, ogg or mp3"},
                        "text": {"type": "string", "description": "the transcript"},
                    },
                }
            }
        },
    }
}
