"""Generation throughput: the batched, cached engine (Pix2PixGenerator) versus one stock pipeline call per
(image, prompt), the way the authors' public code runs InstructPix2Pix.

    python -m bench.generation                       # tiny-random on CPU (+ random-full fp16 at 512 on a GPU)
    python -m bench.generation --images 8 --prompts 9 --model random-full --dtype float16 --batch-size 8
    python -m bench.generation --model random-full --flops-only --steps 1 --source-size 512x512   # FLOPs only
    python -m bench.generation --sweep --model random-full --dtype float16      # on a GPU: the throughput table
    python -m bench.generation --modes --images 2 --repeats 2 --threads 2       # presets, 2 branches, caching

``--sweep`` measures the engine alone, as a bulk run uses it, at 512² and 256², batch 1/4/8/16, without and with
``--compile``: images/s, achieved TFLOP/s (the model FLOPs of one augmentation × images/s), the share of the card's
dense fp16 peak (from a table of common cards) and of the matmul peak measured on the card itself. Last line
``best_share_of_peak: X``. On a CPU it runs too (slowly, e.g. with tiny-random), to check the script.

Run from the repository root with the package importable (``pip install -e .`` or ``PYTHONPATH=.``). On a
small shared CPU, ``--threads 1`` avoids thread oversubscription (2 threads on a busy 2-core machine ran 16x
slower here). ``--repeats R`` alternates R timed rounds of both sides and keeps the best of each.

For each configuration it prints images/s for both, the text-encoder / VAE-encode / UNet / VAE-decode
invocations of both (counted with forward hooks on the modules), the model FLOPs of one augmentation counted
with torch.utils.flop_counter.FlopCounterMode (and the UNet's share), on CUDA the achieved TFLOP/s, and as the
last line ``speedup_vs_reference: X`` (engine images/s / reference images/s; the last configuration run).
Both sides get the same images already at the working size's aspect, the same prompts, seeds and settings,
and both return Î resized back to the source size.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from diffusemix_core.engine.generation import GenerationRequest, GenerationSettings
from diffusemix_core.engine.pix2pix import COUNTER_NAMES, Pix2PixGenerator

log = logging.getLogger("bench.generation")
PROMPTS = ("autumn", "snowy", "sunset", "watercolor art", "rainbow", "aurora", "mosaic", "ukiyo-e",
           "a sketch with crayon")
TEMPLATE = "A transformed version of image into {prompt}"


@dataclass
class Config:
    model: str
    resolution: int
    steps: int
    device: str
    dtype: str
    batch_size: int


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=4, help="N source images (default 4)")
    p.add_argument("--prompts", type=int, default=3, help="k prompts per image (default 3, at most 9)")
    p.add_argument("--resolution", type=int, default=512, help="working resolution, long side (default 512)")
    p.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    p.add_argument("--model", default=None, help="model (default tiny-random; plus random-full fp16 on a GPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default auto)")
    p.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16 (default auto)")
    p.add_argument("--batch-size", type=int, default=4, help="engine batch size (default 4)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--source-size", default=None, metavar="HxW",
                   help="source image size (default: 4:3 landscape, long side = --resolution)")
    p.add_argument("--repeats", type=int, default=1, help="timed rounds, alternating; best kept (default 1)")
    p.add_argument("--flops-only", action="store_true", help="only count the FLOPs of one augmentation")
    p.add_argument("--sweep", action="store_true",
                   help="throughput table: resolutions 512/256 x batch 1/4/8/16 x compile off/on (see above)")
    p.add_argument("--sweep-resolutions", default="512,256", help="resolutions of --sweep (default 512,256)")
    p.add_argument("--sweep-batches", default="1,4,8,16", help="batch sizes of --sweep (default 1,4,8,16)")
    p.add_argument("--no-compile", action="store_true", help="--sweep without the torch.compile rows")
    p.add_argument("--modes", action="store_true",
                   help="cost of each preset, the exact 2-branch case and feature caching (bench/generation_modes.py)")
    p.add_argument("--cache-interval", type=int, default=3, help="feature-caching interval of --modes (default 3)")
    p.add_argument("--compile-rows", action="store_true", help="--modes with torch.compile rows (a GPU)")
    return p.parse_args(argv)


def make_sources(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth synthetic photos (seeded low-frequency noise, upsampled)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
        out.append(np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC)))
    return out


class CallCounter:
    """Counts forward calls of the pipeline's text encoder, VAE encoder/decoder and UNet with hooks."""

    def __init__(self, pipe) -> None:
        modules = {"text_encoder": pipe.text_encoder, "vae_encode": pipe.vae.encoder, "unet": pipe.unet,
                   "vae_decode": pipe.vae.decoder}
        self.counts = dict.fromkeys(COUNTER_NAMES, 0)
        self._handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(module, args):
            self.counts[name] += 1
        return hook

    def reset(self) -> None:
        self.counts = dict.fromkeys(COUNTER_NAMES, 0)

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_generate(pipe, settings: GenerationSettings, request: GenerationRequest, size) -> np.ndarray:
    """The authors' way: one stock pipeline call per (image, prompt), Î resized back to the source."""
    h, w = request.image.shape[:2]
    working = Image.fromarray(request.image).resize((size[1], size[0]), Image.LANCZOS)
    out = pipe(
        prompt=request.prompt_text, image=working, num_inference_steps=settings.steps,
        guidance_scale=settings.guidance_scale, image_guidance_scale=settings.image_guidance_scale,
        generator=torch.Generator("cpu").manual_seed(request.seed), output_type="np",
    ).images[0]
    image = Image.fromarray((out * 255).round().astype(np.uint8))
    return np.asarray(image.resize((w, h), Image.LANCZOS))


def fmt_flops(flops: float) -> str:
    return f"{flops / 1e12:.3f} TFLOP" if flops >= 1e11 else f"{flops / 1e9:.2f} GFLOP"


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


# torch's FLOP counter knows the CUDA attention kernels but not the one CPU sdpa dispatches to: without this the
# attention matmuls (about 15% of the full-size UNet at 512²) would be missing from CPU counts.
_CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def count_flops(gen: Pix2PixGenerator, request: GenerationRequest) -> tuple[int, dict[str, int]]:
    """FLOPs of one cold augmentation (prompt + empty prompt encoded, image encoded, all steps, decode)."""
    gen.clear_caches()
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        gen.generate([request], batch_size=1)
    by_module = counter.get_flop_counts()
    parts = {name: int(sum(by_module.get(key, {}).values())) for name, key in
             (("text_encoder", "CLIPTextModel"), ("vae_encode", "Encoder"), ("unet", "UNet2DConditionModel"),
              ("vae_decode", "Decoder"))}
    return int(counter.get_total_flops()), parts


def run_config(cfg: Config, n_images: int, n_prompts: int, flops_only: bool, repeats: int = 1,
               source_size: tuple[int, int] | None = None) -> float | None:
    settings = GenerationSettings(model=cfg.model, steps=cfg.steps, resolution=cfg.resolution,
                                  device=cfg.device, dtype=cfg.dtype)
    t0 = time.perf_counter()
    gen = Pix2PixGenerator(settings)
    gen.load()
    pipe = gen.pipeline
    device = gen.device
    print(f"== model {cfg.model} | device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'})"
          f" | dtype {gen.dtype} | resolution {cfg.resolution} | steps {cfg.steps} | load {time.perf_counter() - t0:.1f} s")
    src_h, src_w = source_size or ((cfg.resolution * 3) // 4, cfg.resolution)  # default: 4:3 landscape
    size = gen.working_size(src_h, src_w)
    sources = make_sources(n_images + 1, src_h, src_w)
    prompts = [TEMPLATE.format(prompt=p) for p in PROMPTS[:n_prompts]]
    requests = [GenerationRequest(img, f"src{i}", text, seed=1000 * i + j)
                for i, img in enumerate(sources[:n_images]) for j, text in enumerate(prompts)]
    warm = GenerationRequest(sources[-1], "warm-up", "A transformed version of image into warm-up", seed=1)

    flops, parts = count_flops(gen, warm)
    per_step_unet = parts["unet"] / cfg.steps
    print(f"flops_per_augmentation: {fmt_flops(flops)} ({size[0]}x{size[1]}, {cfg.steps} steps, cold caches)")
    print("flops_breakdown: " + ", ".join(f"{k} {fmt_flops(v)}" for k, v in parts.items())
          + f" | unet share {parts['unet'] / max(flops, 1):.1%} | unet per step {fmt_flops(per_step_unet)}")
    if cfg.steps != 20:
        est = flops - parts["unet"] + per_step_unet * 20
        print(f"flops_per_augmentation_at_20_steps (extrapolated): {fmt_flops(est)}")
    if flops_only:
        return None

    hooks = CallCounter(pipe)
    ref_times, eng_times = [], []
    try:
        # warm-up both paths once (kernels, allocator); each timed round then starts with cold caches
        reference_generate(pipe, settings, warm, size)
        gen.generate([warm])
        for _ in range(repeats):  # alternate the two, keep the best round of each (the machine may be shared)
            hooks.reset()
            sync(device)
            t = time.perf_counter()
            for r in requests:
                reference_generate(pipe, settings, r, size)
            sync(device)
            ref_times.append(time.perf_counter() - t)
            ref_counts = dict(hooks.counts)

            gen.clear_caches()
            for k in gen.counters:
                gen.counters[k] = 0
            hooks.reset()
            sync(device)
            t = time.perf_counter()
            gen.generate(requests, batch_size=cfg.batch_size)
            sync(device)
            eng_times.append(time.perf_counter() - t)
            eng_counts = dict(hooks.counts)
    finally:
        hooks.close()
    ref_s, eng_s = min(ref_times), min(eng_times)
    if eng_counts != gen.counters:
        log.warning("engine counters %s differ from the hook counts %s", gen.counters, eng_counts)

    n = len(requests)
    ref_ips, eng_ips = n / ref_s, n / eng_s
    print(f"workload: {n_images} images x {n_prompts} prompts = {n} augmentations, engine batch size {cfg.batch_size}")
    for name, counts, secs, ips in (("reference", ref_counts, ref_s, ref_ips), ("engine", eng_counts, eng_s, eng_ips)):
        print(f"{name}: {ips:.3f} images/s ({secs:.2f} s, best of {repeats}) | invocations: "
              + ", ".join(f"{k} {counts[k]}" for k in COUNTER_NAMES))
        if device.type == "cuda":
            print(f"{name}_achieved: {flops * ips / 1e12:.1f} TFLOP/s (model FLOPs of one cold augmentation x images/s)")
    speedup = eng_ips / ref_ips
    print(f"speedup_vs_reference[{cfg.model}]: {speedup:.2f}")
    return speedup


# Dense (no sparsity) fp16/bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets; matched by name.
PEAK_FP16_TFLOPS = {
    "H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0,
    "H100": 756.0, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0, "V100": 125.0, "T4": 65.0,
}


def card_peak(name: str) -> float | None:
    """The table's dense fp16 peak for a device name (the longest matching key wins)."""
    matches = [key for key in PEAK_FP16_TFLOPS if key.lower() in name.lower()]
    return PEAK_FP16_TFLOPS[max(matches, key=len)] if matches else None


def measured_matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 8192, repeats: int = 20) -> float:
    """TFLOP/s of an n×n×n matmul on `device` (best of `repeats` after a warm-up): what the card really does."""
    if device.type != "cuda":
        n, repeats = 1024, 3
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e12


def sweep(args) -> int:
    """The throughput table (see the module docstring)."""
    resolutions = [int(r) for r in args.sweep_resolutions.split(",")]
    batches = [int(b) for b in args.sweep_batches.split(",")]
    model = args.model or "random-full"
    flops_at: dict[int, int] = {}  # counted without compilation (the FLOP counter does not see compiled kernels)
    best_share = 0.0
    for compile_ in ([False] if args.no_compile else [False, True]):
        for resolution in resolutions:
            settings = GenerationSettings(model=model, steps=args.steps, resolution=resolution, device=args.device,
                                          dtype=args.dtype, compile=compile_)
            gen = Pix2PixGenerator(settings)
            gen.load()
            device = gen.device
            name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
            peak = card_peak(name)
            measured = measured_matmul_peak(device, gen.dtype)
            sources = make_sources(max(batches) * 2 + 1, resolution, resolution)
            warm = GenerationRequest(sources[-1], "warm", TEMPLATE.format(prompt="warm"), seed=1)
            if resolution not in flops_at:
                flops_at[resolution] = count_flops(gen, warm)[0]
            flops = flops_at[resolution]
            for batch in batches:
                requests = [GenerationRequest(img, f"s{resolution}-{i}", TEMPLATE.format(prompt=PROMPTS[i % 9]),
                                              seed=i) for i, img in enumerate(sources[: 2 * batch])]
                gen.generate(requests[:batch], batch_size=batch)  # warm-up (and compilation) at this shape
                gen.clear_caches()
                sync(device)
                t = time.perf_counter()
                gen.generate(requests, batch_size=batch)  # two batches, cold caches: as a bulk run sees them
                sync(device)
                ips = len(requests) / (time.perf_counter() - t)
                achieved = flops * ips / 1e12
                share = achieved / peak if peak else None
                best_share = max(best_share, share or 0.0)
                print(f"{name} | {model} {gen.dtype} | {resolution}² | batch {batch:2d} | compile {str(compile_):5} | "
                      f"{ips:7.2f} images/s | {achieved:7.1f} TFLOP/s | "
                      f"{'n/a' if share is None else f'{share:.1%}'} of the card's dense fp16 peak"
                      f" ({peak or 'unknown'}) | {achieved / measured:.1%} of the measured matmul peak "
                      f"({measured:.0f} TFLOP/s)")
    print(f"best_share_of_peak: {best_share:.3f}")
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not 1 <= args.prompts <= len(PROMPTS) or args.images < 1 or args.repeats < 1:
        print(f"--images and --repeats must be >= 1 and --prompts from 1 to {len(PROMPTS)}", file=sys.stderr)
        return 2
    if args.sweep:
        return sweep(args)
    if args.modes:
        from bench.generation_modes import run as run_modes

        if args.model is None and args.resolution == 512 and not torch.cuda.is_available():
            args.resolution = 256  # the CPU default of --modes: random-full at 256²
        return run_modes(args, make_sources, sync)
    source_size = None
    if args.source_size:
        try:
            source_size = tuple(int(v) for v in args.source_size.lower().split("x"))
            assert len(source_size) == 2 and min(source_size) > 0
        except (ValueError, AssertionError):
            print(f"--source-size must look like 512x384, not {args.source_size!r}", file=sys.stderr)
            return 2
    configs = [Config(args.model or "tiny-random", args.resolution, args.steps, args.device, args.dtype,
                      args.batch_size)]
    if args.model is None and torch.cuda.is_available():
        configs.append(Config("random-full", 512, args.steps, "cuda", "float16", args.batch_size))
    speedup = None
    for cfg in configs:
        speedup = run_config(cfg, args.images, args.prompts, args.flops_only, args.repeats, source_size)
    if speedup is not None:
        print(f"speedup_vs_reference: {speedup:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
