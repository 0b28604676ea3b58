"""Latency of the app's /remix and /augment endpoints through gradio_client, at 512² on tiny-random.

    python -m bench.app [--remix-calls 60] [--augment-calls 8] [--steps 20] [--size 512]

(run from the repository root: it starts ``python app.py`` there.)

Starts the real app as a user does (``python app.py --model tiny-random``, its own process: queue, PNG outputs,
file transfer to the client included) on a free local port, and times it from this process's client.
/remix is timed with a new λ on every call (what dragging the slider does) and, separately, with a new mask
and fractal on every call. Prints median and p95 in milliseconds; the last line is ``remix_median_ms: X``.
Target: remix median under 150 ms on a 2-core CPU.

The headline client is ``Client(url, ssl_verify=False)``: the app is plain http on 127.0.0.1, so there is no
certificate to verify, and gradio_client otherwise builds a fresh TLS context (about 40 ms here) for every
request and every downloaded file, seven times per /remix call. The default client is timed too, for comparison.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_app(client_class, url: str, timeout_s: float = 120.0):
    """A client of the app at `url` once it answers (start-up imports gradio and torch)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client_class(url, verbose=False, ssl_verify=False)  # plain http on localhost: no TLS to verify
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return (time.perf_counter() - start) * 1000.0, out


def report(name: str, ms: list[float]) -> None:
    print(f"{name:<36} n={len(ms):<3} median {statistics.median(ms):8.1f} ms   p95 {percentile(ms, 95):8.1f} ms")


def test_image(size: int, path: Path) -> Path:
    """A smooth photo-like picture of size², written as PNG."""
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x * y)], axis=-1) * 255
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--remix-calls", type=int, default=60)
    parser.add_argument("--augment-calls", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of the app (OMP_NUM_THREADS)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from gradio_client import Client, handle_file

    from diffusemix_core.engine.fractals import FractalLibrary

    tmp = Path(tempfile.mkdtemp(prefix="bench-app-"))
    image = test_image(args.size, tmp / "image.png")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "app.py", "--model", "tiny-random", "--workspace", str(tmp / "ws"), "--port", str(port),
         "--resolution", str(args.size), "--steps", str(args.steps), "--device", "cpu"],
        cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        client = wait_for_app(Client, url)
        fractals = FractalLibrary.default().ids  # the app's library: it was started without --fractal-dir
        print(f"app on tiny-random, {args.size}x{args.size}, {args.steps} steps, torch threads {args.threads}")

        augment_ms = []
        result_id = None
        for i in range(args.augment_calls + 1):
            ms, out = timed(client.predict, handle_file(str(image)), "random", "random", 0.2, i, "random", None,
                            api_name="/augment")
            assert len(out) == 7 and Image.open(out[5]).size == (args.size, args.size)
            result_id = out[6]["result_id"]
            if i:  # the first call loads the model
                augment_ms.append(ms)
            else:
                print(f"first /augment (loads the model): {ms:.0f} ms")

        def remix_lams(c, calls: int, offset: float) -> list[float]:
            times = []
            for i in range(calls + 1):
                lam = round(offset + 0.9 * i / max(calls, 1), 4)  # a new λ every call: nothing is cached
                ms, out = timed(c.predict, result_id, lam, "left", fractals[0], None, api_name="/remix")
                assert out[6]["lam"] == lam and Image.open(out[5]).size == (args.size, args.size)
                if i:  # warm-up
                    times.append(ms)
            return times

        default_ms = remix_lams(Client(url, verbose=False), max(args.remix_calls // 3, 5), 0.051)
        lam_ms = remix_lams(client, args.remix_calls, 0.05)

        choice_ms = []
        masks = ("left", "right", "top", "bottom")
        for i in range(min(args.remix_calls, 4 * len(fractals))):
            ms, out = timed(client.predict, result_id, 0.2, masks[i % 4], fractals[i % len(fractals)], None,
                            api_name="/remix")
            choice_ms.append(ms)

        report("augment", augment_ms)
        report("remix (new mask+fractal)", choice_ms)
        report("remix (new λ), default client", default_ms)
        report("remix (new λ)", lam_ms)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"remix_median_ms: {statistics.median(lam_ms):.1f}")


if __name__ == "__main__":
    main()
