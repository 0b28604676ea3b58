"""Issue 7's holes in the app, driven the way they were found: gradio_client against launched apps, raw HTTP where
gradio_client hides what travels (served files, the answers as sent), the CLI beside a running app, and one app in a
subprocess whose memory and temp folder are measured.

* item 1: a second decision on an Explore result changes its status, from any session;
* item 2: a decision on ``ws-N`` acts on augmentation N unless λ, mask or fractal were changed (then a new one,
  linked to N);
* item 3: ``/undo_review`` reverts the last bulk decision; the history shows every decision with its origin;
* item 4: under concurrent decisions the final status is the last acknowledged one and the history holds every one;
* item 9: images over the interactive pixel limit are refused fast; stages are display-sized, A full size on request;
* item 10: uploads kept once per content, listed, deleted, under a quota;
* item 12: typed server folders only on loopback or inside ``--data-root`` (links resolved);
* item 13: only export zips and display images are served; no answer carries a server path.

And issue 16's findings in the app: ``python app.py --host 0.0.0.0`` without ``--auth`` is refused unless the user
says so (then a warning line); a port in use is one line, not a traceback (item 4 and item 6).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image, ImageDraw

from helpers import ROOT, cli_env, run_cli

EXAMPLE = ROOT / "examples" / "landscape.png"
APP_ARGS = ["--model", "tiny-random", "--resolution", "64", "--steps", "2", "--device", "cpu"]
CLASSES = {"remix": 2, "undo": 4, "race": 10}  # one class of the bulk zip per test that decides on bulk items
HUGE = (1000, 1100)  # over the module app's 1 MP interactive limit (bulk runs take it)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*flags: str):
    """An app built from command-line flags (config_from_args), listening on a free loopback port."""
    from diffusemix_core.ui import build_app, config_from_args, launch_kwargs, parse_args

    config = config_from_args(parse_args([*APP_ARGS, *map(str, flags)]))
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=free_port(),
                            **launch_kwargs(config))
    return demo, url, config


def query(ws: Path, sql: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(ws / "manifest.sqlite", timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def status_of(ws: Path, aug_id: int) -> str:
    return query(ws, "SELECT status FROM augmentations WHERE id = ?", [aug_id])[0][0]


def cli(*args) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=120, env=cli_env(OMP_NUM_THREADS=None))


def augment(client: Client, *, seed: int, lam: float = 0.2, image=EXAMPLE):
    out = client.predict(handle_file(str(image)), "random", "random", lam, seed, "random", None, api_name="/augment")
    return out[:6], out[6]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def dataset_zip(path: Path, classes: dict[str, int], *, seed: int = 0, size=(36, 44)) -> Path:
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for label, n in classes.items():
            for i in range(n):
                zf.writestr(f"train/{label}/{i}.png", png(rng.integers(0, 256, (*size, 3), dtype=np.uint8)))
    return path


def flat_png(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    """A large, mostly flat picture: a few hundred KB for tens of megapixels (as an attacker would make it)."""
    image = Image.new("RGB", (width, height), (90, 120, 150))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 8, height // 8, width * 3 // 4, height * 5 // 8), fill=(200, 80, 40))
    draw.rectangle((width // 20, height * 3 // 4, width * 19 // 20, height * 19 // 20), fill=(30, 160, 60))
    image.convert(mode).save(path, "PNG")
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app as a user starts it on loopback, with a 1 MP interactive limit and a 2 MB upload quota."""
    ws = tmp_path_factory.mktemp("app") / "ws"
    demo, url, config = launch("--workspace", ws, "--max-pixels", 1_000_000, "--upload-quota", "2mb")
    yield demo, url, ws
    demo.close()


@pytest.fixture(scope="module")
def bulk(app, tmp_path_factory):
    """Pending items of a bulk run, by class: augmentations N that `ws-N` names."""
    demo, url, ws = app
    client = Client(url, verbose=False)
    archive = dataset_zip(tmp_path_factory.mktemp("zip") / "bulk.zip", CLASSES)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("train/huge/0.png", png(np.full((*HUGE, 3), 120, np.uint8)))
    handle, _ = client.predict(handle_file(str(archive)), api_name="/extract_zip")
    text, info = client.predict(handle, 1, 0, 0.2, 2, 64, 4, False, api_name="/run_dataset")
    assert info["augmentations_added"] == sum(CLASSES.values()) + 1, text
    return {label: [r[0] for r in query(ws, "SELECT id FROM augmentations WHERE label = ? ORDER BY id", [label])]
            for label in [*CLASSES, "huge"]}


# ------------------------------------------------------------------------------------------------ item 1
def test_a_second_decision_on_an_explore_result_changes_its_status_from_any_session(app):
    _, url, ws = app
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    _, choices = augment(alice, seed=31)
    args = (choices["result_id"], 0.2, "random", "random", None, "decided")
    first = alice.predict(*args, api_name="/approve")
    aug_id = int(re.match(r"Saved as #(\d+) ", first).group(1))
    assert status_of(ws, aug_id) == "approved"
    expected = ["approved"]
    for client, endpoint, status in ((bob, "/reject", "rejected"), (alice, "/approve", "approved"),
                                     (bob, "/approve", "approved"), (alice, "/reject", "rejected")):
        assert client.predict(*args, api_name=endpoint) == f"Saved as #{aug_id} ({status})."
        assert status_of(ws, aug_id) == status, f"{endpoint} from another session was not applied"
        expected.append(status)
    assert query(ws, "SELECT count(*) FROM augmentations WHERE label = 'decided'") == [(1,)]
    history = query(ws, "SELECT status, origin FROM reviews WHERE augmentation_id = ? ORDER BY id", [aug_id])
    assert history == [(s, "app") for s in expected]


# ------------------------------------------------------------------------------------------------ item 2
def test_a_decision_on_a_workspace_item_acts_on_it_unless_it_was_remixed(app, bulk):
    demo, url, ws = app
    client = Client(url, verbose=False)
    n = bulk["remix"][0]
    mask, fractal, lam = query(ws, "SELECT mask, fractal, lam FROM augmentations WHERE id = ?", [n])[0]
    count = query(ws, "SELECT count(*) FROM augmentations")[0][0]

    msg = client.predict(f"ws-{n}", lam, "random", "random", None, "", api_name="/approve")  # as stored
    assert msg.startswith(f"Marked #{n} approved"), msg
    assert status_of(ws, n) == "approved"
    msg = client.predict(f"ws-{n}", lam, mask, fractal, None, "", api_name="/reject")  # the same choices, named
    assert msg.startswith(f"Marked #{n} rejected") and status_of(ws, n) == "rejected"
    assert query(ws, "SELECT count(*) FROM augmentations")[0][0] == count  # no copy stored

    remixed = client.predict(f"ws-{n}", 0.55, "random", "random", None, "", api_name="/approve")  # λ moved
    new_id = int(re.match(r"Saved as #(\d+) \(approved\), re-mixed from #(\d+)", remixed).group(1))
    assert query(ws, "SELECT remixed_from, status, lam, label FROM augmentations WHERE id = ?", [new_id]) == [
        (n, "approved", 0.55, "remix")]
    assert status_of(ws, n) == "rejected"  # the original is left as it was

    # N approved as well (a second person, the CLI): an export holds N and its re-mix, never one image twice
    assert cli("review", "--workspace", ws, "--approve", "--ids", n).returncode == 0
    zip_path, _ = client.predict("approved", False, api_name="/export")
    with zipfile.ZipFile(zip_path) as zf:
        digests = [hashlib.sha256(zf.read(name)).hexdigest() for name in zf.namelist() if name.endswith(".png")]
    assert len(digests) == len(set(digests)) >= 2


# ------------------------------------------------------------------------------------------------ item 3
def test_undo_of_the_last_bulk_decision_from_the_app_and_the_history(app, bulk):
    _, url, ws = app
    client = Client(url, verbose=False)
    ids = bulk["undo"]
    assert cli("review", "--workspace", ws, "--approve", "--label", "undo").returncode == 0  # bulk, elsewhere
    lam = query(ws, "SELECT lam FROM augmentations WHERE id = ?", [ids[0]])[0][0]
    client.predict(f"ws-{ids[0]}", lam, "random", "random", None, "", api_name="/reject")  # decided again since
    message = client.predict(api_name="/undo_review")
    assert "3 restored" in message and "1 decided again since" in message, message
    assert [status_of(ws, i) for i in ids] == ["rejected", "pending", "pending", "pending"]
    history = cli("review", "--workspace", ws, "--history", ids[1]).stdout.splitlines()
    assert len(history) == 2 and "pending -> approved  (cli, bulk" in history[0]
    assert "approved -> pending  (app" in history[1]
    history = cli("review", "--workspace", ws, "--history", ids[0]).stdout.splitlines()
    assert len(history) == 2 and "approved -> rejected  (app" in history[1]


# ------------------------------------------------------------------------------------------------ item 4
THREADS, DECISIONS_PER_THREAD = 8, 25


def test_concurrent_decisions_end_with_the_last_acknowledged_one_and_all_are_recorded(app, bulk):
    """8 threads, each with its own client (session), 25 decisions each over 10 shared items."""
    _, url, ws = app
    items = bulk["race"]
    lams = dict(query(ws, f"SELECT id, lam FROM augmentations WHERE id IN ({','.join('?' * len(items))})", items))
    before = query(ws, "SELECT coalesce(max(id), 0) FROM review_batches")[0][0]
    clients = [Client(url, verbose=False) for _ in range(THREADS)]
    acks: list[dict] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def decide(k: int) -> None:
        rng = random.Random(k)
        try:
            for _ in range(DECISIONS_PER_THREAD):
                item, status = rng.choice(items), rng.choice(["approved", "rejected"])
                sent = time.monotonic()
                message = clients[k].predict(f"ws-{item}", lams[item], "random", "random", None, "",
                                             api_name="/approve" if status == "approved" else "/reject")
                acked = time.monotonic()
                match = re.match(rf"Marked #{item} {status} \(decision #(\d+)\)", message)
                assert match, message
                with lock:
                    acks.append({"item": item, "status": status, "sent": sent, "acked": acked,
                                 "decision": int(match.group(1))})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=decide, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(acks) == THREADS * DECISIONS_PER_THREAD
    for item in items:
        history = query(ws, "SELECT batch_id, status FROM reviews WHERE augmentation_id = ? AND batch_id > ? "
                            "ORDER BY id", [item, before])
        mine = {a["decision"]: a for a in acks if a["item"] == item}
        assert len(history) == len(mine), f"#{item}: {len(mine)} decisions acknowledged, {len(history)} recorded"
        assert {b for b, _ in history} == set(mine)
        position = {batch: i for i, (batch, _) in enumerate(history)}
        for batch, status in history:
            assert mine[batch]["status"] == status
        for a in mine.values():  # acknowledged before another was sent: recorded before it
            for b in mine.values():
                if a["acked"] < b["sent"]:
                    assert position[a["decision"]] < position[b["decision"]], (item, a, b)
        assert status_of(ws, item) == history[-1][1]  # the final status is the last decision recorded


# ------------------------------------------------------------------------------------------------ item 5
def test_the_app_does_not_start_on_a_store_whose_manifest_is_gone(app, bulk, tmp_path):
    import shutil

    _, _, ws = app
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy)
    (copy / "manifest.sqlite").unlink()
    for extra in ("manifest.sqlite-wal", "manifest.sqlite-shm"):
        (copy / extra).unlink(missing_ok=True)
    before = sorted((p.relative_to(copy).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in copy.rglob("*"))
    result = subprocess.run([sys.executable, "app.py", *APP_ARGS, "--port", str(free_port()), "--workspace",
                             str(copy)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False"))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("[transformers]")]
    assert len(lines) == 1 and "holds images" in lines[0] and "restore the newest backup" in lines[0], result.stderr
    after = sorted((p.relative_to(copy).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in copy.rglob("*"))
    assert after == before


# ------------------------------------------------------------------------------------------------ item 9
def test_every_interactive_path_refuses_an_image_over_the_limit_fast(app, bulk, tmp_path):
    _, url, _ = app
    client = Client(url, verbose=False)
    big = flat_png(tmp_path / "big.png", 1200, 1000)  # 1.2 MP, over this app's 1 MP limit
    _, choices = augment(client, seed=2)
    rid = choices["result_id"]
    calls = {
        "/augment": (handle_file(str(big)), "random", "random", 0.2, 1, "random", None),
        "/augment fractal": (handle_file(str(EXAMPLE)), "random", "random", 0.2, 1, "random", handle_file(str(big))),
        "/remix": (rid, 0.3, "random", "random", handle_file(str(big))),
        "/approve": (rid, 0.3, "random", "random", handle_file(str(big)), "x"),
        "/download_final": (rid, 0.3, "random", "random", handle_file(str(big))),
    }
    for name, args in calls.items():
        started = time.perf_counter()
        with pytest.raises(Exception, match=r"1200x1000 = 1\.2 MP, over the 1 MP limit") as info:
            client.predict(*args, api_name=name.split()[0])
        assert time.perf_counter() - started < 5, name
        assert "--max-pixels" in str(info.value), name  # what to do
    n = bulk["huge"][0]  # a bulk run took it (the command line's limit is higher): shown only up to the limit
    refusal = rf"#{n} is {HUGE[1]}x{HUGE[0]}, over the 1 MP limit"
    for endpoint, args in (("/remix", (f"ws-{n}", 0.2, "random", "random", None)),
                           ("/download_final", (f"ws-{n}", 0.2, "random", "random", None))):
        with pytest.raises(Exception, match=refusal):
            client.predict(*args, api_name=endpoint)
    _, detail = raw_call(url, "view", n)  # the Curate detail view says so where it shows the item
    assert re.search(refusal, json.dumps(detail)), detail


def test_recent_results_and_stage_files_stay_within_their_byte_budgets(tmp_path):
    """Results are kept while their bytes fit (then the oldest go: re-mixing one says to generate again); stage
    files on disk stay under their budget."""
    from diffusemix_core.ui import AppConfig, build_app, launch_kwargs

    record_bytes = 384 * 256 * (3 * 5 + 1)  # the example's six stages (I, Î, H, F, A and the boolean mask M)
    config = AppConfig(model="tiny-random", workspace=tmp_path / "ws", resolution=64, steps=2, device="cpu",
                       result_cache_bytes=int(2.5 * record_bytes), stage_cache_bytes=1_000_000)
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    try:
        client = Client(url, verbose=False)
        # each answer's six files (1.8 MB) are more than the whole budget: they are still all served
        ids = [augment(client, seed=seed)[1]["result_id"] for seed in range(4)]
        for rid in ids[:2]:  # the oldest went first
            with pytest.raises(Exception, match="generate again"):
                client.predict(rid, 0.3, "random", "random", None, api_name="/remix")
        for rid in ids[2:]:
            client.predict(rid, 0.3, "random", "random", None, api_name="/remix")
        assert demo.studio.results.nbytes <= config.result_cache_bytes
        answer = 6 * (384 * 256 * 3 + 4096)  # the last answer's files, kept until the browser has them
        assert folder_bytes(demo.studio.files.root) <= config.stage_cache_bytes + answer  # ~7 MB were written in all
    finally:
        demo.close()


def vm_rss(pid: int) -> int:
    """Resident memory of a process in bytes (/proc/<pid>/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far, all its threads (/proc/<pid>/stat utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def test_a_huge_png_is_refused_in_milliseconds_and_memory_and_disk_stay_flat(tmp_path):
    """`python app.py` in a subprocess: six calls with a 7900x7900 PNG of ~200 KB, then a 12 MP image that is taken."""
    gradio_tmp = tmp_path / "gradio-tmp"
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_TEMP_DIR=str(gradio_tmp), GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen([sys.executable, "app.py", *APP_ARGS, "--port", str(port), "--workspace",
                               str(tmp_path / "ws")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "the app did not start"
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        client = Client(url, verbose=False)
        _, choices = augment(client, seed=1)  # the model is loaded: what follows is the requests' own cost
        rss_before, cpu_before = vm_rss(server.pid), cpu_seconds(server.pid)
        tmp_before = folder_bytes(gradio_tmp)
        rgb = flat_png(tmp_path / "huge.png", 7900, 7900)
        gray = flat_png(tmp_path / "huge-gray.png", 7900, 7900, mode="L")  # a mode Gradio would convert itself
        assert rgb.stat().st_size < 400_000
        rid = choices["result_id"]
        calls = [("/augment", (handle_file(str(rgb)), "random", "random", 0.2, 1, "random", None)),
                 ("/augment", (handle_file(str(gray)), "random", "random", 0.2, 1, "random", None)),
                 ("/augment", (handle_file(str(EXAMPLE)), "random", "random", 0.2, 1, "random", handle_file(str(rgb)))),
                 ("/remix", (rid, 0.5, "random", "random", handle_file(str(gray)))),
                 ("/approve", (rid, 0.5, "random", "random", handle_file(str(rgb)), "x")),
                 ("/download_final", (rid, 0.5, "random", "random", handle_file(str(gray))))]
        seconds = []
        for endpoint, args in calls:
            started = time.perf_counter()
            job = client.submit(*args, api_name=endpoint)
            with pytest.raises(Exception, match=r"7900x7900 = 62\.4 MP, over the 16 MP limit for interactive use"):
                job.result(timeout=60)
            seconds.append(time.perf_counter() - started)
        rss_after, cpu = vm_rss(server.pid), cpu_seconds(server.pid) - cpu_before
        tmp_after = folder_bytes(gradio_tmp)
        assert max(seconds) < 3, seconds
        assert cpu < 0.5 * len(calls), f"{cpu:.2f} s of CPU for six refusals"  # no pixel was decoded
        assert rss_after - rss_before < 150 * 1024**2, (rss_before, rss_after)
        assert tmp_after - tmp_before < 2 * 1024**2, (tmp_before, tmp_after)  # the two uploads, no stage files

        twelve = flat_png(tmp_path / "twelve.png", 4000, 3000)  # 12 MP: taken
        stages, choices = augment(client, seed=4, image=twelve)
        sides = [Image.open(p).size for p in stages]
        assert all(max(size) == 1024 for size in sides), sides  # display-sized
        full = client.predict(choices["result_id"], 0.2, "random", "random", None, api_name="/download_final")
        assert Image.open(full).size == (4000, 3000)
        stage_bytes = folder_bytes(gradio_tmp / "diffusemix-stages")
        print(f"\nRSS {rss_before / 2**20:.0f} MiB before the six 7900x7900 calls, {rss_after / 2**20:.0f} MiB after "
              f"({max(seconds) * 1000:.0f} ms the slowest, {cpu:.2f} s of server CPU); "
              f"{vm_rss(server.pid) / 2**20:.0f} MiB after the 12 MP image; temp folder "
              f"+{(tmp_after - tmp_before) / 2**20:.2f} MiB over the six calls; stage files "
              f"{stage_bytes / 2**20:.1f} MiB")
    finally:
        server.terminate()
        server.wait(timeout=30)


# ------------------------------------------------------------------------------------------------ item 10
def test_uploaded_zips_are_kept_once_listed_deleted_and_held_to_a_quota(app, tmp_path):
    _, url, ws = app
    client = Client(url, verbose=False)
    archive = dataset_zip(tmp_path / "pets.zip", {"cat": 2, "dog": 1}, seed=3)
    again = tmp_path / "pets (copy).zip"
    again.write_bytes(archive.read_bytes())
    handle, message = client.predict(handle_file(str(archive)), api_name="/extract_zip")
    assert message.startswith("Extracted 3 files") and handle.startswith("upload:")
    handle2, message2 = client.predict(handle_file(str(again)), api_name="/extract_zip")
    assert handle2 == handle and message2.startswith("Already uploaded"), message2
    upload_id = handle.split(":", 1)[1]
    assert sorted(p.name for p in (ws / "datasets").iterdir() if p.name.startswith(upload_id)) == [upload_id]
    table, summary = client.predict(api_name="/list_uploads")
    rows = [row for row in table["data"] if row[0] == upload_id]
    assert len(rows) == 1 and rows[0][1] == "pets.zip" and rows[0][3] == 3

    # over the quota (2 MB extracted): refused with what to do, nothing extracted
    bitmap = io.BytesIO()
    Image.new("RGB", (1000, 1000), (10, 20, 30)).save(bitmap, "BMP")  # 3 MB, deflates to almost nothing
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train/sky/0.bmp", bitmap.getvalue())
    count = len(list((ws / "datasets").iterdir()))
    with pytest.raises(Exception, match=r"over the quota of 2\.0 MB; delete datasets you no longer need"):
        client.predict(handle_file(str(big)), api_name="/extract_zip")
    assert len(list((ws / "datasets").iterdir())) == count

    assert "Deleted upload 'pets.zip'" in client.predict(upload_id, api_name="/delete_upload")
    assert not (ws / "datasets" / upload_id).exists()
    assert upload_id not in [row[0] for row in client.predict(api_name="/list_uploads")[0]["data"]]
    with pytest.raises(Exception, match="upload it again"):
        client.predict(handle, 1, 0, 0.2, 2, 64, 4, False, api_name="/run_dataset")


# ------------------------------------------------------------------------------------------------ item 12
def class_folder(folder: Path, n: int = 1, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_typed_folders_are_off_when_exposed_and_stay_inside_the_data_root(app, tmp_path):
    system = tmp_path / "system"  # stands for /usr: images nobody meant to share
    class_folder(system / "icons", 2, seed=1)
    root = tmp_path / "data"
    class_folder(root / "train" / "cat", 1, seed=2)
    (root / "escape").symlink_to(system, target_is_directory=True)  # a typed folder that resolves outside
    class_folder(root / "mixed" / "cat", 1, seed=3)
    (root / "mixed" / "icons").symlink_to(system / "icons", target_is_directory=True)  # a class folder outside
    run = lambda client, folder: client.predict(str(folder), 1, 0, 0.2, 2, 64, 4, False,  # noqa: E731
                                                api_name="/run_dataset")

    exposed, url, config = launch("--host", "0.0.0.0", "--workspace", tmp_path / "exposed")
    try:
        assert not config.local
        client = Client(url, verbose=False)
        for folder in (system, "/usr", root / "train"):
            with pytest.raises(Exception, match="Typed server folders are off"):
                run(client, folder)
        assert query(tmp_path / "exposed", "SELECT count(*) FROM sources") == [(0,)]
    finally:
        exposed.close()

    rooted, url, config = launch("--host", "0.0.0.0", "--data-root", root, "--workspace", tmp_path / "rooted")
    try:
        client = Client(url, verbose=False)
        for folder in (system, "/usr", root / "escape", root / "mixed", root / "train" / ".." / ".." / "system"):
            with pytest.raises(Exception, match="data root"):
                run(client, folder)
        text, info = run(client, root / "train")
        assert info["augmentations_added"] == 1, text
        sources = query(tmp_path / "rooted", "SELECT path FROM sources")
        assert sources == [("cat/0.png",)]  # nothing from outside the data root was read
    finally:
        rooted.close()

    _, url, ws = app  # on loopback, without --data-root, a typed folder is the local user's own business
    text, info = run(Client(url, verbose=False), class_folder(tmp_path / "local" / "owl", 1, seed=4).parent)
    assert info["augmentations_added"] == 1, text


# ------------------------------------------------------------------------------------------------ item 13
def test_only_export_zips_and_display_images_are_served(app, bulk):
    _, url, ws = app
    client = Client(url, verbose=False)

    def refused(path: Path) -> None:
        assert path.exists(), path
        response = httpx.get(f"{url}gradio_api/file={path}")
        assert response.status_code in (403, 404), (path, response.status_code, response.content[:16])

    refused(ws / "manifest.sqlite")  # as found: it was served, absolute server paths inside
    assert cli("review", "--workspace", ws, "--approve", "--label", "race").returncode == 0  # a bulk run + backup
    zip_path, _ = client.predict("approved", False, api_name="/export")
    assert zipfile.is_zipfile(zip_path)
    upload = next(p for p in (ws / "datasets").iterdir() if p.is_dir() and not p.name.startswith("."))
    for path in (sorted((ws / "backups").iterdir())[0], sorted((ws / "images").rglob("*.png"))[0], ws / ".lock",
                 ws / "datasets" / ".lock",
                 next(upload.rglob("upload.json")), next(upload.rglob("*.png")), ROOT / "app.py",
                 Path("/etc/hostname")):
        refused(path)
    # what an answer names is served: the export zip and the stage images
    _, answer = raw_call(url, "export", "approved", False)
    assert httpx.get(answer[0]["url"]).content[:2] == b"PK"
    _, stages = raw_call(url, "remix", f"ws-{bulk['race'][0]}", 0.3, "random", "random", None)
    assert httpx.get(stages[5]["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"


def raw_call(url: str, api_name: str, *data) -> tuple[str, object]:
    """One call as the HTTP API sends it: ("complete", the answer's data list) or ("error", the error payload)."""
    with httpx.Client(timeout=120) as http:
        event_id = http.post(f"{url}gradio_api/call/{api_name}", json={"data": list(data)}).json()["event_id"]
        text = http.get(f"{url}gradio_api/call/{api_name}/{event_id}").text
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", text, flags=re.M)
    kind, payload = events[-1]
    assert kind in ("complete", "error"), (api_name, text[:500])
    return kind, json.loads(payload)


def complete(url: str, api_name: str, *data):
    kind, payload = raw_call(url, api_name, *data)
    assert kind == "complete", (api_name, payload)
    return payload


def upload(url: str, path: Path) -> dict:
    with open(path, "rb") as f:
        server_path = httpx.post(f"{url}gradio_api/upload", files=[("files", (path.name, f))]).json()[0]
    return {"path": server_path, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def without_files(value):
    """An answer with its files (served URLs, fine to name) taken out."""
    if isinstance(value, dict):
        if value.get("meta", {}).get("_type") == "gradio.FileData":
            return "<file>"
        return {k: without_files(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_files(v) for v in value]
    return value


def test_no_answer_carries_a_server_path(app, bulk, tmp_path):
    """Every named endpoint of a session, with real inputs where it matters and its defaults otherwise; errors too."""
    from gradio.utils import get_upload_folder

    _, url, ws = app
    answers = {}
    example = upload(url, EXAMPLE)
    out = complete(url, "augment", example, "random", "random", 0.2, 5, "random", None)
    rid = out[6]["result_id"]
    answers["augment"] = out
    answers["remix"] = complete(url, "remix", rid, 0.4, "left", "random", None)
    answers["remix ws"] = complete(url, "remix", f"ws-{bulk['race'][1]}", 0.4, "left", "random", None)
    answers["approve"] = complete(url, "approve", rid, 0.4, "left", "random", None, "paths")
    answers["reject"] = complete(url, "reject", rid, 0.4, "left", "random", None, "paths")
    answers["approve ws"] = complete(url, "approve", f"ws-{bulk['race'][2]}", 0.4, "left", "random", None, "")
    answers["download_final"] = complete(url, "download_final", rid, 0.4, "left", "random", None)
    answers["all_prompts"] = complete(url, "all_prompts", example, "left", 0.2, 5)
    archive = dataset_zip(tmp_path / "paths.zip", {"owl": 1}, seed=8)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("train/owl/broken.png", b"\x89PNG\r\n\x1a\n not really")
    answers["extract_zip"] = complete(url, "extract_zip", upload(url, archive))
    handle = answers["extract_zip"][0]
    answers["run_dataset"] = complete(url, "run_dataset", handle, 1, 0, 0.2, 2, 64, 4, False)
    assert answers["run_dataset"][1]["images_failed"] == 1  # its reason is in the answer
    answers["view"] = complete(url, "view", bulk["race"][3])
    answers["export"] = complete(url, "export", "all", True)
    answers["download_prompts"] = complete(url, "download_prompts", "JSON")
    not_an_image = tmp_path / "photo.png"  # a PNG cut short: its header opens, its pixels do not
    not_an_image.write_bytes(EXAMPLE.read_bytes()[:2000])
    not_a_zip = tmp_path / "data.zip"
    not_a_zip.write_bytes(b"PK\x03\x04 truncated")
    errors = {
        "augment not an image": ("augment", upload(url, not_an_image), "random", "random", 0.2, 1, "random", None),
        "remix unknown": ("remix", "r-000000000000", 0.2, "random", "random", None),
        "remix unknown ws": ("remix", "ws-987654", 0.2, "random", "random", None),
        "view unknown": ("view", 987654),
        "extract not a zip": ("extract_zip", upload(url, not_a_zip)),
        "run unknown upload": ("run_dataset", "upload:0123456789abcdef", 1, 0, 0.2, 2, 64, 4, False),
        "run missing folder": ("run_dataset", "no/such/folder", 1, 0, 0.2, 2, 64, 4, False),
        "delete unknown upload": ("delete_upload", "0123456789abcdef"),
    }
    for name, (endpoint, *args) in errors.items():
        kind, answers[name] = raw_call(url, endpoint, *args)
        text = json.dumps(answers[name], ensure_ascii=False)
        assert len(text) > 40 and "null" not in text[:20], (name, text)  # a message, not a bare failure
    # every other named endpoint, with its defaults (the Curate tab's and any added later)
    info = httpx.get(f"{url}gradio_api/info").json()["named_endpoints"]
    called = {name.split()[0] for name in answers} | {args[0] for args in errors.values()}
    for name, endpoint in info.items():
        if name.lstrip("/") not in called:
            defaults = [p.get("parameter_default") for p in endpoint["parameters"]]
            answers[name] = raw_call(url, name.lstrip("/"), *defaults)[1]
    assert {"curate", "list_exports", "list_uploads", "get_prompts", "undo_review"} <= {n.lstrip("/") for n in answers}
    forbidden = {str(ws), str(ws.resolve()), str(ws.parent), str(ROOT), str(Path(get_upload_folder()).resolve()),
                 str(Path(tempfile.gettempdir()).resolve()) + "/", os.path.expanduser("~") + "/"}
    for name, answer in answers.items():
        text = json.dumps(without_files(answer), ensure_ascii=False)
        for path in forbidden:
            assert path not in text, f"{name} names {path}: {text[:400]}"


# ------------------------------------------------------------------------------------------------ issue 16, item 4
def start_app(*flags: str, env: dict | None = None, wait_s: float = 120) -> tuple[subprocess.Popen, Path]:
    """`python app.py FLAGS` in its own process, its stderr in a file; returns once it serves or has exited."""
    log = Path(tempfile.mkdtemp()) / "stderr.txt"
    port = flags[flags.index("--port") + 1]
    server = subprocess.Popen([sys.executable, "app.py", *APP_ARGS, *flags], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=open(log, "w"), env=dict(os.environ, HF_HUB_OFFLINE="1",
                                                               GRADIO_ANALYTICS_ENABLED="False", **(env or {})))
    deadline = time.monotonic() + wait_s
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    return server, log


def own_lines(stderr: str) -> list[str]:
    """stderr without the log lines of libraries (``WARNING diffusemix_core.engine…: …``, ``[transformers]``)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("[transformers]")
            and not re.match(r"(DEBUG|INFO|WARNING) diffusemix_core\.", line)]


def test_listening_beyond_loopback_without_a_login_is_refused_unless_said_explicitly(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    env.pop("SPACE_ID", None)
    env.pop("DIFFUSEMIX_AUTH", None)
    for flags, where in ((["--host", "0.0.0.0"], "--host 0.0.0.0 on port"), (["--share"], "a public gradio.live link (--share)")):
        port = str(free_port())
        result = subprocess.run([sys.executable, "app.py", *APP_ARGS, *flags, "--port", port, "--workspace",
                                 str(tmp_path / "ws")], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 1, result.stderr
        (line,) = own_lines(result.stderr)
        assert line.startswith(f"error: {where}") and "without a login" in line, line
        assert "add --auth user:pass" in line and "--no-auth-i-know" in line  # the remedy, and the explicit way
        assert not (tmp_path / "ws").exists()  # refused before anything was made

    port = str(free_port())
    server, log = start_app("--host", "0.0.0.0", "--no-auth-i-know", "--port", port, "--workspace", str(tmp_path / "a"))
    try:
        assert server.poll() is None, log.read_text()
        warnings = [line for line in own_lines(log.read_text()) if "without a login" in line]
        assert len(warnings) == 1 and warnings[0].startswith("WARNING diffusemix_studio: the app is reachable from "
                                                             "other machines without a login"), log.read_text()
        assert "add --auth user:pass" in warnings[0]
    finally:
        server.terminate()
        server.wait(timeout=30)

    port = str(free_port())  # with a login: no warning, and the API asks for it
    server, log = start_app("--host", "0.0.0.0", "--auth", "ann:secret", "--port", port, "--workspace",
                            str(tmp_path / "b"))
    try:
        assert server.poll() is None, log.read_text()
        assert "without a login" not in log.read_text()
        with pytest.raises(Exception):
            Client(f"http://127.0.0.1:{port}/", verbose=False)
        Client(f"http://127.0.0.1:{port}/", verbose=False, auth=("ann", "secret"))
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_who_can_reach_the_app_without_a_login(monkeypatch):
    from diffusemix_core.ui.config import exposure, parse_args

    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("DIFFUSEMIX_AUTH", raising=False)
    assert exposure(parse_args([])) is None  # loopback
    assert exposure(parse_args(["--host", "localhost"])) is None
    assert exposure(parse_args(["--host", "0.0.0.0", "--auth", "ann:secret"])) is None
    assert exposure(parse_args(["--share", "--auth", "ann:secret"])) is None
    for flags in (["--host", "0.0.0.0"], ["--host", "192.168.1.5"], ["--share"]):
        with pytest.raises(SystemExit, match="without a login"):
            exposure(parse_args(flags))
        assert "without a login" in exposure(parse_args([*flags, "--no-auth-i-know"]))
    monkeypatch.setenv("DIFFUSEMIX_AUTH", "ann:secret")  # the environment's login counts
    assert exposure(parse_args(["--host", "0.0.0.0"])) is None
    monkeypatch.delenv("DIFFUSEMIX_AUTH")
    monkeypatch.setenv("SPACE_ID", "someone/studio")  # a Space: the platform decides who opens it; still said
    warning = exposure(parse_args(["--host", "0.0.0.0"]))
    assert "Hugging Face Space someone/studio without --auth" in warning and "DIFFUSEMIX_AUTH" in warning


# ------------------------------------------------------------------------------------------------ issue 16, item 6
def test_a_port_in_use_is_one_line_with_the_remedy(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "app.py", *APP_ARGS, "--port", str(port), "--workspace",
                                 str(tmp_path / "ws")], cwd=ROOT, capture_output=True, text=True, timeout=180,
                                env=dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False"))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert own_lines(result.stderr) == [f"error: port {port} is in use on this machine (another program, or this "
                                        "app started twice); pass --port N with a free port, or stop what listens "
                                        "there."], result.stderr
