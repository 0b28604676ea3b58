"""Cost of curation: label-consistency scoring (CLIP) and quality flags, next to the cost of generating an image.

    python -m bench.score [--images 64] [--size 512x512] [--classes 10] [--batch-size 32] [--repeats 3]
    python -m bench.score --no-b32-throughput        # skip timing the full-size random-weight ViT-B/32
    python -m bench.score --threads 0                # torch's own thread count (default 1, see --help)

Run from the repository root (``PYTHONPATH=.`` or an installed package); nothing is downloaded.

1. Throughput of ``LabelScorer.score`` on ``tiny-random-clip`` (images/s, best of ``--repeats`` after a warm-up
   that fills the text-embedding cache): the model is tiny, so this is the scorer's own overhead (PIL
   preprocessing to 224², batching, softmax), which is the same for the real model; the preprocessing alone is
   timed too. Then ``quality.flags`` per image and ``quality.flag_group`` over 9 images (one source, 9 prompts).
2. The FLOPs of scoring one image with CLIP ViT-B/32, counted with ``torch.utils.flop_counter.FlopCounterMode`` on
   a random-weight ``CLIPModel`` built offline from the configuration of ``openai/clip-vit-base-patch32`` (same
   architecture: ViT-B/32 vision tower 12 x 768, text tower 12 x 512, projections 512), next to the generator's
   51.9 TFLOP per augmentation (512², 20 steps; README, from ``python -m bench.generation --model random-full
   --flops-only --steps 1 --source-size 512x512``: 6.07 TFLOP at 1 step, UNet 2.41 TFLOP per step). The class
   names' text embeddings cost once per class list and are reported separately.
3. Unless ``--no-b32-throughput``: ``LabelScorer`` images/s on that random-weight ViT-B/32, saved to a temporary
   folder and loaded the way a downloaded snapshot is (float16 on CUDA when there is one).

Last line: ``scorer_flops_share: X``, the image-side FLOPs of scoring one image over the generator's FLOPs of one
augmentation (target: under 0.01, i.e. 1%).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from PIL import Image

GENERATOR_TFLOP_PER_AUGMENTATION = 51.9  # README: random-full, 512², 20 steps
TEXT_TOKENS = 16  # a representative padded length of "a photo of a {name}." in CLIP's BPE


def make_images(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth, photo-like images (seeded low-frequency noise, upsampled, plus a little pixel noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))
        out.append(np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8))
    return out


def best_seconds(run, repeats: int) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def clip_b32_config():
    """The configuration of openai/clip-vit-base-patch32, written out (no download)."""
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=32, hidden_act="quick_gelu"),
        projection_dim=512,
        logit_scale_init_value=2.6592,
    )


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def count_b32_flops(model) -> tuple[int, int]:
    """(FLOPs of one image's embedding, FLOPs of one text's embedding at TEXT_TOKENS tokens)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    # the CPU attention kernel is unknown to the counter (as in bench.generation): count it like sdpa
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with torch.inference_mode():
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            model.get_image_features(pixel_values=torch.zeros(1, 3, 224, 224))
        image_flops = counter.get_total_flops()
        ids = torch.full((1, TEXT_TOKENS), 320)
        ids[0, 0], ids[0, -1] = 49406, 49407
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            model.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids))
        text_flops = counter.get_total_flops()
    return int(image_flops), int(text_flops)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images per timed run (default 64)")
    parser.add_argument("--size", default="512x512", metavar="HxW", help="image size (default 512x512)")
    parser.add_argument("--classes", type=int, default=10, help="class names in the softmax (default 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="scorer batch size (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best counts (default 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a busy 2-core machine 2 threads ran 30x slower)")
    parser.add_argument("--generator-tflops", type=float, default=GENERATOR_TFLOP_PER_AUGMENTATION,
                        help=f"generator TFLOP per augmentation (default {GENERATOR_TFLOP_PER_AUGMENTATION}, README)")
    parser.add_argument("--no-b32-throughput", action="store_true",
                        help="do not time the full-size random-weight ViT-B/32")
    args = parser.parse_args(argv)
    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
        assert height > 0 and width > 0 and args.images > 0 and args.classes > 1 and args.repeats > 0
    except (ValueError, AssertionError):
        print("--size must look like 512x384; --images, --repeats >= 1; --classes >= 2", file=sys.stderr)
        raise SystemExit(2)

    import torch

    from diffusemix_core.curation import quality
    from diffusemix_core.engine.test_models import tiny_tokenizer
    from diffusemix_core.curation.label_scorer import DEFAULT_TEMPLATES, LabelScorer

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    images = make_images(args.images, height, width)
    names = [f"class {i}" for i in range(args.classes)]
    true = [names[i % len(names)] for i in range(len(images))]
    print(f"{args.images} images of {height}x{width}, {args.classes} classes, {len(DEFAULT_TEMPLATES)} templates, "
          f"batch {args.batch_size}, best of {args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, Python {platform.python_version()}, {os.cpu_count()} CPUs")

    # 1. the scorer's own overhead, on the tiny model, and the quality flags
    tiny = LabelScorer("tiny-random-clip", device="cpu", batch_size=args.batch_size)
    t0 = time.perf_counter()
    tiny.load()
    load_s = time.perf_counter() - t0
    score_s = best_seconds(lambda: tiny.score(images, true, names), args.repeats)
    processor = tiny._parts.image_processor
    prep_s = best_seconds(lambda: [processor(images=images[i:i + args.batch_size], return_tensors="pt")
                                   for i in range(0, len(images), args.batch_size)], args.repeats)
    print(f"tiny-random-clip (cpu): {len(images) / score_s:.1f} images/s ({1e3 * score_s / len(images):.2f} ms per "
          f"image; the PIL preprocessing to 224² alone, timed apart: {1e3 * prep_s / len(images):.2f} ms per image); "
          f"load {load_s:.1f} s")
    flags_s = best_seconds(lambda: [quality.flags(im) for im in images], args.repeats)
    group = images[:9]
    group_s = best_seconds(lambda: quality.flag_group(group), args.repeats)
    print(f"quality.flags: {len(images) / flags_s:.0f} images/s ({1e3 * flags_s / len(images):.2f} ms per image); "
          f"quality.flag_group of 9 (one source x 9 prompts): {1e3 * group_s:.1f} ms")

    # 2. FLOPs of CLIP ViT-B/32 per image, against the generator's per augmentation
    from transformers import CLIPImageProcessorPil, CLIPModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        b32 = CLIPModel(clip_b32_config()).eval()
    params = sum(p.numel() for p in b32.parameters())
    image_flops, text_flops = count_b32_flops(b32)
    share = image_flops / (args.generator_tflops * 1e12)
    per_class = text_flops * len(DEFAULT_TEMPLATES)
    print(f"clip_vit_b32: {params / 1e6:.1f} M parameters (openai/clip-vit-base-patch32: 151.3 M)")
    print(f"flops_per_image: {image_flops / 1e9:.2f} GFLOP (vision tower + projection, 224²)")
    print(f"flops_per_class_name: {per_class / 1e9:.3f} GFLOP ({len(DEFAULT_TEMPLATES)} templates x {TEXT_TOKENS} "
          f"tokens; once per class list)")
    print(f"generator: {args.generator_tflops:.1f} TFLOP per augmentation (512², 20 steps) -> scoring one image "
          f"costs {share:.4%} of generating it; scoring both Î and A, {2 * share:.4%}")

    # 3. the full-size architecture through LabelScorer (loaded from a folder like a downloaded snapshot)
    if not args.no_b32_throughput:
        with tempfile.TemporaryDirectory(prefix="bench-clip-b32-") as folder:
            b32.save_pretrained(folder)
            tiny_tokenizer().save_pretrained(folder)  # 514-token vocabulary: ids fit, the arithmetic is the same
            CLIPImageProcessorPil().save_pretrained(folder)
            del b32
            scorer = LabelScorer(folder, batch_size=args.batch_size).load()
            run_s = best_seconds(lambda: scorer.score(images, true, names), args.repeats)
            ips = len(images) / run_s
            device = scorer.device + (f" ({torch.cuda.get_device_name()})" if scorer.device.startswith("cuda") else "")
            print(f"clip_vit_b32 (random weights) on {device}, {scorer.dtype}: {ips:.1f} images/s -> 10,000 "
                  f"images in {10_000 / ips / 60:.1f} min; achieved {image_flops * ips / 1e12:.2f} TFLOP/s")
    print(f"scorer_flops_share: {share:.6f}")
    return share


if __name__ == "__main__":
    main()
