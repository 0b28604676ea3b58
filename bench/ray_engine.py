"""The Ray engine on this machine: its overhead against the local engine, and its scaling with generate actors.

    python -m bench.ray_engine [--images 480] [--size 96] [--latency-ms 60] [--batch-size 4] [--actors 1 2 4]

A generated dataset of photo-like PNGs (bench/workspace.py's, 3 classes), per-image 1, is augmented into fresh
workspaces with the same seed, around ``bench/standin.py``'s FixedLatencyGenerator: a stand-in that sleeps `latency`
per image (about what the real InstructPix2Pix takes per 512² image on one H100) and is NOT a model. Everything else
is the product's code: planning (read, hash, draw), decoding, mixing, drift, PNG encoding, fsync, SQLite, and, for the
Ray engine, Ray Data's plumbing (queue, read task, tasks, actor pool, object store, driver-side commit).

1. The same job on the local engine and on the Ray engine with one actor (one model each): both wall times and the
   Ray overhead share = (Ray wall − local wall) / Ray wall, once cold (the first Ray job: worker processes start and
   import the engine) and once warm (the cluster already up, as between jobs on a cluster); a check that the
   workspaces hold the same rows and stored bytes.
2. The Ray engine (warm) with 1, 2, 4 actors: throughput over the whole run and in the steady state (between the
   commits that pass 25% and 90% of the job). The stand-in sleeps, so actors are not CPU-bound and this measures
   Ray's plumbing; the CPU work per image (decode, mix, encode, commit) still shares this machine's cores.

A local Ray is started with ``--ray-cpus`` logical CPUs (default 8: the actors sleep, so a logical CPU each is
cheap) and a 512 MiB object store. Last line: ``ray_scaling_4_actors: X`` (steady-state throughput with 4 actors
over 1 actor; ideal 4.0).
"""

from __future__ import annotations

import argparse
import functools
import os
import sqlite3
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.standin import FixedLatencyGenerator
from bench.workspace import make_dataset


def run(train: Path, ws_path: Path, *, latency: float, batch_size: int, actors: int | None):
    """One run; actors None: the local engine. Returns (wall seconds, summary, commits [(seconds, done)])."""
    from diffusemix_core.bulk.options import AugmentOptions
    from diffusemix_core.bulk.runner import run_augment
    from diffusemix_core.engine.fractals import FractalLibrary
    from diffusemix_core.workspace.folder import Workspace

    started = time.perf_counter()
    commits: list[tuple[float, int]] = []

    def progress(report) -> None:
        if report.done:
            commits.append((time.perf_counter() - started, report.done))

    options = AugmentOptions(per_image=1, batch_size=batch_size, seed=0)
    common = dict(fractals=FractalLibrary.default(), progress=progress)
    if actors is None:
        summary = run_augment(Workspace(ws_path), train, options, generator=FixedLatencyGenerator(latency), **common)
    else:
        options = AugmentOptions(per_image=1, batch_size=batch_size, seed=0, runner="ray", workers=actors,
                                 cpus_per_worker=1)
        summary = run_augment(Workspace(ws_path), train, options,
                              generator_factory=functools.partial(FixedLatencyGenerator, latency), **common)
    return time.perf_counter() - started, summary, commits


def steady_rate(commits: list[tuple[float, int]]) -> float:
    """Augmentations per second between the commits that pass 25% and 90% of the job: start-up (and batches that
    pile up while the last workers start) and the final drain are left out."""
    total = commits[-1][1]
    t0, n0 = next((t, n) for t, n in commits if n >= 0.25 * total)
    t1, n1 = next((t, n) for t, n in commits if n >= 0.9 * total)
    return (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")


def rows(ws: Path) -> list[tuple]:
    with sqlite3.connect(ws / "manifest.sqlite") as conn:
        found = conn.execute(
            "SELECT s.path, a.job_key, a.prompt, a.mask, a.fractal, a.lam, a.seed, g.path, a.fractal_path, a.drift "
            "FROM augmentations a JOIN sources s ON s.id = a.source_id JOIN generations g ON g.id = a.generation_id "
            "ORDER BY a.id").fetchall()
    conn.close()
    files = sorted((p.relative_to(ws).as_posix(), p.read_bytes()) for p in (ws / "images").rglob("*.png"))
    return found + files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=480, help="dataset size (default 480)")
    parser.add_argument("--size", type=int, default=96, help="side of each square source (default 96)")
    parser.add_argument("--latency-ms", type=float, default=60.0, help="stand-in model time per image (default 60)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per batch (default 4)")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4], help="actor counts (default 1 2 4)")
    parser.add_argument("--ray-cpus", type=int, default=8, help="logical CPUs of the local Ray (default 8)")
    args = parser.parse_args()
    latency = args.latency_ms / 1000

    import ray

    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, object_store_memory=512 * 2**20,
             logging_level="warning", log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            train = Path(tmp) / "train"
            make_dataset(train, args.images, args.size)
            print(f"dataset: {args.images} photo-like {args.size}x{args.size} PNGs, 3 classes, per-image 1; stand-in "
                  f"model {args.latency_ms:.0f} ms per image (sleeps), batch {args.batch_size}; {os.cpu_count()} CPUs, "
                  f"local Ray {ray.__version__} with {args.ray_cpus} logical CPUs")
            local_wall, local, local_commits = run(train, Path(tmp) / "local", latency=latency,
                                                   batch_size=args.batch_size, actors=None)
            n = local.augmentations_added
            print(f"local engine:          {local_wall:6.2f} s wall, {n / local_wall:5.2f} augmentations/s; first "
                  f"commit after {local_commits[0][0]:.2f} s, steady {steady_rate(local_commits):5.2f}/s "
                  f"(ideal {1 / latency:.1f})")
            first = args.actors[0]
            cold_wall, _, cold_commits = run(train, Path(tmp) / "ray-cold", latency=latency,
                                             batch_size=args.batch_size, actors=first)
            print(f"ray, {first} actor(s), cold: {cold_wall:6.2f} s wall, {n / cold_wall:5.2f} augmentations/s; first "
                  f"commit after {cold_commits[0][0]:.2f} s (Ray's worker processes start and import the engine)")
            results = {}
            for actors in args.actors:  # the cluster is warm now, as a cluster is between jobs
                wall, summary, commits = run(train, Path(tmp) / f"ray{actors}", latency=latency,
                                             batch_size=args.batch_size, actors=actors)
                results[actors] = (wall, commits)
                driver = summary.stage_cpu_seconds
                assert summary.augmentations_added == n, (summary.augmentations_added, n)
                print(f"ray, {actors} actor(s), warm: {wall:6.2f} s wall, {n / wall:5.2f} augmentations/s; first "
                      f"commit after {commits[0][0]:.2f} s, steady {steady_rate(commits):5.2f}/s "
                      f"(ideal {actors / latency:.1f})")
            same = rows(Path(tmp) / "local") == rows(Path(tmp) / f"ray{first}") == rows(Path(tmp) / "ray-cold")
            print(f"same rows and stored bytes (local vs ray): {same}")
            one_wall, one_commits = results[first]
            overhead = (one_wall - local_wall) / one_wall
            cold_overhead = (cold_wall - local_wall) / cold_wall
            steady = 1 - steady_rate(one_commits) / steady_rate(local_commits)
            print(f"ray overhead ({first} actor vs the local engine, one model each): {overhead:.3f} of the Ray run's "
                  f"wall time on a warm cluster ({cold_overhead:.3f} cold); steady-state rate {100 * steady:+.1f}% "
                  "below the local engine's")
            base = steady_rate(one_commits)
            for actors in args.actors:
                wall, commits = results[actors]
                print(f"scaling, {actors} actor(s): {steady_rate(commits) / base:.2f}x steady-state, "
                      f"{one_wall / wall:.2f}x whole run")
            plan_ms, commit_ms = (1000 * driver.get(stage, 0.0) / n for stage in ("plan", "commit"))
            print(f"the driver's CPU per augmentation ({args.actors[-1]} actors): plan {plan_ms:.2f} ms, commit "
                  f"{commit_ms:.2f} ms (fsync waits not counted): one driver commits at most about "
                  f"{1000 / (plan_ms + commit_ms):.0f} augmentations/s on this machine")
            print(f"ray_overhead_share_cold: {cold_overhead:.4f}")
            print(f"ray_overhead_share: {overhead:.4f}")
            last = args.actors[-1]
            print(f"ray_scaling_{last}_actors: {steady_rate(results[last][1]) / base:.2f}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
