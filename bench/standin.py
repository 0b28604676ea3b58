"""A benchmark harness, not a model: a stand-in generator that only waits a fixed time per image.

It has the interface the bulk run uses (``settings``, ``is_test_model``, ``load()``, ``generate(requests, ...)``), so
a benchmark can measure everything around the model (reading, decoding, composing, encoding, writing, SQLite) as if
a GPU took `latency_s` per image. Its "Î" is the source mirrored left-right (no arithmetic worth timing). It lives
in bench/ on purpose: no --model name selects it, and nothing in diffusemix_core imports it.
"""

from __future__ import annotations

import time

import numpy as np

from diffusemix_core.engine.generation import GenerationResult, GenerationSettings

STANDIN_MODEL = "bench-standin-fixed-latency"


class FixedLatencyGenerator:
    """Waits `latency_s` per request (``time.sleep``: no CPU), then returns the mirrored source."""

    def __init__(self, latency_s: float = 0.060, *, resolution: int = 512) -> None:
        self.latency_s = float(latency_s)
        self.settings = GenerationSettings(model=STANDIN_MODEL, resolution=resolution, device="cpu")
        self.model_id = STANDIN_MODEL
        self.is_test_model = True
        self.busy_seconds = 0.0  # time spent "on the model"
        self.calls = 0

    def load(self) -> None:
        pass

    def generate(self, requests, *, batch_size: int = 4, progress=None) -> list[GenerationResult]:
        started = time.perf_counter()
        time.sleep(self.latency_s * len(requests))
        results = [GenerationResult(image=np.ascontiguousarray(r.image[:, ::-1]), used_seed=int(r.seed), retries=0)
                   for r in requests]
        self.busy_seconds += time.perf_counter() - started
        self.calls += 1
        return results
