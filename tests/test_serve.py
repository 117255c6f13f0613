"""The HTTP server, run for real on a loopback port: answers equal in-process predictions under
concurrent load, bad requests get the right status and never take it down, the page works in a
headless browser, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _fixtures_train import easy_cache, easy_images, easy_run, fresh_copy  # noqa: F401 - fixtures
from _images import png_bomb
from PIL import Image

import tellapart
from tellapart.cli import main

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

#: Limits the test server runs with: small, so each is cheap to cross.
MAX_UPLOAD_MB, MAX_IMAGES, MAX_MEGAPIXELS, BODY_TIMEOUT_S = 0.5, 4, 4.0, 1.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen[bytes]

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def _start(run: Path, *extra: str) -> Server:
    port = _free_port()
    argv = [sys.executable, "-m", "tellapart", "serve", str(run), "--host", "127.0.0.1", "--port", str(port), "--quiet", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Server(url, port, process)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not answer /health within 60 s")


def _stop(server: Server) -> tuple[int, str]:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    try:
        _, err = server.process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        _, err = server.process.communicate(timeout=5)
    return server.process.returncode, err.decode()


@pytest.fixture(scope="module")
def served(easy_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """The tiny CNN's run (with a test record) served with small limits; yields (server, run)."""
    run = fresh_copy(easy_run, tmp_path_factory.mktemp("served") / "run")
    (run / "metrics.json").write_text(json.dumps({"split": "test", "run": str(run), "accuracy": 0.875, "accuracy_ci": [0.53, 0.98], "n": 8, "loss": 0.3}))
    server = _start(
        run, "--max-batch", "8", "--max-wait-ms", "20", "--max-images", str(MAX_IMAGES), "--max-upload-mb", str(MAX_UPLOAD_MB),
        "--max-megapixels", str(MAX_MEGAPIXELS), "--body-timeout-s", str(BODY_TIMEOUT_S),
    )
    yield server, run
    _stop(server)


def _png(path: Path) -> bytes:
    return path.read_bytes()


def _files(easy_images: Path) -> list[Path]:
    return sorted(easy_images.glob("*/*.png"))


def test_concurrent_requests_are_batched_and_equal_in_process_predictions(served: tuple[Server, Path], easy_images: Path) -> None:
    server, run = served
    files = _files(easy_images)[:24]
    want = tellapart.load(run).predict_proba(files)
    classes = ["left", "right"]

    def ask(k: int) -> dict:  # type: ignore[type-arg]
        with httpx.Client(timeout=30) as client:
            r = client.post(f"{server.url}/predict", files={"file": (files[k].name, _png(files[k]), "image/png")}, params={"top_k": 2})
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(len(files))))
    for k, answer in enumerate(answers):
        (p,) = answer["predictions"]
        assert p["name"] == files[k].name and answer["model"].startswith("run@")
        got = {t["label"]: t["probability"] for t in p["top_k"]}
        np.testing.assert_allclose([got[c] for c in classes], want[k], atol=1e-5)
        assert p["label"] == classes[int(want[k].argmax())]
    batching = httpx.get(f"{server.url}/health", timeout=10).json()["batching"]
    assert batching["largest_batch"] > 1 and batching["largest_batch"] <= 8  # shared forward passes, within --max-batch

    # Many images in one multipart request, and a raw body: the same answers.
    with httpx.Client(timeout=30) as client:
        r = client.post(f"{server.url}/predict", files=[("file", (f.name, _png(f), "image/png")) for f in files[:MAX_IMAGES]])
        assert r.status_code == 200
        got = [{t["label"]: t["probability"] for t in p["top_k"]} for p in r.json()["predictions"]]
        np.testing.assert_allclose([[g[c] for c in classes] for g in got], want[:MAX_IMAGES], atol=1e-5)
        r = client.post(f"{server.url}/predict", content=_png(files[5]), headers={"content-type": "image/png"})
        assert r.status_code == 200 and r.json()["predictions"][0]["name"] == "body"


def test_metadata_health_and_page(served: tuple[Server, Path]) -> None:
    server, run = served
    meta = httpx.get(f"{server.url}/metadata", timeout=10).json()
    assert meta["classes"] == ["left", "right"] and meta["architecture"] == "cnn"
    assert meta["preprocessing"]["size"] == 16 and meta["preprocessing"]["channels"] == 3 and len(meta["preprocessing"]["mean"]) == 3
    assert meta["test"]["accuracy"] == 0.875 and meta["test"]["accuracy_ci"] == [0.53, 0.98] and meta["test"]["n"] == 8
    assert meta["limits"]["max_images"] == MAX_IMAGES and meta["resolved"] == f"{run}: run folder"
    assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    page = httpx.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script" in page.text and "http" not in page.text.split("<script", 1)[1]  # self-contained: no outside URL


def _slow_client(port: int) -> int:
    """Sends headers promising 1,000 bytes, then 10, then nothing: the server must give up (408)."""
    with socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT_S + 10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n" + b"\x89PNG\r\n\x1a\n..")
        head = s.recv(1024).decode(errors="replace")
    return int(head.split()[1])


def _raw(port: int, request: bytes) -> int:
    """The status a hand-written (malformed) request gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        head = s.recv(1024).decode(errors="replace")
    return int(head.split()[1])


def _bad_requests(easy_images: Path) -> dict[str, tuple[dict, int, str]]:  # type: ignore[type-arg]
    """{kind: (httpx.post keyword arguments, expected status, words the reason must hold)}."""
    good = _png(_files(easy_images)[0])
    big = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "BMP")  # 480 kB: a valid image, but over 0.5 MiB with its siblings below
    huge = buf.getvalue() * 2
    png = lambda name, data: ("file", (name, data, "image/png"))  # noqa: E731
    return {
        "empty body": ({"content": b"", "headers": {"content-type": "image/png"}}, 400, "empty"),
        "text content type": ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "text/plain"),
        "json content type": ({"json": {"image": "x"}}, 415, "application/json"),
        "no content type": ({"content": good, "headers": {"content-type": ""}}, 415, "multipart/form-data"),
        "text as an image": ({"content": b"this is not an image", "headers": {"content-type": "image/jpeg"}}, 415, "not an image"),
        "truncated image": ({"files": [png("cut.png", good[: len(good) // 2])]}, 400, "cut.png"),
        "decompression bomb": ({"files": [png("bomb.png", png_bomb(3000, 3000))]}, 413, "pixels"),
        "huge upload": ({"content": huge, "headers": {"content-type": "application/octet-stream"}}, 413, "limit"),
        "huge chunked upload": ({"content": [huge[:300_000], huge[300_000:]], "headers": {"content-type": "image/bmp"}}, 413, "limit"),
        "too many files": ({"files": [png(f"{k}.png", good) for k in range(MAX_IMAGES + 1)]}, 413, "too many"),
        "multipart without a file": ({"data": {"note": "no file here"}, "files": {}, "headers": {"content-type": "multipart/form-data; boundary=xyz"}}, 400, ""),
        "form without files": ({"data": {"note": "x"}, "files": [("other", ("", b"", "text/plain"))]}, 400, ""),
        "garbage multipart": ({"content": b"--nope\r\n\r\nrubbish", "headers": {"content-type": "multipart/form-data; boundary=xyz"}}, 400, ""),
        "one broken file of two": ({"files": [png("ok.png", good), png("naïve 猫.png", b"\x89PNG\r\n\x1a\nbroken")]}, 400, "naïve 猫.png"),
        "empty file": ({"files": [png("zero.png", b"")]}, 400, "empty"),
        "bad top_k": ({"files": [png("ok.png", good)], "params": {"top_k": "lots"}}, 400, "top_k"),
        "zero top_k": ({"files": [png("ok.png", good)], "params": {"top_k": "0"}}, 400, "top_k"),
    }


def test_bad_requests_get_the_right_status_and_good_ones_keep_succeeding(served: tuple[Server, Path], easy_images: Path) -> None:
    server, _ = served
    good = _png(_files(easy_images)[0])
    cases = _bad_requests(easy_images)
    assert len(cases) + 3 >= 15  # and three hand-written ones below
    rss_before = server.rss_mb()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for round_ in range(3):  # repeated: a leak would show in the RSS below
            for kind, (kwargs, status, words) in cases.items():
                r = client.post("/predict", **kwargs)
                assert r.status_code == status, f"{kind}: {r.status_code} {r.text[:200]}"
                if words and r.headers.get("content-type", "").startswith("application/json"):
                    assert words.lower() in r.json()["error"].lower(), f"{kind}: {r.text}"
                ok = client.post("/predict", files={"file": ("ok.png", good, "image/png")})
                assert ok.status_code == 200, f"after {kind}: {ok.text}"
        unicode = client.post("/predict", files={"file": ("çà ✓ 画像.png", good, "image/png")})
        assert unicode.status_code == 200 and unicode.json()["predictions"][0]["name"] == "çà ✓ 画像.png"
        assert client.get("/predict").status_code == 405
        assert client.get("/nothing").status_code == 404
    assert _slow_client(server.port) == 408
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
    assert _raw(server.port, head + b"Content-Length: 12x\r\n\r\n") == 400  # refused by the HTTP parser itself
    assert _raw(server.port, head + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n") in (400, 431)  # headers over h11's limit
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/predict", files={"file": ("ok.png", good, "image/png")}).status_code == 200
        assert client.get("/health").json()["status"] == "ok"
    assert server.process.poll() is None
    assert server.rss_mb() - rss_before < 60, f"RSS grew from {rss_before:.0f} to {server.rss_mb():.0f} MB"


def test_the_page_shows_the_top_class_in_a_headless_browser(served: tuple[Server, Path], easy_images: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("no /usr/bin/chromium")
    server, run = served
    image = _files(easy_images)[-1]
    want = tellapart.load(run).predict([image])[0]
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=args, timeout=60_000)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{server.url}/")
            page.wait_for_function("document.getElementById('card').textContent.includes('87.50%')")
            page.set_input_files("#file", str(image))
            page.wait_for_selector(".top-label")
            assert page.inner_text(".top-label") == want
            assert page.locator(".row").count() == 2  # one bar per class (top-k of two)
        finally:
            browser.close()


def test_ctrl_c_stops_the_server_cleanly(easy_run: Path) -> None:
    server = _start(easy_run)
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    code, err = _stop(server)
    assert code == 0, err[-2000:]
    assert "server stopped" in err and "Traceback" not in err


def test_serve_without_its_extra_says_what_to_install(easy_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # an import of it now fails, as when it is not installed
    assert main(["serve", str(easy_run)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'tellapart[serve]'" in err and "Traceback" not in err
