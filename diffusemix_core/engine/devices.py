"""Where a model runs and in which number type: the names people pass, their checks, and what ``auto`` means here.

Devices: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``; ``auto`` is CUDA when torch sees a GPU, else the CPU.
Number types: ``auto``, ``float32``, ``float16``, ``bfloat16``; ``auto`` is float16 on CUDA and float32 elsewhere.
The generator's settings, the model loaders and the label scorer all use these, so the words and the rules are the
same everywhere. torch is imported only when a name has to be resolved.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..errors import BadArgumentError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = ["DTYPES", "check_device", "check_dtype", "resolve_device", "resolve_dtype", "torch_dtype"]

DTYPES = ("auto", "float32", "float16", "bfloat16")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: Any) -> str:
    """`device` if it is one of the device names, else BadArgumentError naming it and the choices."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise BadArgumentError(f"Bad device {device!r}: pass auto, cpu, cuda, cuda:N or mps.")
    return device


def check_dtype(dtype: Any) -> str:
    """`dtype` if it is one of :data:`DTYPES`, else BadArgumentError naming it and the choices."""
    if dtype not in DTYPES:
        raise BadArgumentError(f"Bad dtype {dtype!r}: pass one of {', '.join(DTYPES)}.")
    return dtype


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; any other name as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` -> float16 on a CUDA device, float32 elsewhere; any other name as given."""
    if dtype != "auto":
        return dtype
    return "float16" if device.startswith("cuda") else "float32"


def torch_dtype(dtype: Any) -> torch.dtype:
    """The torch dtype of a resolved name (None: float32; a torch dtype as is)."""
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES[1:]:
        raise BadArgumentError(f"Bad dtype {dtype!r}: pass float32, float16 or bfloat16.")
    return getattr(torch, dtype)
