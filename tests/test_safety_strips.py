"""Issue 16, item 1: a tiny image with an extreme aspect ratio must not take gigabytes.

A 1x40000 PNG is 160 bytes; fitting a fractal to cover its bounding square once made a 40000x40000x3 array
(16 GB in `augment`, 4 GB per request in the app). Now such a strip is refused from its header with one sentence,
and fitting any fractal to any size makes nothing larger than the output. Memory is measured in separate processes
(peak RSS), the way a user would see it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from diffusemix_core.engine.fractals import fit_to
from diffusemix_core.engine.images import MAX_ASPECT, load_image
from diffusemix_core.errors import BadImageError

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024 ** 3
MIB = 1024 ** 2


def strip_png(path: Path, width: int, height: int) -> Path:
    Image.new("RGB", (width, height), (200, 80, 40)).save(path, "PNG")
    return path


def peak_rss_of(code: str) -> int:
    """Peak resident memory (bytes) of a fresh `python -c code`, measured by a parent that runs nothing else."""
    probe = ("import resource, subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1]) * 1024


@pytest.mark.parametrize("size", [(1, 40000), (40000, 1), (21, 1), (2, 200)])
def test_an_extreme_strip_is_refused_from_its_header_in_one_sentence(tmp_path, size):
    path = strip_png(tmp_path / "strip.png", *size)
    started = time.perf_counter()
    with pytest.raises(BadImageError) as caught:
        load_image(path)
    assert time.perf_counter() - started < 1
    message = str(caught.value)
    assert f"{size[0]}x{size[1]}" in message and f"1:{MAX_ASPECT}" in message and "crop" in message
    assert "\n" not in message
    with pytest.raises(BadImageError, match=f"1:{MAX_ASPECT}"):  # arrays (the app's uploads) too
        load_image(np.zeros((size[1], size[0], 3), np.uint8))


@pytest.mark.parametrize("size", [(1, 20), (20, 1), (64, 1280)])
def test_a_strip_within_the_limit_is_taken(tmp_path, size):
    assert load_image(strip_png(tmp_path / "ok.png", *size)).shape == (size[1], size[0], 3)


@pytest.mark.parametrize("height, width", [(1, 40000), (40000, 1), (3, 9000), (512, 384), (37, 500)])
def test_fit_to_makes_nothing_larger_than_its_output(height, width):
    fractal = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = fit_to(fractal, height, width)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8 and out.flags.c_contiguous


def test_fit_to_a_40000_pixel_strip_stays_small_in_memory():
    """Covering 1x40000 used to resize the fractal to 40000x40000 (4.8 GB) before cropping."""
    baseline = peak_rss_of("import numpy, PIL.Image; import diffusemix_core.engine.fractals")
    peak = peak_rss_of("import numpy as np; from diffusemix_core.engine.fractals import fit_to; "
                       "f = np.zeros((256, 256, 3), np.uint8); fit_to(f, 1, 40000); fit_to(f, 40000, 1)")
    assert peak - baseline < 64 * MIB, (baseline / MIB, peak / MIB)


def test_fit_to_equals_cover_then_crop_where_that_was_affordable():
    """The one-resize fit gives the old cover-resize-then-crop result (within one level in rare pixels)."""
    fractal = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for height, width in [(512, 384), (200, 100), (64, 64), (37, 500)]:
        scale = max(height / 256, width / 256)
        new_w, new_h = max(width, round(256 * scale)), max(height, round(256 * scale))
        big = np.asarray(Image.fromarray(fractal).resize((new_w, new_h), Image.Resampling.BICUBIC))
        top, left = (new_h - height) // 2, (new_w - width) // 2
        old = big[top:top + height, left:left + width].astype(int)
        new = fit_to(fractal, height, width).astype(int)
        assert np.abs(old - new).max() <= 1 and (old != new).mean() < 0.001


def test_augment_skips_a_1x40000_strip_with_a_reason_and_stays_small(tmp_path):
    """The CLI as a user runs it: a class folder with a real photo and a 160-byte 1x40000 strip."""
    train = tmp_path / "train" / "cat"
    train.mkdir(parents=True)
    strip = strip_png(train / "strip.png", 1, 40000)
    assert strip.stat().st_size < 400
    Image.open(ROOT / "examples" / "landscape.png").convert("RGB").resize((48, 32)).save(train / "photo.png")
    command = [sys.executable, "-m", "diffusemix_core", "augment", "--train-dir", str(tmp_path / "train"),
               "--workspace", str(tmp_path / "ws"), "--per-image", "1", "--model", "tiny-random",
               "--resolution", "64", "--steps", "2", "--device", "cpu", "--scorer", "none"]
    code = f"import subprocess, sys; r = subprocess.run({command!r}, capture_output=True, text=True); " \
           "sys.stderr.write(r.stdout + r.stderr); sys.exit(r.returncode)"
    probe = ("import resource, subprocess, sys; r = subprocess.run([sys.executable, '-c', sys.argv[1]], "
             "capture_output=True, text=True); print(r.returncode); print(r.stderr); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", probe, code], capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env=env)
    lines = out.stdout.strip().splitlines()
    returncode, text, peak = int(lines[0]), "\n".join(lines[1:-1]), int(lines[-1]) * 1024
    assert returncode == 0, text[-3000:]
    assert "1x40000" in text and f"1:{MAX_ASPECT}" in text, text[-3000:]
    assert peak < 3 * GIB, f"augment peaked at {peak / GIB:.1f} GiB"  # 16 GiB before; ~1 GiB is torch + the model
    import sqlite3
    with sqlite3.connect(tmp_path / "ws" / "manifest.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM augmentations").fetchone()[0] == 1  # the photo's; the run went on


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_the_app_refuses_a_1x40000_strip_without_growing(tmp_path):
    """`python app.py` in a subprocess; the strip sent to Explore's /augment (and as an uploaded fractal)."""
    from gradio_client import Client, handle_file

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_TEMP_DIR=str(tmp_path / "gradio-tmp"),
               GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen([sys.executable, "app.py", "--model", "tiny-random", "--resolution", "64", "--steps",
                               "2", "--device", "cpu", "--port", str(port), "--workspace", str(tmp_path / "ws")],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "the app did not start"
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        client = Client(url, verbose=False)
        example = handle_file(str(ROOT / "examples" / "landscape.png"))
        client.predict(example, "random", "random", 0.2, 1, "random", None, api_name="/augment")  # model loaded
        before = vm_hwm(server.pid)
        strip = handle_file(str(strip_png(tmp_path / "strip.png", 1, 40000)))
        for args in [(strip, "random", "random", 0.2, 1, "random", None),
                     (example, "random", "random", 0.2, 1, "random", strip)]:
            with pytest.raises(Exception, match=rf"1x40000.*1:{MAX_ASPECT}"):
                client.predict(*args, api_name="/augment")
        grown = vm_hwm(server.pid) - before
        assert grown < 200 * MIB, f"the server's peak grew by {grown / MIB:.0f} MiB"  # 3.7 GiB before the fix
    finally:
        server.terminate()
        server.wait(timeout=30)
