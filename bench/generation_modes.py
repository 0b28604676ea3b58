"""What each generation mode costs: UNet evaluations and wall seconds per augmentation, against ``reference``.

    python -m bench.generation --modes                                  # random-full at 256² on this CPU
    python -m bench.generation --modes --device cuda --dtype float16 --resolution 512 --compile-rows   # on a GPU

Modes: the presets ``reference`` (Euler-a, 20 steps, 3 guidance branches: 60 evaluations), ``fast`` and
``fastest`` (engine/presets.py), ``two-branch`` (reference with image guidance 1.0: the exact 2-branch case) and
``caching-N`` (reference with feature caching every N steps; compared with the same steps without it, i.e.
reference). Every mode generates the same sources, prompts and seeds on the same loaded model (``random-full``:
the real SD-1.5 InstructPix2Pix architecture with random weights, so the arithmetic is the real model's). Rounds
alternate the modes (``--repeats R``) and each mode keeps its best round, so a busy machine biases no mode.
On a GPU ``--compile-rows`` adds each preset with ``torch.compile`` (caching runs the eager UNet).

Prints one row per mode (evaluations per augmentation, of which deep, seconds per augmentation, both as ratios to
reference) and as the last line ``fastest_vs_reference_unet_evals: X``.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from diffusemix_core.engine.generation import GenerationRequest, GenerationSettings
from diffusemix_core.engine.pix2pix import Pix2PixGenerator
from diffusemix_core.engine.presets import apply_preset

TEMPLATE = "A transformed version of image into {prompt}"
PROMPTS = ("autumn", "snowy", "sunset", "watercolor art")


def modes(base: GenerationSettings, interval: int, compile_rows: bool) -> dict[str, GenerationSettings]:
    out = {name: apply_preset(name, base) for name in ("reference", "fast", "fastest")}
    out["two-branch"] = dataclasses.replace(out["reference"], image_guidance_scale=1.0)
    out[f"caching-{interval}"] = dataclasses.replace(out["reference"], cache_interval=interval)
    if compile_rows:
        out.update({f"{name}+compile": dataclasses.replace(out[name], compile=True)
                    for name in ("reference", "fast", "fastest")})
    return out


def run(args, make_sources, sync) -> int:
    base = GenerationSettings(model=args.model or "random-full", resolution=args.resolution, device=args.device,
                              dtype=args.dtype)
    table = modes(base, args.cache_interval, args.compile_rows)
    sources = make_sources(args.images, args.resolution, args.resolution)
    requests = [GenerationRequest(img, f"s{i}", TEMPLATE.format(prompt=PROMPTS[i % len(PROMPTS)]), seed=i)
                for i, img in enumerate(sources)]
    generators = {name: Pix2PixGenerator(settings) for name, settings in table.items()}
    for gen in generators.values():
        gen.load()  # one shared pipeline; the compile rows get their own wrapper
    device = next(iter(generators.values())).device
    warm = dataclasses.replace(base, steps=1)
    Pix2PixGenerator(warm).generate(requests[:1])  # first-call allocations outside every timing
    for name in table:
        if name.endswith("+compile"):
            generators[name].generate(requests, batch_size=len(requests))  # compiles at this shape
    best: dict[str, float] = {}
    rows: dict[str, tuple[int, int]] = {}
    for _ in range(args.repeats):
        for name, gen in generators.items():
            gen.clear_caches()
            before = dict(gen.counters)
            sync(device)
            start = time.perf_counter()
            gen.generate(requests, batch_size=len(requests))
            sync(device)
            seconds = (time.perf_counter() - start) / len(requests)
            best[name] = min(best.get(name, float("inf")), seconds)
            evals = (gen.counters["unet_rows"] - before["unet_rows"]) // len(requests)
            shallow = (gen.counters["unet_shallow_rows"] - before["unet_shallow_rows"]) // len(requests)
            rows[name] = (evals, evals - shallow)
    name0 = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{base.model} | {name0} | {next(iter(generators.values())).dtype} | {args.resolution}² | "
          f"{args.images} images per round, best of {args.repeats}")
    ref_evals, ref_seconds = rows["reference"][0], best["reference"]
    for name, settings in table.items():
        evals, deep = rows[name]
        assert evals == settings.unet_evaluations() and deep == settings.deep_evaluations(), name
        print(f"{name:18} | {settings.scheduler:7} {settings.steps:2d} steps | {evals:3d} UNet evals "
              f"({evals / ref_evals:.3f}) | {deep:3d} deep | {best[name]:7.2f} s/augmentation "
              f"({best[name] / ref_seconds:.3f}) | {ref_seconds / best[name]:.2f}x faster")
    print(f"fastest_vs_reference_unet_evals: {rows['fastest'][0] / ref_evals:.4f}")
    return 0
