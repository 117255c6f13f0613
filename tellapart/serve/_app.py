"""The HTTP API: ``POST /predict``, ``GET /health``, ``GET /metadata`` and the page at ``GET /``.

Every request is bounded before any decoding: the body by bytes (413) and by time between and over
its chunks (408), a multipart upload by its number of files (413), an image by its pixel count
read from its header (413, so a decompression bomb is never decoded). A file that is not an image
answers 415, a broken one 400, each with the reason and the file's name. Decoding runs on worker
threads; the model runs in batches on one thread (see ``_batcher``).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from tellapart.predict import Predictor
from tellapart.runs import RunDir

from ._batcher import Batcher, QueueFull
from ._page import page_html

__all__ = ["ServeConfig", "create_app", "model_card"]


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of the server; every field is a bound a bad request cannot pass."""

    max_batch: int = 32  # most images per forward pass
    max_wait_ms: float = 5.0  # longest a request waits for others to share its batch, milliseconds
    max_images: int = 32  # most images in one request (more: 413)
    max_upload_bytes: int = 10 * 1024 * 1024  # most bytes in one request body (more: 413)
    max_pixels: int = 40_000_000  # most pixels in one image, read from its header before decoding (more: 413)
    body_timeout_s: float = 10.0  # longest wait for the next chunk of a body, and for the whole body, seconds (408)
    max_queued_images: int = 1024  # images waiting for the model; beyond it requests get 503
    top_k: int = 5  # classes in each answer unless ?top_k= asks otherwise

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_images", "max_upload_bytes", "max_pixels", "max_queued_images", "top_k"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.body_timeout_s <= 0:
            raise ValueError("max_wait_ms must be >= 0 and body_timeout_s > 0")


class _Refused(Exception):
    """A request answered with ``status`` and ``reason`` (JSON ``{"error": reason}``)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


#: Content types taken as one raw image body.
_RAW_TYPES = ("image/", "application/octet-stream")


def model_card(predictor: Predictor, origin: Path | None = None) -> dict[str, Any]:
    """What ``GET /metadata`` answers: classes, preprocessing, the model and its test result."""
    spec = predictor.loaded.checkpoint["model"]
    pre = predictor.loaded.preprocess
    return {
        "model": predictor.model_id,
        "architecture": spec["name"],
        "classes": list(predictor.class_names),
        "preprocessing": {
            "size": int(pre["size"]),
            "channels": predictor.preprocess.channels,
            "grayscale": bool(pre["grayscale"]),
            "fit": pre["fit"],
            "mean": list(pre["mean"]),
            "std": list(pre["std"]),
        },
        "source": str(predictor.source) if predictor.source else None,
        "resolved": predictor.note,
        "test": _test_metrics(predictor, origin),
    }


def _test_metrics(predictor: Predictor, origin: Path | None) -> dict[str, Any] | None:
    """Test accuracy and interval from the metrics.json that tested this very run, when there is one."""
    source = predictor.source
    if source is None:
        return None
    run = source if source.is_dir() else source.parent.parent
    candidates = [RunDir(run).evaluation()]
    if origin is not None and origin.is_dir():
        candidates += [RunDir(origin).evaluation(), RunDir(origin / "final").evaluation()]
    exported = predictor.loaded.checkpoint.get("metrics")  # an export folder carries its run's record
    for path in dict.fromkeys(candidates):
        try:
            record = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and record.get("split") == "test" and _same_run(record.get("run"), run, path):
            return {k: record.get(k) for k in ("accuracy", "accuracy_ci", "n", "loss")} | {"report": str(RunDir(path.parent).report())}
    return exported if isinstance(exported, dict) else None


def _same_run(recorded: Any, run: Path, record_path: Path) -> bool:
    if not recorded:
        return False
    if record_path.parent == run:
        return True
    rec = Path(str(recorded))
    try:
        if rec.resolve() == run.resolve():
            return True
    except OSError:
        pass
    return rec.parts[-2:] == run.parts[-2:]  # written from another working directory


def create_app(predictor: Predictor, config: ServeConfig = ServeConfig(), *, origin: Path | None = None) -> FastAPI:
    """The FastAPI application serving ``predictor``; run it with uvicorn (see :func:`serve`)."""
    card = model_card(predictor, origin)
    limits = asdict(config)
    batcher_box: dict[str, Batcher] = {}

    def infer(pixels: np.ndarray) -> np.ndarray:
        return predictor.predict_pixels(pixels, batch_size=max(config.max_batch, len(pixels)))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = Batcher(infer, max_batch=config.max_batch, max_wait_s=config.max_wait_ms / 1000, max_queued=config.max_queued_images)
        batcher.start()
        batcher_box["batcher"] = batcher
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="tellapart", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    page = page_html()

    @app.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused) -> JSONResponse:
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = batcher_box["batcher"]
        return {"status": "ok", "model": predictor.model_id, "queued_images": batcher.queued_images, "batching": batcher.stats.to_json()}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        batcher = batcher_box["batcher"]
        return {**card, "limits": limits, "batching": batcher.stats.to_json()}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        top_k = _top_k(request, config.top_k, len(predictor.class_names))
        named = await _read_images(request, config)
        pixels = await run_in_threadpool(_decode_all, predictor, named, config.max_pixels)
        try:
            probs = await batcher_box["batcher"].submit(pixels)
        except QueueFull as exc:
            raise _Refused(503, f"server busy: {exc}; retry shortly") from None
        answers = [_answer(name, p, predictor.class_names, top_k) for (name, _), p in zip(named, probs)]
        return JSONResponse({"model": predictor.model_id, "predictions": answers})

    return app


def _top_k(request: Request, default: int, classes: int) -> int:
    raw = request.query_params.get("top_k")
    if raw is None:
        return min(default, classes)
    try:
        k = int(raw)
    except ValueError:
        raise _Refused(400, f"top_k must be a whole number, got {raw!r}") from None
    if k < 1:
        raise _Refused(400, f"top_k must be at least 1, got {k}")
    return min(k, classes)


def _answer(name: str, probs: np.ndarray, classes: list[str], top_k: int) -> dict[str, Any]:
    order = np.argsort(-probs, kind="stable")[:top_k]
    top = [{"label": classes[int(k)], "probability": float(probs[int(k)])} for k in order]
    return {"name": name, "label": top[0]["label"], "probability": top[0]["probability"], "top_k": top}


async def _read_body(request: Request, config: ServeConfig) -> bytes:
    """The whole body, refused past ``max_upload_bytes`` (413) or when it dawdles (408)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise _Refused(400, f"Content-Length is not a number: {declared!r}") from None
        if size > config.max_upload_bytes:
            raise _Refused(413, f"upload of {size:,} bytes is over the limit of {config.max_upload_bytes:,} bytes")
    chunks: list[bytes] = []
    total = 0
    started = time.monotonic()
    stream = request.stream().__aiter__()
    while True:
        left = config.body_timeout_s - (time.monotonic() - started)
        if left <= 0:
            raise _Refused(408, f"the request body took over {config.body_timeout_s:g} s to arrive")
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), min(left, config.body_timeout_s))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise _Refused(408, f"the request body stalled for over {config.body_timeout_s:g} s") from None
        total += len(chunk)
        if total > config.max_upload_bytes:
            raise _Refused(413, f"upload is over the limit of {config.max_upload_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_images(request: Request, config: ServeConfig) -> list[tuple[str, bytes]]:
    """(name, encoded bytes) of each image in a multipart upload or a raw image body."""
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    multipart = kind == "multipart/form-data"
    if not multipart and not kind.startswith(_RAW_TYPES):
        shown = kind or "none"
        raise _Refused(415, f"Content-Type {shown} is not accepted: send multipart/form-data (file=@img.jpg) or raw image bytes (image/* or application/octet-stream)")
    body = await _read_body(request, config)
    if not body:
        raise _Refused(400, "empty request body: send an image")
    if not multipart:
        return [(request.query_params.get("name", "body"), body)]
    return await _parse_multipart(request, body, config)


async def _parse_multipart(request: Request, body: bytes, config: ServeConfig) -> list[tuple[str, bytes]]:
    async def replay() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(request.headers, replay(), max_files=config.max_images, max_fields=config.max_images)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise _Refused(413, f"too many images in one request: at most {config.max_images}") from None
        raise _Refused(400, f"malformed multipart body: {exc.message}") from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise _Refused(400, "the multipart body holds no file: send the image as a file field (curl -F file=@img.jpg)")
        named = []
        for k, f in enumerate(files):
            await f.seek(0)
            named.append((f.filename or f"file-{k}", await f.read()))
        return named
    finally:
        await form.close()


#: Leading bytes of the common image formats: a file that starts so but will not open is broken, not foreign.
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP",
               b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def _signature(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _SIGNATURES.items() if data.startswith(magic)), None)


def _decode_all(predictor: Predictor, named: list[tuple[str, bytes]], max_pixels: int) -> np.ndarray:
    """Decodes every image, refusing the whole request at the first bad one (with its name)."""
    out = []
    for k, (name, data) in enumerate(named):
        where = f"image {k} ({name!r})" if len(named) > 1 else f"{name!r}"
        if not data:
            raise _Refused(400, f"{where} is empty (0 bytes)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as header:  # reads the header only
                    width, height = header.size
        except Image.DecompressionBombError as exc:
            raise _Refused(413, f"{where} is refused as a decompression bomb: {exc}") from None
        except Image.UnidentifiedImageError:
            known = _signature(data)
            if known:  # starts like an image, but its data is damaged
                raise _Refused(400, f"{where} is a broken {known} file (its header or data is damaged)") from None
            raise _Refused(415, f"{where} is not an image Pillow can read") from None
        except Exception as exc:  # noqa: BLE001 - a header Pillow chokes on is a broken file
            raise _Refused(400, f"{where} is a broken image: {type(exc).__name__}: {exc}") from None
        if width * height > max_pixels:
            raise _Refused(413, f"{where} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}")
        try:
            out.append(predictor.decode_image(data))
        except ValueError as exc:
            reason = str(exc)
            status = 415 if reason.startswith("not an image") else 413 if "decompression bomb" in reason else 400
            raise _Refused(status, f"{where}: {reason}") from None
    return np.stack(out)
