"""DiffuseMix Studio: the Gradio app (layout and event wiring; every computation is a call into diffusemix_core).

    python app.py [--model ID] [--workspace W] [--host 127.0.0.1] [--port 7860] [--share] [--auth user:pass]

Environment variables stand in for the flags where a platform starts the app without arguments (a Hugging Face
Space runs ``python app.py``): DIFFUSEMIX_MODEL, DIFFUSEMIX_WORKSPACE, DIFFUSEMIX_AUTH, DIFFUSEMIX_RESOLUTION,
DIFFUSEMIX_STEPS, GRADIO_SERVER_NAME, GRADIO_SERVER_PORT. A Space is detected from SPACE_ID: then server-side
folder paths are disabled and only uploaded zips can be augmented in bulk.

Named API endpoints (see the README): /augment, /remix, /all_prompts, /approve, /reject, /save_prompts,
/get_prompts, /prompt_report, /run_dataset, /cancel_run, /curate (and the Curate tab's /view, /next_page,
/toggle_selection, /plan_…, /confirm_…, /threshold, /auto_review_… of the README's table), /export, /list_exports.

Over the house's ~450 lines because it lays out and wires five tabs; every handler is a few lines that call
diffusemix_core (curation, interactive, uploads, workspace), where the logic and its tests live.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr
from gradio.utils import get_upload_folder
import numpy as np
import pandas as pd

from diffusemix_core.curation import decision_plans, filters as query_filters, previews, queries as score_queries
from diffusemix_core.curation import detail as details, histogram as histograms, page as pages
from diffusemix_core.curation import report_view as report_views, selection as selections
from diffusemix_core.engine.diffusemix import STAGE_NAMES as STAGES, AugmentationRecord, DiffuseMix, Mixer
from diffusemix_core.errors import DiffuseMixError
from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.engine.generation import DEFAULT_MODEL  # torch-free at import: the model loads lazily
from diffusemix_core.engine.test_models import UNTRAINED_NOTE, is_test_model
from diffusemix_core.engine.masks import ALL_MASK_KINDS, MASK_KINDS
from diffusemix_core.engine.prompts import PromptEntry, PromptLibrary
from diffusemix_core.bulk.options import AugmentOptions, MixOptions
from diffusemix_core.bulk.runner import run_augment
from diffusemix_core.studio.explore import (
    DEFAULT_INTERACTIVE_PIXELS,
    ModelHolder,
    ResultCache,
    StageFiles,
    load_interactive,
)
from diffusemix_core.workspace.manifest import STATUSES
from diffusemix_core.workspace.files import links_outside
from diffusemix_core.workspace.uploads import Uploads, parse_size
from diffusemix_core.workspace.folder import Workspace

log = logging.getLogger("diffusemix_studio")

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else (optional dependency)
    import spaces

    gpu_task: Callable = spaces.GPU(duration=120)
except ImportError:  # pragma: no cover - depends on the environment

    def gpu_task(fn: Callable) -> Callable:
        return fn


HERE = Path(__file__).resolve().parent
EXAMPLES = [HERE / "examples" / "landscape.png", HERE / "examples" / "still_life.png"]
RANDOM = "random"
STAGE_LABELS = {
    "original": "I · original",
    "generated": "Î · generated",
    "mask": "M · mask",
    "hybrid": "H · hybrid",
    "fractal": "F · fractal",
    "final": "A · final",
}
MODEL_QUEUE = "model"  # one queue for every handler that runs the diffusion model
MASK_WORDS = {"left": "left half", "right": "right half", "top": "top half", "bottom": "bottom half",
              "box": "centre box"}
CURATE_PER_PAGE = 40  # tiles per Curate page (8 rows of 5): only the page's rows are read
CSS = """
#test-model-banner {border-left: 4px solid #d97706; padding-left: 0.6em;}
footer {display: none !important;}
#curate-gallery .thumbnail-item img {object-position: top;}
.hint {font-size: 0.85em; opacity: 0.8;}
#curate-gallery .caption-label {white-space: normal; max-width: none; left: 0; right: 0; bottom: 0;
  font-size: 11px; line-height: 1.25; border-radius: 0;}
#bulk-confirm, #h-confirm, #auto-confirm {border-left: 4px solid #dc2626; padding-left: 0.6em; align-items: center;}
"""


# ----------------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class AppConfig:
    """Everything the app is started with; built from flags, then environment variables, then defaults."""

    model: str = DEFAULT_MODEL
    workspace: Path = Path("workspace")
    resolution: int = 512
    steps: int = 20
    device: str = "auto"
    fractal_dir: Path | None = None
    space_mode: bool = False
    max_file_size: str = "200mb"
    exports: Path | None = None  # default: <workspace>-exports beside the workspace (it may not be inside it)
    local: bool = True  # served on loopback only (no --share, no Space): bytes are free, CPU time is not
    max_pixels: int = DEFAULT_INTERACTIVE_PIXELS  # largest image Explore, /augment, /remix and Curate take
    data_root: Path | None = None  # typed dataset folders must be inside it (needed unless on loopback)
    upload_quota: int | None = 10 * 1000**3  # bytes the extracted uploaded datasets may take
    ray_address: str | None = None  # Dataset runs go to this Ray cluster (--engine ray) when set
    result_cache_bytes: int = 512 * 1024**2  # recent results kept for re-mixing
    stage_cache_bytes: int = 1024**3  # stage PNGs on disk

    @property
    def typed_folders(self) -> bool:
        """Whether a typed server folder may be augmented: only on loopback, or inside --data-root."""
        return (self.local or self.data_root is not None) and not self.space_mode

    @property
    def exports_dir(self) -> Path:
        return self.exports or self.workspace.parent / f"{self.workspace.name}-exports"

    @property
    def is_test_model(self) -> bool:
        return is_test_model(self.model)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python app.py",
        description="DiffuseMix Studio: explore DiffuseMix augmentations, curate prompts and results, export datasets.",
    )
    parser.add_argument("--model", default=env("DIFFUSEMIX_MODEL", DEFAULT_MODEL),
                        help="diffusers model id or local folder; 'tiny-random' is an untrained test model that "
                             "works offline (env DIFFUSEMIX_MODEL; default %(default)s)")
    parser.add_argument("--workspace", default=env("DIFFUSEMIX_WORKSPACE", "workspace"),
                        help="workspace folder for the manifest, images and exports; created if missing "
                             "(env DIFFUSEMIX_WORKSPACE; default ./workspace)")
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to listen on; 0.0.0.0 exposes the app to the network (default %(default)s)")
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")),
                        help="port (default %(default)s)")
    parser.add_argument("--exports", default=env("DIFFUSEMIX_EXPORTS"),
                        help="folder for export zips (default: <workspace>-exports beside the workspace)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--auth", default=env("DIFFUSEMIX_AUTH"),
                        help="require a login, given as user:pass (env DIFFUSEMIX_AUTH)")
    parser.add_argument("--resolution", type=int, default=int(env("DIFFUSEMIX_RESOLUTION", "512")),
                        help="working resolution of the model in the Explore tab (default %(default)s)")
    parser.add_argument("--steps", type=int, default=int(env("DIFFUSEMIX_STEPS", "20")),
                        help="denoising steps in the Explore tab (default %(default)s)")
    parser.add_argument("--device", default=env("DIFFUSEMIX_DEVICE", "auto"), help="auto, cpu, cuda, mps")
    parser.add_argument("--fractal-dir", default=env("DIFFUSEMIX_FRACTAL_DIR"),
                        help="folder of fractal images (default: the shipped procedural set)")
    parser.add_argument("--max-file-size", default="200mb", help="largest upload accepted (default %(default)s)")
    parser.add_argument("--max-pixels", type=int, default=int(env("DIFFUSEMIX_MAX_PIXELS", DEFAULT_INTERACTIVE_PIXELS)),
                        help="largest image (width x height) Explore and Curate work on; larger ones get a message "
                             "(default %(default)s = 16 MP; the command line takes up to 64 MP)")
    parser.add_argument("--data-root", default=env("DIFFUSEMIX_DATA_ROOT"),
                        help="allow typed dataset folders inside this folder only (links resolved); without it, "
                             "typed folders work only when the app listens on loopback")
    parser.add_argument("--ray-address", default=env("DIFFUSEMIX_RAY_ADDRESS"),
                        help="run the Dataset tab's bulk runs on this Ray cluster (auto or HOST:PORT; this app must "
                             "run on a node of it; see docs/cluster.md); default: in this process")
    parser.add_argument("--upload-quota", default=env("DIFFUSEMIX_UPLOAD_QUOTA", "10gb"),
                        help="disk space the extracted uploaded datasets may take, e.g. 2gb (default %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> AppConfig:
    return AppConfig(
        model=args.model,
        workspace=Path(args.workspace).expanduser().resolve(),
        resolution=args.resolution,
        steps=args.steps,
        device=args.device,
        fractal_dir=Path(args.fractal_dir) if args.fractal_dir else None,
        space_mode=bool(os.environ.get("SPACE_ID")),
        local=not os.environ.get("SPACE_ID") and not args.share and args.host in ("127.0.0.1", "localhost", "::1"),
        max_file_size=args.max_file_size,
        exports=Path(args.exports).expanduser().resolve() if args.exports else None,
        max_pixels=args.max_pixels,
        data_root=Path(args.data_root).expanduser().resolve() if args.data_root else None,
        upload_quota=parse_size(args.upload_quota),
        ray_address=args.ray_address,
    )


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SystemExit(f"--auth must be user:pass, got {value!r}")
    return user, password


# ----------------------------------------------------------------------------------------------- errors
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s'\"/]+/)+([^\s'\"/]*)")


def scrub_paths(text: str) -> str:
    """A message without server paths: every absolute path is cut to its last part."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "/", text)


def error_to_gradio(fn: Callable) -> Callable:
    """Show project errors (one sentence with the remedy, no server paths) in the UI instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DiffuseMixError as exc:
            raise gr.Error(scrub_paths(str(exc)), print_exception=False) from exc

    return wrapper


def show_errors(fn: Callable, at: int, outputs: int, *, clears: bool = False) -> Callable:
    """Like error_to_gradio, but the reason stays readable where it happened: it goes to output `at` (of
    `outputs`; a message next to the button) and the other outputs keep what they show (no 'Error' on them).
    With `clears`, `fn` does not return the message (the last output): success empties it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            out = fn(*args, **kwargs)
            return (*(out if isinstance(out, tuple) else (out,)), "") if clears else out
        except (DiffuseMixError, gr.Error) as exc:
            out = [gr.skip()] * outputs
            out[at] = "❌ " + scrub_paths(str(exc.message if isinstance(exc, gr.Error) else exc))
            return out[0] if outputs == 1 else tuple(out)

    return wrapper


@gpu_task
def generate_record(engine: DiffuseMix, image: np.ndarray, **choices) -> AugmentationRecord:
    """The GPU-bound step of Generate (decorated with spaces.GPU on ZeroGPU)."""
    return engine.augment(image, **choices)


@gpu_task
def generate_all_prompts(engine: DiffuseMix, image: np.ndarray, **choices) -> list[AugmentationRecord]:
    """The GPU-bound step of All prompts (decorated with spaces.GPU on ZeroGPU)."""
    return engine.augment_all_prompts(image, **choices)


@gpu_task
def run_dataset_job(workspace: Workspace, train_dir: Path, options: AugmentOptions, **kwargs):
    """The GPU-bound bulk run (decorated with spaces.GPU on ZeroGPU)."""
    return run_augment(workspace, train_dir, options, **kwargs)


def table_rows(table: Any) -> list[list]:
    """The prompt editor's value as plain rows (Gradio gives a DataFrame, the API a list of rows)."""
    return table.values.tolist() if hasattr(table, "values") else list(table or [])


def table_to_library(table: Any, template: str) -> PromptLibrary:
    """The prompt editor's rows (a DataFrame or list of rows) -> a validated PromptLibrary."""
    rows = table_rows(table)
    entries = []
    for row in rows:
        text = "" if row[0] is None or (isinstance(row[0], float) and np.isnan(row[0])) else str(row[0]).strip()
        enabled = row[1] if len(row) > 1 else True
        if isinstance(enabled, str):
            enabled = enabled.strip().lower() in ("true", "1", "yes", "y", "x", "✓")
        entries.append(PromptEntry(text=text, enabled=bool(enabled)))
    library = PromptLibrary(entries=entries, template=template)
    library.validate()
    return library


def library_to_table(library: PromptLibrary) -> list[list]:
    return [[entry.text, bool(entry.enabled)] for entry in library.entries]


# ----------------------------------------------------------------------------------------------- the handlers
class Studio:
    """The app's state shared by all sessions (workspace, model, caches) and its event handlers.

    Per-session state lives in gr.State values passed to the handlers; everything written goes through the
    Workspace (SQLite in WAL mode, one connection per call), so concurrent sessions lose nothing.
    """

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.workspace = Workspace(config.workspace)
        self.uploads = Uploads(config.workspace, quota_bytes=config.upload_quota)
        self.model = ModelHolder(config.model, device=config.device, steps=config.steps, resolution=config.resolution)
        self.results = ResultCache(max_bytes=config.result_cache_bytes)
        self.fractals = (
            FractalLibrary.from_folder(config.fractal_dir) if config.fractal_dir else FractalLibrary.default()
        )
        # Inside Gradio's cache folder, so Gradio serves these files as they are instead of copying them.
        # Stage PNGs stay lossless; on loopback they are stored uncompressed (a 512² re-mix saves ~20 ms of zlib),
        # over a network (--share, --host, a Space) zlib's fastest level saves bandwidth instead.
        self.files = StageFiles(Path(get_upload_folder()) / "diffusemix-stages" / uuid.uuid4().hex[:12],
                                compress_level=0 if config.local else 1, max_bytes=config.stage_cache_bytes)
        self.previews = self.files.root / "previews"  # served copies of the workspace's previews (never served)
        self._cancel: dict[str, threading.Event] = {}
        self._cancel_lock = threading.Lock()

    # -- helpers ------------------------------------------------------------------------------------------
    def engine(self, generator) -> DiffuseMix:
        """A DiffuseMix over the workspace's current prompt library (edits take effect at once)."""
        return DiffuseMix(prompts=self.workspace.manifest.get_prompt_library(), fractals=self.fractals,
                          generator=generator)

    def mixer(self) -> Mixer:
        """Re-mixing needs no model: a Mixer over the current prompt library and the fractals."""
        return Mixer(prompts=self.workspace.manifest.get_prompt_library(), fractals=self.fractals)

    def record(self, result_id: str) -> AugmentationRecord:
        result_id = (result_id or "").strip()
        record = self.results.get(result_id)
        if record is not None:
            return record
        if result_id.startswith("ws-") and result_id[3:].isdigit():
            return self.workspace_record(int(result_id[3:]))
        raise gr.Error(
            f"No result {result_id!r} here (recent results are kept while memory allows, and saved ones as 'ws-N'); "
            "generate again."
        )

    def workspace_record(self, aug_id: int) -> AugmentationRecord:
        """Augmentation N of the workspace, composed from the store, if it is within the interactive pixel limit."""
        row = self.workspace.manifest.get_augmentation(aug_id)
        if (row["width"] or 0) * (row["height"] or 0) > self.config.max_pixels:
            raise gr.Error(f"Augmentation #{aug_id} is {row['width']}x{row['height']}, over the "
                           f"{self.config.max_pixels / 1e6:.0f} MP limit for interactive use; export it, or start "
                           "the app with a larger --max-pixels.")
        return self.workspace.record_from_row(row)

    def view(self, result_id: str, record: AugmentationRecord) -> tuple:
        choices = record.choices()
        choices["result_id"] = result_id
        if record.is_test_model:
            choices["note"] = UNTRAINED_NOTE
        return (*self.files.stage_paths(result_id, record, STAGES), choices)

    def remixed(self, result_id, lam, mask, fractal, fractal_upload) -> AugmentationRecord:
        record = self.record(result_id)
        fractal_arg: Any = None
        if fractal_upload is not None:
            fractal_arg = load_interactive(fractal_upload, max_pixels=self.config.max_pixels)
        elif fractal and fractal != RANDOM:
            fractal_arg = fractal
        mask_arg = mask if mask and mask != RANDOM else None
        return self.mixer().remix(record, lam=float(lam), mask=mask_arg, fractal=fractal_arg)

    # -- Explore --------------------------------------------------------------------------------------------
    def augment(self, image, prompt, mask, lam, seed, fractal=RANDOM, fractal_upload=None,
                progress=gr.Progress()):
        """Generate Î for one image and mix it: the six stages and the choices (with a result_id for /remix)."""
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        original = load_interactive(image, max_pixels=self.config.max_pixels)
        progress(0.05, desc=f"Loading model {self.config.model} (first use only)…")
        generator = self.model.generator()
        engine = self.engine(generator)
        progress(0.2, desc="Generating Î…")
        record = generate_record(
            engine, original, seed=int(seed), lam=float(lam),
            prompt=None if prompt in (None, "", RANDOM) else prompt,
            mask=None if mask in (None, "", RANDOM) else mask,
            fractal=load_interactive(fractal_upload, max_pixels=self.config.max_pixels) if fractal_upload is not None
            else None if fractal in (None, "", RANDOM) else fractal,
        )
        result_id = self.results.put(record)
        return self.view(result_id, record)

    def remix(self, result_id, lam, mask=RANDOM, fractal=RANDOM, fractal_upload=None):
        """Re-mix a previous result (its id from /augment, or 'ws-N') with another λ, mask or fractal; no model call.

        "random" keeps what was drawn for that result.
        """
        if not result_id:
            return (gr.skip(),) * 7
        record = self.remixed(result_id, lam, mask, fractal, fractal_upload)
        return self.view(result_id, record)

    def all_prompts(self, image, mask, lam, seed, progress=gr.Progress()):
        """Every enabled prompt on one image (same seed): a gallery of Î captioned with the prompt."""
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        original = load_interactive(image, max_pixels=self.config.max_pixels)
        progress(0.05, desc=f"Loading model {self.config.model} (first use only)…")
        engine = self.engine(self.model.generator())
        progress(0.2, desc=f"Generating {len(engine.prompts.enabled())} prompts…")
        records = generate_all_prompts(engine, original, mask=None if mask == RANDOM else mask, seed=int(seed),
                                       lam=float(lam))
        ids = [self.results.put(r) for r in records]
        items = [(self.files.path(f"{rid}/generated", r.generated), r.prompt) for rid, r in zip(ids, records)]
        return items, ids

    @staticmethod
    def drawn(choices: dict | None):
        """What A is made of, in words under the stages, and in each dropdown's note (its value, often "random",
        is left as it is)."""
        if not choices:
            return "", *(gr.Dropdown(info=None) for _ in range(3))
        kept = MASK_WORDS.get(choices.get("mask"), choices.get("mask"))
        text = (f"**A** = prompt **{choices.get('prompt')}** · mask **{choices.get('mask')}** ({kept} of I kept) · "
                f"fractal **{choices.get('fractal')}** · λ **{float(choices.get('lam', 0)):.2f}** · "
                f"seed {choices.get('seed')}")
        return (text, gr.Dropdown(info=f"this A: {choices.get('prompt')}"),
                gr.Dropdown(info=f"this A: {choices.get('mask')} ({kept} kept)"),
                gr.Dropdown(info=f"this A: {choices.get('fractal')}"))

    def pick_from_grid(self, ids: list[str], evt: gr.SelectData):
        result_id = ids[evt.index]
        return (*self.view(result_id, self.record(result_id)), result_id)

    def save_explore(self, status, result_id, lam, mask, fractal, fractal_upload, label):
        """Approve / reject the result as shown; the last decision wins, from any session, and all are recorded.

        A workspace item ('ws-N') shown as stored is decided on itself; re-mixed in the UI (another λ, mask or
        fractal), it is stored as a new augmentation linked to N. An Explore result ('r-…') is stored once per
        distinct choice and label; deciding again changes its status.
        """
        if not result_id:
            raise gr.Error("Generate a result first.")
        record = self.remixed(result_id, lam, mask, fractal, fractal_upload)
        if result_id.startswith("ws-"):
            aug_id = int(result_id[3:])
            stored = self.workspace.manifest.get_augmentation(aug_id)
            if (record.mask_kind, record.fractal_id, record.lam) == (stored["mask"], stored["fractal"], stored["lam"]):
                decision = self.workspace.review(status, ids=[aug_id], origin="app")
                return f"Marked #{aug_id} {status} (decision #{decision.batch_id})."
            new_id = self.workspace.save_record(record, status=status, origin="app", remixed_from=aug_id)
            return f"Saved as #{new_id} ({status}), re-mixed from #{aug_id}."
        record = dataclasses.replace(record, label=(label or "").strip() or None)
        aug_id = self.workspace.save_record(record, status=status, origin="app")
        return f"Saved as #{aug_id} ({status})."

    def approve(self, result_id, lam, mask, fractal, fractal_upload, label):
        """Approve the result as shown (see save_explore): a message naming the workspace id."""
        return self.save_explore("approved", result_id, lam, mask, fractal, fractal_upload, label)

    def reject(self, result_id, lam, mask, fractal, fractal_upload, label):
        """Reject the result as shown (see save_explore): a message naming the workspace id."""
        return self.save_explore("rejected", result_id, lam, mask, fractal, fractal_upload, label)

    def download_final(self, result_id, lam, mask, fractal, fractal_upload):
        """A at full size as shown (the stage images are capped at a display size)."""
        if not result_id:
            raise gr.Error("Generate a result first.")
        record = self.remixed(result_id, lam, mask, fractal, fractal_upload)
        key = f"{result_id}/final/{record.mask_kind}/{record.fractal_id}/{record.lam!r}"
        return self.files.path(key, record.final, full_size=True)

    # -- Prompt library -------------------------------------------------------------------------------------
    def get_prompts(self):
        library = self.workspace.manifest.get_prompt_library()
        return library_to_table(library), library.template, self.prompt_choices(library)

    def prompt_choices(self, library: PromptLibrary | None = None):
        library = library or self.workspace.manifest.get_prompt_library()
        return gr.Dropdown(choices=[RANDOM] + library.enabled(), value=RANDOM)

    def save_prompts(self, table, template):
        """Store the edited library in the workspace; bad entries are refused with the reason."""
        try:
            library = table_to_library(table, template)
        except DiffuseMixError as exc:
            gr.Warning(str(exc))
            return gr.skip(), gr.skip(), f"❌ Not saved: {exc}", gr.skip()
        self.workspace.manifest.set_prompt_library(library)
        enabled = len(library.enabled())
        return (library_to_table(library), library.template,
                f"✅ Saved {len(library.entries)} prompts ({enabled} enabled).", self.prompt_choices(library))

    def add_prompt(self, table, template, text):
        rows = table_rows(table)
        return self.save_prompts(rows + [[text, True]], template)

    def delete_prompt(self, table, template, row: int | None):
        rows = table_rows(table)
        if row is None or not 0 <= row < len(rows):
            gr.Warning("Click a row of the table first, then Delete.")
            return gr.skip(), gr.skip(), "Select a row to delete.", gr.skip()
        return self.save_prompts(rows[:row] + rows[row + 1:], template)

    def reset_prompts(self):
        library = PromptLibrary.default()
        return self.save_prompts(library_to_table(library), library.template)

    def import_prompts(self, path):
        if not path:
            return gr.skip(), gr.skip(), "Choose a .json or .toml file.", gr.skip()
        try:
            library = PromptLibrary.load(path)
        except DiffuseMixError as exc:
            gr.Warning(str(exc))
            return gr.skip(), gr.skip(), f"❌ Not imported: {exc}", gr.skip()
        return self.save_prompts(library_to_table(library), library.template)

    def download_prompts(self, fmt: str):
        folder = self.config.exports_dir / "prompts"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"prompt-library.{'toml' if fmt == 'TOML' else 'json'}"
        self.workspace.manifest.get_prompt_library().save(target)
        return str(target)

    # -- Dataset --------------------------------------------------------------------------------------------
    def extract_zip(self, archive):
        """Keep an uploaded zip of class folders in the workspace (once per content): its handle and its classes."""
        if not archive:
            raise gr.Error("Choose a .zip of class folders first.")
        dataset = self.uploads.add(archive, name=Path(archive).name)
        return dataset.handle, describe_upload(dataset)

    def uploads_table(self):
        """The uploaded datasets, newest first (no server paths)."""
        rows = [[d.id, d.name, len(d.classes), d.files, f"{d.bytes / 1e6:.1f} MB", d.created_at]
                for d in self.uploads.list()]
        used = sum(d.bytes for d in self.uploads.list())
        quota = f" of {self.config.upload_quota / 1e9:.1f} GB" if self.config.upload_quota else ""
        return rows, f"{len(rows)} uploaded dataset(s), {used / 1e6:.1f} MB{quota}."

    def delete_upload(self, dataset_id: str):
        """Delete one uploaded dataset's files (augmentations already made from it stay in the workspace)."""
        dataset = self.uploads.delete((dataset_id or "").strip())
        return f"Deleted upload '{dataset.name}' ({dataset.files} files)."

    def check_train_dir(self, train_dir: str) -> Path:
        """The folder a run may read: an upload ('upload:<id>'), or a typed folder where typed folders are allowed."""
        text = (train_dir or "").strip()
        if not text:
            raise gr.Error("Upload a zip of class folders first" + (", or type a folder on this machine."
                                                                      if self.config.typed_folders else "."))
        if text.startswith("upload:"):
            return self.uploads.path(text[len("upload:"):])
        if not self.config.typed_folders:
            raise gr.Error("Typed server folders are off: this app is reachable from other machines; upload a zip "
                           "of class folders (or start it with --data-root DIR to allow folders inside DIR).")
        path = Path(text).expanduser().resolve()  # links resolved before the check
        root = self.config.data_root.resolve() if self.config.data_root is not None else None
        if root is not None and path != root and root not in path.parents:
            raise gr.Error(f"Folder '{text}' is outside the data root this app was started with; give a folder "
                           "inside it.")
        if not path.is_dir():
            raise gr.Error(f"Folder '{text}' does not exist; give a folder holding one sub-folder per class.")
        escaping = links_outside(path, root) if root is not None else []
        if escaping:
            raise gr.Error(f"Folder '{text}' holds {len(escaping)} link(s) to files or folders outside the data root "
                           f"(such as '{escaping[0].relative_to(path)}'); remove them or copy what they point to "
                           "into the data root.")
        return path

    def run_dataset(self, train_dir, per_image, seed, lam, steps, resolution, batch_size, all_prompts,
                    request: gr.Request, progress=gr.Progress()):
        """Bulk augmentation of a class-folder dataset into the workspace; resumes when run again."""
        path = self.check_train_dir(train_dir)
        cancel = self.cancel_event(request, reset=True)

        def report(p) -> None:
            progress((p.done, max(p.total, 1)), desc=f"Augmenting: {p.describe()}", unit="augmentations")

        if self.config.ray_address:  # the cluster's workers load the model; this process plans and commits
            progress(0, desc=f"Submitting to the Ray cluster at {self.config.ray_address}…")
            generator, where = None, dict(runner="ray", ray_address=self.config.ray_address)
            settings = self.model.settings(steps=int(steps), resolution=int(resolution))
        else:
            progress(0, desc=f"Loading model {self.config.model}…")
            generator, where = self.model.generator(steps=int(steps), resolution=int(resolution)), {}
            settings = generator.settings
        options = AugmentOptions(settings=settings, mix=MixOptions(lam=float(lam)), per_image=int(per_image),
                                 batch_size=int(batch_size), seed=int(seed), all_prompts=bool(all_prompts),
                                 scorer="auto", **where)
        summary = run_dataset_job(self.workspace, path, options, prompts=self.workspace.manifest.get_prompt_library(),
                                  fractals=self.fractals, generator=generator, progress=report, cancel=cancel)
        info = dataclasses.asdict(summary)
        head = "⏹ Cancelled: run again to resume." if summary.cancelled else "✅ Done."
        if summary.settings_changed:
            head += (f" ⚠️ This run's {', '.join(summary.settings_changed)} differ from the previous run's: "
                     "augmentations already in the workspace were kept as they were, only missing ones used the new "
                     "values (use a new workspace to redo everything).")
        return f"{head} {format_summary(info)}", info

    def cancel_event(self, request: gr.Request | None, *, reset: bool = False) -> threading.Event:
        key = getattr(request, "session_hash", None) or "default"
        with self._cancel_lock:
            if reset or key not in self._cancel:
                self._cancel[key] = threading.Event()
            return self._cancel[key]

    def cancel_run(self, request: gr.Request):
        self.cancel_event(request).set()
        return "Cancelling after the current batch…"

    # -- Curate ---------------------------------------------------------------------------------------------
    # Viewing and selecting are separate acts: a click on a tile (or a table row) shows it; the selection changes
    # only through Select / Select page / Clear, is cleared by a new filter and after a bulk decision, and a bulk
    # decision is counted first and made only when confirmed (decision_plans.DecisionPlan).
    def curate(self, label="all", prompt="all", status="pending", flags="all", sort="newest", min_label_prob=0.0,
               max_label_prob=1.0, min_drift=0.0, max_drift=1.0):
        """A new filter: its first page (gallery with scores in the captions, page line, table, selection line)."""
        query = query_filters.CurationQuery.from_form(label, prompt, status, flags, sort, min_label_prob,
                                                      max_label_prob, min_drift, max_drift)
        hidden = gr.Row(visible=False)  # a counted decision of the old filter is dropped, unconfirmed
        return (*self.show_page(query, 0, selections.Selection()), query, selections.Selection(), None, hidden,
                None, hidden, None, hidden)

    def show_page(self, query, number: int, selection) -> tuple:
        """(gallery, page line, table, selection line, page number, ids shown) of page `number` of `query`."""
        page = pages.page(self.workspace, query or query_filters.CurationQuery(), number, CURATE_PER_PAGE)
        marks = [aug_id in selection for aug_id in page.ids]
        items = list(zip(previews.served_copies(page.thumbnails, self.previews, marks), page.captions(selection)))
        return (items, page.describe(),
                pd.DataFrame(page.table(selection), columns=pages.TABLE_COLUMNS), selection.describe(),
                page.number, page.ids)

    def turn_page(self, query, number, delta: int, selection):
        return self.show_page(query, max(0, int(number or 0) + delta), selection or selections.Selection())

    def curate_view(self, aug_id, selection=None):
        """One augmentation: its six stages, what it is made of, every score of A and Î, its decision history."""
        if aug_id in (None, ""):
            raise gr.Error("Click an augmentation in the gallery or the table first.")
        aug_id = int(aug_id)
        detail = details.detail(self.workspace, aug_id)
        stages = self.view(f"ws-{aug_id}", self.workspace_record(aug_id))[:6]
        mark = " **✓ selected**" if selection is not None and aug_id in selection else ""
        return (*stages, detail.summary() + mark,
                pd.DataFrame(detail.score_rows(), columns=details.DETAIL_COLUMNS),
                pd.DataFrame(detail.history_rows(), columns=details.HISTORY_COLUMNS), gr.skip(), aug_id)

    def change_selection(self, how: str, query, number, selection, ids, viewed):
        """Select / unselect the viewed item, select the page, or clear; the page is shown again with its marks."""
        selection = selection or selections.Selection()
        if how == "toggle":
            if viewed in (None, ""):
                raise gr.Error("View an augmentation first (click it), then Select it.")
            selection = selection.toggle(int(viewed))
        elif how == "page":
            selection = selection.add(*(ids or []))
        else:
            selection = selection.clear()
        return (*self.show_page(query, number, selection), selection)

    def plan_bulk(self, status: str, which: str, query, selection):
        """Count what a bulk decision would change and ask to confirm (plan, question, its row, message)."""
        query = query or query_filters.CurationQuery()
        plan = (decision_plans.plan_selected(self.workspace, query, selection or selections.Selection(), status)
                if which == "selected" else decision_plans.plan_matching(self.workspace, query, status))
        return self.ask(plan)

    @staticmethod
    def ask(plan):
        """(plan, question, confirm row, message) of a counted decision; nothing to confirm when it is empty."""
        if not plan.count:
            left_out = f" ({plan.left_out} selected no longer match the filter)" if plan.left_out else ""
            return None, "", gr.Row(visible=False), f"Nothing to change: no augmentation {plan.what}{left_out}."
        return plan, plan.question(), gr.Row(visible=True), ""

    def confirm(self, plan):
        """Make the counted decision: the message stays until the next action; the selection is cleared."""
        if plan is None:
            raise gr.Error("Nothing to confirm: choose an action first.")
        decision = plan.apply(self.workspace)
        return plan.outcome(decision), None, gr.Row(visible=False), selections.Selection()

    def cancel(self):
        return "Cancelled: nothing changed.", None, gr.Row(visible=False)

    def review_this(self, status: str, aug_id):
        """Approve / reject the viewed augmentation (one item: no confirmation; Undo does not revert single items)."""
        if aug_id in (None, ""):
            raise gr.Error("View an augmentation first (click it in the gallery).")
        self.workspace.review(status, ids=[int(aug_id)], origin="app")
        return f"Marked #{int(aug_id)} {status}."

    def threshold(self, query, score: str, threshold):
        """The distribution of a score over what the filter shows, and how many are past the threshold."""
        hist = histograms.histogram(self.workspace, query or query_filters.CurationQuery(), score, bins=20,
                                  threshold=float(threshold))
        plot = gr.BarPlot(value=pd.DataFrame(hist.rows(), columns=["bin", "count", "side"]),
                          x_title=histograms.HISTOGRAM_SCORES[score].title)
        return plot, hist.describe(), gr.Button(hist.action(), interactive=hist.past_count > 0)

    def plan_threshold(self, query, score: str, threshold):
        """Count the items past the threshold and ask to confirm rejecting them."""
        return self.ask(decision_plans.plan_threshold(self.workspace, query or query_filters.CurationQuery(), score,
                                                float(threshold)))

    def auto_dry_run(self, query, use_min_label_prob, min_label_prob, use_max_drift, max_drift, reject_flagged):
        """What the ticked review --auto rules would reject among the pending items of the label and prompt
        filtered; nothing changes until Apply."""
        query = query or query_filters.CurationQuery()
        rules = score_queries.AutoRules(min_label_prob=float(min_label_prob) if use_min_label_prob else None,
                                 max_drift=float(max_drift) if use_max_drift else None,
                                 reject_flagged=bool(reject_flagged))
        plan = score_queries.auto_review_plan(self.workspace, rules, label=query.label, prompt=query.prompt)
        text, rows = score_queries.auto_review_rows(plan)
        table = pd.DataFrame(rows, columns=["by", "name", "would reject"])
        return text, table, (plan if plan.reject else None), gr.Row(visible=bool(plan.reject))

    def auto_apply(self, plan):
        """Reject what the dry run counted, as one decision of origin 'auto' (Undo reverts it)."""
        if plan is None:
            raise gr.Error("Run the dry run first.")
        decision = score_queries.apply_auto_review(self.workspace, plan)
        changed = 0 if decision is None else decision.changed
        return (f"✅ Auto review rejected {changed:,} augmentation(s) (origin 'auto'; the Undo button reverts it).",
                None, gr.Row(visible=False), selections.Selection())

    def filter_choices(self):
        labels, prompts = query_filters.filter_choices(self.workspace)
        return gr.Dropdown(choices=["all", *labels]), gr.Dropdown(choices=["all", *prompts])

    def undo_review(self):
        """Revert the last bulk decision (items decided again since are left as they are)."""
        undone = self.workspace.undo_last_review(origin="app")
        if undone is None:
            return "Nothing to undo: no bulk decision is left to revert."
        batch, decision = undone
        kept = decision.matched - decision.changed
        return (f"Undid '{batch['status']}' of {batch['count']} augmentation(s) ({batch['origin']}, "
                f"{batch['created_at'][:19].replace('T', ' ')}): {decision.changed} restored"
                + (f", {kept} decided again since and left as they are." if kept else "."))

    # -- Prompt report ----------------------------------------------------------------------------------------
    def prompt_report(self, by_class=False, metric="mean_label_prob", label="all"):
        """The prompt report as a table and a bar plot of one metric per prompt (all classes or one)."""
        view = report_views.report_view(self.workspace, by_class=bool(by_class), metric=metric, label=label)
        title = report_views.REPORT_METRICS[metric] + ("" if label in (None, "", "all") else f" · class {label}")
        if view.untrained:
            title += " · untrained scorer"
        plot = gr.BarPlot(value=pd.DataFrame(view.bars, columns=["prompt", "value", "label"]), title=title,
                          y_title=report_views.REPORT_METRICS[metric])
        labels, _ = query_filters.filter_choices(self.workspace)
        return (pd.DataFrame(view.rows, columns=view.headers), plot, view.note,
                gr.Dropdown(choices=["all", *labels]))

    # -- Export ---------------------------------------------------------------------------------------------
    def export(self, status="approved", include_originals=False):
        """Export the augmentations with this status as one zip (ImageFolder + metadata.csv + manifest.sqlite)."""
        folder = self.config.exports_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{status}-{uuid.uuid4().hex[:4]}"
        result = self.workspace.export(folder, status=status, include_originals=bool(include_originals),
                                       make_zip=True)
        noun = "augmentation" if result.count == 1 else "augmentations"
        return str(result.zip_path), f"Exported {result.count} {noun} to {result.zip_path.name}."



def describe_upload(dataset) -> str:
    """'Extracted 120 files: 2 classes, cats (60), dogs (60)' (or 'Already uploaded: …')."""
    head = "Already uploaded (nothing extracted again)" if dataset.reused else f"Extracted {dataset.files} files"
    classes = ", ".join(f"{name} ({n})" for name, n in dataset.classes[:30])
    more = f", … {len(dataset.classes) - 30} more" if len(dataset.classes) > 30 else ""
    return f"{head} from '{dataset.name}': {len(dataset.classes)} classes: {classes}{more}. Press Run to augment it."


def format_summary(info: dict) -> str:
    """One readable line of a RunSummary (as a dict): what was done, what failed, how fast; the rest is in the JSON."""
    rate = info["augmentations_added"] / info["seconds"] if info["seconds"] else 0.0
    text = (f"{info['images_total']} images: {info['images_processed']} augmented now, {info['images_skipped']} "
            f"already done, {info['images_failed']} failed; {info['augmentations_added']} augmentations added "
            f"({info['generations_added']} generated, {info['generations_reused']} reused) in {info['seconds']:.1f} s "
            f"({rate:.1f}/s)")
    if info.get("scorer"):
        text += f"; scored by {info['scorer']}"
    failures = info.get("failures") or []
    if failures:
        text += "; failed: " + "; ".join(f"{path}: {reason}" for path, reason in failures[:5])
        text += f" … and {len(failures) - 5} more" if len(failures) > 5 else ""
    return text + "."


# ----------------------------------------------------------------------------------------------- the layout
def build_app(config: AppConfig) -> gr.Blocks:
    """The Blocks app. Building it is fast: the model loads on first use."""
    studio = Studio(config)
    mask_choices = [RANDOM, *MASK_KINDS, *[k for k in ALL_MASK_KINDS if k not in MASK_KINDS]]
    fractal_choices = [RANDOM, *studio.fractals.ids]
    model_events = dict(concurrency_limit=1, concurrency_id=MODEL_QUEUE)

    with gr.Blocks(title="DiffuseMix Studio", delete_cache=(3600, 6 * 3600)) as demo:
        gr.Markdown(
            "# DiffuseMix Studio\nLabel-preserving augmentation (DiffuseMix, CVPR 2024): "
            "**A = (1−λ)·(M⊙I + (1−M)⊙Î) + λ·F**"
        )
        status_md = gr.Markdown(studio.model.status(), elem_id="model-status")

        with gr.Tab("Explore", id="explore"):
            if config.is_test_model:
                gr.Markdown(
                    f"⚠️ `{config.model}` is an **{UNTRAINED_NOTE}**; start with "
                    "`--model timbrooks/instruct-pix2pix` for real results.",
                    elem_id="test-model-banner",
                )
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    # image_mode=None: the upload's path as it came; Gradio would otherwise decode and convert any
                    # non-RGB image (a 62 MP grayscale PNG included) before the pixel limit is checked
                    image_in = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=220,
                                        elem_id="input-image", image_mode=None)
                    gr.Examples([[str(p)] for p in EXAMPLES if p.exists()], inputs=[image_in], label="Examples")
                with gr.Column(scale=1, min_width=260):
                    prompt_dd = gr.Dropdown(
                        [RANDOM] + studio.workspace.manifest.get_prompt_library().enabled(), value=RANDOM, label="Prompt"
                    )
                    mask_dd = gr.Dropdown(mask_choices, value=RANDOM, label="Mask (the part of I kept)")
                    fractal_dd = gr.Dropdown(fractal_choices, value=RANDOM, label="Fractal")
                    fractal_up = gr.Image(label="…or upload a fractal", type="filepath", height=90,
                                          sources=["upload"], image_mode=None)
                with gr.Column(scale=1, min_width=260):
                    lam = gr.Slider(0.0, 1.0, value=0.2, step=0.01, label="λ (fractal blend)", elem_id="lam")
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                    label_in = gr.Textbox(label="Class label (used when saved)", placeholder="unlabelled")
                    with gr.Row():
                        generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                        all_btn = gr.Button("All prompts")
                    explore_msg = gr.Markdown(elem_id="explore-msg")  # Generate's, All prompts' and re-mix's errors
                    api_only = gr.Button(visible=False)  # the named endpoints /augment, /remix, /all_prompts
                    with gr.Row():
                        approve_btn = gr.Button("Approve", elem_id="approve")
                        reject_btn = gr.Button("Reject", variant="stop", elem_id="reject")
                    result_id = gr.Textbox(label="Result id (for /remix)", interactive=False, max_lines=1)
                    save_msg = gr.Markdown(elem_id="save-msg")
                    final_full = gr.DownloadButton("Download A at full size", size="sm", elem_id="download-final")
            with gr.Row(equal_height=True):
                stage_images = [
                    gr.Image(label=STAGE_LABELS[name], format="png", interactive=False, height=200,
                             elem_classes=["stage"], elem_id=f"stage-{name}", buttons=["download", "fullscreen"])
                    for name in STAGES
                ]
            drawn_md = gr.Markdown(elem_id="drawn")  # what A is made of, drawn or chosen: under the stages
            with gr.Row():
                with gr.Column(scale=2):
                    grid = gr.Gallery(label="All prompts (Î per prompt; click one to open it)", columns=5,
                                      height=300)
                with gr.Column(scale=1):
                    choices_json = gr.JSON(label="Choices", elem_id="choices", height=300)
            grid_ids = gr.State([])

        with gr.Tab("Prompt library", id="prompts") as prompts_tab:
            with gr.Row():
                with gr.Column(scale=1):
                    gr.Markdown("Edit prompts in the table (tick *enabled*), then **Save**. Used by every later run.")
                    table = gr.Dataframe(headers=["prompt", "enabled"], datatype=["str", "bool"], interactive=True,
                                         label="Prompts")
                    template = gr.Textbox(label="Template (exactly one {prompt})")
                    with gr.Row():
                        save_p = gr.Button("Save", variant="primary", elem_id="save-prompts")
                        reset_p = gr.Button("Reset to the paper's nine")
                    with gr.Row():
                        new_prompt = gr.Textbox(placeholder="new prompt, e.g. foggy morning", show_label=False,
                                                scale=2)
                        add_p = gr.Button("Add")
                        del_p = gr.Button("Delete selected row")
                    prompt_msg = gr.Markdown(elem_id="prompt-msg")  # next to the buttons that cause it
                    with gr.Accordion("Import or download the library (JSON or TOML, the prompts/ format)",
                                      open=False):
                        with gr.Row():
                            import_f = gr.File(label="Import JSON/TOML", file_types=[".json", ".toml"], height=140)
                            with gr.Column():
                                fmt = gr.Radio(["JSON", "TOML"], value="JSON", label="Download format")
                                download_p = gr.Button("Download library")
                                download_f = gr.File(label="Library file", interactive=False, height=100)
                with gr.Column(scale=1):
                    gr.Markdown("### Which prompts work on your data\nPer prompt, from the workspace's scores "
                                "(`report` on the command line): disable the prompts that lose the class.")
                    with gr.Row():
                        r_metric = gr.Dropdown([(words, key) for key, words in report_views.REPORT_METRICS.items()],
                                               value="mean_label_prob", label="Plot", elem_id="report-metric")
                        r_label = gr.Dropdown(["all"], value="all", label="Class (plot)", elem_id="report-label")
                    with gr.Row():
                        r_by_class = gr.Checkbox(label="Table per prompt and class", elem_id="report-by-class")
                        r_refresh = gr.Button("Refresh report", size="sm")
                    r_note = gr.Markdown(elem_id="report-note")
                    r_plot = gr.BarPlot(x="prompt", y="value", sort="y", y_lim=[0, 1], x_label_angle=-30,
                                        height=320, show_label=False, elem_id="report-plot")
            r_table = gr.Dataframe(label="Prompt report", interactive=False, elem_id="report-table")
            selected_row = gr.State(None)

        with gr.Tab("Dataset", id="dataset"):
            gr.Markdown("A dataset is a folder (or zip) of class folders: `train/<class>/<image>`. "
                        "Running it again resumes; a larger *m* adds only what is missing.")
            with gr.Row():
                zip_in = gr.File(label="Upload a zip of class folders", file_types=[".zip"], height=140)
                with gr.Column():
                    extract_btn = gr.Button("Extract into the workspace")
                    train_dir = gr.Textbox(
                        label="Dataset (an upload's handle" + (", or a folder on this machine)" if config.typed_folders
                                                               else "; typed server folders are off)"),
                        interactive=config.typed_folders, elem_id="train-dir",
                    )
            with gr.Accordion("Uploaded datasets", open=False):
                uploads_table = gr.Dataframe(headers=["id", "name", "classes", "files", "size", "uploaded"],
                                             interactive=False, wrap=True, elem_id="uploads")
                uploads_msg = gr.Markdown()
                with gr.Row():
                    upload_id = gr.Textbox(label="Upload id (click a row)", max_lines=1, scale=2)
                    use_upload = gr.Button("Use this dataset")
                    delete_upload = gr.Button("Delete this upload", variant="stop")
            with gr.Row():
                per_image = gr.Slider(1, 20, value=1, step=1, label="m (augmentations per image)")
                d_seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                d_lam = gr.Slider(0.0, 1.0, value=0.2, step=0.01, label="λ")
            with gr.Row():
                d_steps = gr.Slider(1, 100, value=config.steps, step=1, label="Steps")
                d_res = gr.Dropdown([64, 128, 256, 384, 512, 768], value=config.resolution, label="Resolution")
                d_batch = gr.Slider(1, 16, value=4, step=1, label="Batch size")
                d_all = gr.Checkbox(label="All prompts (one per enabled prompt)")
            with gr.Row():
                run_btn = gr.Button("Run", variant="primary")
                cancel_btn = gr.Button("Cancel", variant="stop")
            run_msg = gr.Markdown()
            run_json = gr.JSON(label="Run summary")

        with gr.Tab("Curate", id="curate"):
            with gr.Row(equal_height=True):
                f_label = gr.Dropdown(["all"], value="all", label="Label", allow_custom_value=True, elem_id="f-label")
                f_prompt = gr.Dropdown(["all"], value="all", label="Prompt", allow_custom_value=True,
                                       elem_id="f-prompt")
                f_status = gr.Dropdown(["all", *STATUSES], value="pending", label="Status", elem_id="f-status")
                f_flags = gr.Dropdown(list(query_filters.FLAG_FILTERS), value="all", label="Quality flags",
                                      elem_id="f-flags")
                f_sort = gr.Dropdown([(words, key) for key, (words, _) in query_filters.SORTS.items()], value="newest",
                                     label="Sort", elem_id="f-sort")
                refresh_btn = gr.Button("Refresh", scale=0, min_width=90)
            with gr.Row():
                f_ranges = [
                    gr.Slider(0, 1, value=0, step=0.01, label="label prob of A ≥", elem_id="f-min-p"),
                    gr.Slider(0, 1, value=1, step=0.01, label="label prob of A ≤", elem_id="f-max-p"),
                    gr.Slider(0, 1, value=0, step=0.01, label="drift ≥", elem_id="f-min-drift"),
                    gr.Slider(0, 1, value=1, step=0.01, label="drift ≤", elem_id="f-max-drift"),
                ]
            with gr.Row():
                with gr.Column(scale=3):
                    page_md = gr.Markdown(elem_id="curate-page")
                    gr.Markdown("Click an augmentation to view it; selecting is separate (*Select / unselect*, "
                                "*Select this page*). Selected ones have a green frame and ✓. Captions: id, status, "
                                "p = label prob of A (* untrained scorer), drift, ⚑ flags, label, prompt.",
                                elem_classes=["hint"])
                    gallery = gr.Gallery(label="Augmentations", show_label=False, columns=5, height=640,
                                         allow_preview=False, object_fit="contain", elem_id="curate-gallery")
                    with gr.Row():
                        prev_btn = gr.Button("◀ Previous page", size="sm", elem_id="prev-page")
                        next_btn = gr.Button("Next page ▶", size="sm", elem_id="next-page")
                        sel_page_btn = gr.Button("Select this page", size="sm", elem_id="select-page")
                        clear_btn = gr.Button("Clear selection", size="sm", elem_id="clear-selection")
                    selection_md = gr.Markdown("Nothing selected.", elem_id="curate-selection")
                    with gr.Row():
                        s_approve = gr.Button("Approve selected…", elem_id="approve-selected")
                        s_reject = gr.Button("Reject selected…", elem_id="reject-selected")
                        m_approve = gr.Button("Approve all matching…", elem_id="approve-matching")
                        m_reject = gr.Button("Reject all matching…", variant="stop", elem_id="reject-matching")
                        undo_btn = gr.Button("Undo last bulk decision", elem_id="undo-review")
                    with gr.Row(visible=False, elem_id="bulk-confirm") as bulk_row:
                        bulk_q = gr.Markdown(elem_id="bulk-question")
                        bulk_yes = gr.Button("Confirm", variant="primary", scale=0, min_width=110,
                                             elem_id="bulk-yes")
                        bulk_no = gr.Button("Cancel", scale=0, min_width=90, elem_id="bulk-no")
                    curate_msg = gr.Markdown(elem_id="curate-msg")
                with gr.Column(scale=2):
                    detail_md = gr.Markdown("Click an augmentation to view it.", elem_id="curate-detail")
                    with gr.Row():
                        view_id = gr.Number(label="View # (Enter)", precision=0, minimum=1, min_width=90,
                                            elem_id="view-id")
                        with gr.Column(scale=3):
                            with gr.Row():
                                c_select = gr.Button("Select / unselect", min_width=90, elem_id="toggle-select")
                                c_approve = gr.Button("Approve this", min_width=90, elem_id="approve-this")
                                c_reject = gr.Button("Reject this", min_width=90, elem_id="reject-this")
                            item_msg = gr.Markdown(elem_id="item-msg")
                    c_stages = []
                    for names in (STAGES[:3], STAGES[3:]):
                        with gr.Row():
                            c_stages += [gr.Image(label=STAGE_LABELS[n], format="png", interactive=False, height=130,
                                                  min_width=80, elem_classes=["stage"], elem_id=f"curate-{n}",
                                                  buttons=["fullscreen"]) for n in names]
                    c_scores = gr.Dataframe(headers=details.DETAIL_COLUMNS, label="Scores", interactive=False,
                                            elem_id="curate-scores")
                    c_history = gr.Dataframe(headers=details.HISTORY_COLUMNS, label="Decision history",
                                             interactive=False, elem_id="curate-history")
            with gr.Row():
                with gr.Column():
                    gr.Markdown("### Distribution of a score, and a threshold")
                    with gr.Row():
                        h_score = gr.Dropdown([(spec.title, key) for key, spec in histograms.HISTOGRAM_SCORES.items()],
                                              value="label_prob", label="Score", elem_id="h-score")
                        h_threshold = gr.Slider(0, 1, value=0.2, step=0.01, label="Threshold",
                                                elem_id="h-threshold")
                    h_plot = gr.BarPlot(x="bin", y="count", color="side", x_title="label prob of A", y_title="items",
                                        color_map={"kept": "#94a3b8", "rejected": "#dc2626"}, x_label_angle=-45,
                                        height=260, show_label=False, elem_id="h-plot")
                    h_md = gr.Markdown(elem_id="h-count")
                    h_reject = gr.Button("Reject the shown past the threshold…", variant="stop",
                                         elem_id="h-reject")
                    with gr.Row(visible=False, elem_id="h-confirm") as h_row:
                        h_q = gr.Markdown(elem_id="h-question")
                        h_yes = gr.Button("Confirm", variant="primary", scale=0, min_width=110, elem_id="h-yes")
                        h_no = gr.Button("Cancel", scale=0, min_width=90, elem_id="h-no")
                    h_msg = gr.Markdown(elem_id="h-msg")
                with gr.Column():
                    gr.Markdown("### Auto review (the rules of `review --auto`)\nOnly *pending* augmentations of "
                                "the label and prompt filtered above are judged; what the ticked rules reject is "
                                "recorded as one decision of origin `auto`.")
                    with gr.Row(equal_height=True):
                        a_use_p = gr.Checkbox(value=True, label="reject label prob of A below", elem_id="auto-use-p")
                        a_min_p = gr.Number(value=0.2, minimum=0, maximum=1, step=0.01, show_label=False,
                                            elem_id="auto-min-p")
                    with gr.Row(equal_height=True):
                        a_use_d = gr.Checkbox(label="reject drift above", elem_id="auto-use-drift")
                        a_max_d = gr.Number(value=0.9, minimum=0, maximum=1, step=0.01, show_label=False,
                                            elem_id="auto-max-drift")
                    a_flagged = gr.Checkbox(label="reject flagged (a quality flag on A or Î)", elem_id="auto-flagged")
                    a_dry = gr.Button("Dry run: count", elem_id="auto-dry-run")
                    a_md = gr.Markdown(elem_id="auto-msg")
                    a_table = gr.Dataframe(headers=["by", "name", "would reject"], interactive=False,
                                           max_height=260, elem_id="auto-table")
                    with gr.Row(visible=False, elem_id="auto-confirm") as a_row:
                        a_yes = gr.Button("Apply: reject these", variant="stop", elem_id="auto-apply")
                        a_no = gr.Button("Cancel", elem_id="auto-cancel")
            c_table = gr.Dataframe(headers=pages.TABLE_COLUMNS, label="This page as a table (click a row to "
                                   "view it)", interactive=False, wrap=True, max_height=420, elem_id="curate-table")
            query_st = gr.State(None)  # the filter shown (query_filters.CurationQuery)
            page_st = gr.State(0)
            ids_st = gr.State([])  # ids of the page shown, in order
            sel_st = gr.State(selections.Selection())
            bulk_st = gr.State(None)  # a counted, unconfirmed decision_plans.DecisionPlan
            h_st = gr.State(None)
            auto_st = gr.State(None)  # a dry run's score_queries.AutoPlan
            viewed_st = gr.State(None)  # the id of the augmentation viewed

        with gr.Tab("Export", id="export"):
            gr.Markdown("One zip holding one folder named after the export (`<when>-<status>-<id>/`): "
                        "`<label>/aug_<id>.png` (ImageFolder; `<label>/orig_<source>.png` with the originals), "
                        "`metadata.csv` (Hugging Face imagefolder) and `manifest.sqlite`. Unzip it and point "
                        "`ImageFolder` or `load_dataset(\"imagefolder\", data_dir=…)` at that folder.")
            with gr.Row():
                e_status = gr.Dropdown(["approved", "pending", "rejected", "all"], value="approved", label="Status")
                e_orig = gr.Checkbox(label="Include originals")
                export_btn = gr.Button("Export", variant="primary", elem_id="export")
            export_file = gr.File(label="Export zip", interactive=False, elem_id="export-file")
            export_msg = gr.Markdown(elem_id="export-msg")
            exports_table = gr.Dataframe(label="Past exports (newest first)", headers=list(EXPORT_COLUMNS.values()),
                                         interactive=False, wrap=True)

        # ---------------------------------------------------------------------------------- wiring: Explore
        stage_outputs = [*stage_images, choices_json]
        set_id = dict(fn=lambda c: (c or {}).get("result_id", ""), inputs=choices_json, outputs=result_id,
                      api_visibility="private", queue=False)
        augment_inputs = [image_in, prompt_dd, mask_dd, lam, seed, fractal_dd, fractal_up]
        remix_inputs = [result_id, lam, mask_dd, fractal_dd, fractal_up]
        all_inputs = [image_in, mask_dd, lam, seed]
        # API callers get errors raised (the named endpoints hang on a hidden button); the buttons show an error in
        # the message under Generate and leave the stages as they are
        api_only.click(error_to_gradio(studio.augment), augment_inputs, stage_outputs, api_name="augment",
                       **model_events)
        api_only.click(error_to_gradio(studio.remix), remix_inputs, stage_outputs, api_name="remix",
                       concurrency_limit=4)
        api_only.click(error_to_gradio(studio.all_prompts), all_inputs, [grid, grid_ids], api_name="all_prompts",
                       **model_events)
        generate_btn.click(
            show_errors(studio.augment, 7, 8, clears=True), augment_inputs, [*stage_outputs, explore_msg],
            api_visibility="private", **model_events,
        ).then(**set_id).then(studio.model.status, None, status_md, api_visibility="private", queue=False)
        gr.on(
            [lam.release, mask_dd.input, fractal_dd.input, fractal_up.change],
            show_errors(studio.remix, 7, 8, clears=True), remix_inputs, [*stage_outputs, explore_msg],
            api_visibility="private", trigger_mode="always_last", concurrency_limit=4, show_progress="hidden",
        )
        all_btn.click(
            show_errors(studio.all_prompts, 2, 3, clears=True), all_inputs, [grid, grid_ids, explore_msg],
            api_visibility="private", **model_events,
        ).then(studio.model.status, None, status_md, api_visibility="private", queue=False)
        grid.select(error_to_gradio(studio.pick_from_grid), grid_ids, [*stage_outputs, result_id],
                    api_visibility="private")
        choices_json.change(studio.drawn, choices_json, [drawn_md, prompt_dd, mask_dd, fractal_dd],
                            api_visibility="private", queue=False)  # after Generate, a re-mix, a grid pick
        explore_inputs = [result_id, lam, mask_dd, fractal_dd, fractal_up, label_in]
        approve_btn.click(error_to_gradio(studio.approve), explore_inputs, save_msg, api_name="approve",
                          concurrency_limit=8)
        reject_btn.click(error_to_gradio(studio.reject), explore_inputs, save_msg, api_name="reject",
                         concurrency_limit=8)
        final_full.click(error_to_gradio(studio.download_final), explore_inputs[:5], final_full,
                         api_name="download_final")

        # ---------------------------------------------------------------------------------- wiring: prompts
        prompt_outputs = [table, template, prompt_msg, prompt_dd]
        save_p.click(error_to_gradio(studio.save_prompts), [table, template], prompt_outputs, api_name="save_prompts")
        add_p.click(error_to_gradio(studio.add_prompt), [table, template, new_prompt], prompt_outputs,
                    api_visibility="private").then(lambda: "", None, new_prompt, api_visibility="private")
        table.select(_row_of, None, selected_row, api_visibility="private")
        del_p.click(error_to_gradio(studio.delete_prompt), [table, template, selected_row], prompt_outputs,
                    api_visibility="private")
        reset_p.click(error_to_gradio(studio.reset_prompts), None, prompt_outputs, api_name="reset_prompts")
        import_f.upload(error_to_gradio(studio.import_prompts), import_f, prompt_outputs, api_name="import_prompts")
        download_p.click(error_to_gradio(studio.download_prompts), fmt, download_f, api_name="download_prompts")
        report_inputs, report_outputs = [r_by_class, r_metric, r_label], [r_table, r_plot, r_note, r_label]
        gr.on([r_refresh.click, r_by_class.change, r_metric.change, r_label.change, prompts_tab.select],
              show_errors(studio.prompt_report, 2, 4), report_inputs, report_outputs, api_name="prompt_report",
              trigger_mode="always_last")

        # ---------------------------------------------------------------------------------- wiring: dataset
        uploads_outputs = [uploads_table, uploads_msg]
        extract_btn.click(error_to_gradio(studio.extract_zip), zip_in, [train_dir, run_msg], api_name="extract_zip"
                          ).then(studio.uploads_table, None, uploads_outputs, api_visibility="private")
        uploads_table.select(_cell_of_row(0), None, upload_id, api_visibility="private")
        use_upload.click(lambda i: f"upload:{i.strip()}" if i and i.strip() else gr.skip(), upload_id, train_dir,
                         api_visibility="private")
        delete_upload.click(error_to_gradio(studio.delete_upload), upload_id, uploads_msg, api_name="delete_upload"
                            ).then(studio.uploads_table, None, uploads_outputs, api_name="list_uploads")
        run_btn.click(
            error_to_gradio(studio.run_dataset),
            [train_dir, per_image, d_seed, d_lam, d_steps, d_res, d_batch, d_all], [run_msg, run_json],
            api_name="run_dataset", **model_events,
        )
        cancel_btn.click(studio.cancel_run, None, run_msg, api_name="cancel_run", queue=False)

        # ---------------------------------------------------------------------------------- wiring: curate
        # A click views; Select / Select page / Clear change the selection; a new filter or a bulk decision clears
        # it; bulk decisions are counted, then confirmed. Errors show in the message next to the button.
        filters = [f_label, f_prompt, f_status, f_flags, f_sort, *f_ranges]
        page_outputs = [gallery, page_md, c_table, selection_md, page_st, ids_st]
        curate_outputs = [*page_outputs, query_st, sel_st, bulk_st, bulk_row, h_st, h_row, auto_st, a_row]
        same_page = [query_st, page_st, sel_st]
        hist_inputs, hist_outputs = [query_st, h_score, h_threshold], [h_plot, h_md, h_reject]
        view_outputs = [*c_stages, detail_md, c_scores, c_history, item_msg, viewed_st]
        verb = {"approved": "approve", "rejected": "reject"}
        # the named events first: a private event of the same function would take the name
        gr.on([h_score.change, h_threshold.release], show_errors(studio.threshold, 1, 3), hist_inputs,
              hist_outputs, api_name="threshold", trigger_mode="always_last")
        view_id.submit(show_errors(studio.curate_view, 9, 11), [view_id, sel_st], view_outputs, api_name="view")
        again = dict(fn=show_errors(lambda query, number, selection: studio.turn_page(query, number, 0, selection),
                                    1, 6), inputs=same_page, outputs=page_outputs, api_visibility="private")
        show_hist = dict(fn=show_errors(studio.threshold, 1, 3), inputs=hist_inputs, outputs=hist_outputs,
                         api_visibility="private")
        view = dict(fn=show_errors(studio.curate_view, 9, 11), inputs=[view_id, sel_st], outputs=view_outputs,
                    api_visibility="private")
        curate = show_errors(studio.curate, 1, len(curate_outputs))
        gr.on([refresh_btn.click, *(f.change for f in filters[:5]), *(f.release for f in f_ranges)], curate,
              filters, curate_outputs, api_name="curate", trigger_mode="always_last").then(**show_hist)
        refresh_btn.click(studio.filter_choices, None, [f_label, f_prompt], api_visibility="private")
        for button, delta, name in ((prev_btn, -1, "previous_page"), (next_btn, 1, "next_page")):
            button.click(show_errors(lambda query, number, selection, d=delta: studio.turn_page(
                query, number, d, selection), 1, 6), same_page, page_outputs, api_name=name)
        gallery.select(_pick_id, ids_st, view_id, api_visibility="private", queue=False).then(**view)
        # a page shown again keeps its ring on the item viewed, not on the position clicked before
        gallery.change(_ring_on, [ids_st, viewed_st], gallery, api_visibility="private", queue=False,
                       show_progress="hidden")
        c_table.select(_cell_of_row(1), None, view_id, api_visibility="private", queue=False).then(**view)
        for button, how, name in ((c_select, "toggle", "toggle_selection"), (sel_page_btn, "page", "select_page"),
                                  (clear_btn, "clear", "clear_selection")):
            change = show_errors(lambda query, number, selection, ids, viewed, h=how: studio.change_selection(
                h, query, number, selection, ids, viewed), 1, 7)
            event = button.click(change, [query_st, page_st, sel_st, ids_st, viewed_st], [*page_outputs, sel_st],
                                 api_name=name)
            if how == "toggle":
                event.then(**view)  # the detail says whether it is selected
        for button, status, which in ((s_approve, "approved", "selected"), (s_reject, "rejected", "selected"),
                                      (m_approve, "approved", "matching"), (m_reject, "rejected", "matching")):
            button.click(show_errors(lambda q, s, st=status, w=which: studio.plan_bulk(st, w, q, s), 3, 4),
                         [query_st, sel_st], [bulk_st, bulk_q, bulk_row, curate_msg],
                         api_name=f"plan_{verb[status]}_{which}")  # /plan_approve_selected, ...
        bulk_yes.click(show_errors(studio.confirm, 0, 4), bulk_st, [curate_msg, bulk_st, bulk_row, sel_st],
                       api_name="confirm_bulk", concurrency_limit=4).then(**again).then(**show_hist)
        bulk_no.click(studio.cancel, None, [curate_msg, bulk_st, bulk_row], api_visibility="private")
        for button, status in ((c_approve, "approved"), (c_reject, "rejected")):
            button.click(show_errors(lambda viewed, st=status: studio.review_this(st, viewed), 0, 1), viewed_st,
                         item_msg, api_name=f"{verb[status]}_this", concurrency_limit=4).then(**again).then(**view)
        undo_btn.click(show_errors(studio.undo_review, 0, 1), None, curate_msg, api_name="undo_review"
                       ).then(**again).then(**show_hist)
        h_reject.click(show_errors(studio.plan_threshold, 3, 4), hist_inputs, [h_st, h_q, h_row, h_msg],
                       api_name="plan_threshold")
        h_yes.click(show_errors(studio.confirm, 0, 4), h_st, [h_msg, h_st, h_row, sel_st],
                    api_name="confirm_threshold", concurrency_limit=4).then(**again).then(**show_hist)
        h_no.click(studio.cancel, None, [h_msg, h_st, h_row], api_visibility="private")
        a_dry.click(show_errors(studio.auto_dry_run, 0, 4), [query_st, a_use_p, a_min_p, a_use_d, a_max_d, a_flagged],
                    [a_md, a_table, auto_st, a_row], api_name="auto_review_dry_run")
        a_yes.click(show_errors(studio.auto_apply, 0, 4), auto_st, [a_md, auto_st, a_row, sel_st],
                    api_name="auto_review_apply", concurrency_limit=4).then(**again).then(**show_hist)
        a_no.click(studio.cancel, None, [a_md, auto_st, a_row], api_visibility="private")

        # ---------------------------------------------------------------------------------- wiring: export
        export_btn.click(show_errors(studio.export, 1, 2), [e_status, e_orig], [export_file, export_msg],
                         api_name="export").then(_exports_table(studio), None, exports_table, api_visibility="private")

        # ---------------------------------------------------------------------------------- on page load
        demo.load(studio.get_prompts, None, [table, template, prompt_dd], api_name="get_prompts")
        demo.load(studio.model.status, None, status_md, api_visibility="private")
        demo.load(_exports_table(studio), None, exports_table, api_name="list_exports")
        demo.load(studio.filter_choices, None, [f_label, f_prompt], api_visibility="private")
        demo.load(studio.uploads_table, None, uploads_outputs, api_visibility="private")
        demo.load(curate, filters, curate_outputs, api_visibility="private").then(**show_hist)
        demo.load(show_errors(studio.prompt_report, 2, 4), report_inputs, report_outputs, api_visibility="private")

    demo.queue(max_size=64, default_concurrency_limit=2)
    demo.studio = studio  # for tests and benchmarks
    return demo


def _cell_of_row(column: int) -> Callable:
    """A select handler giving column `column` of the clicked row of a Dataframe."""

    def cell(evt: gr.SelectData):
        return evt.row_value[column] if evt.row_value else gr.skip()

    return cell


def _row_of(evt: gr.SelectData) -> int | None:
    index = evt.index
    return int(index[0]) if isinstance(index, (list, tuple)) else int(index)


def _ring_on(ids: list[int], viewed: int | None):
    """The gallery's highlight on the viewed item if the page shows it, else on none."""
    return gr.Gallery(selected_index=ids.index(viewed) if ids and viewed in ids else None)


def _pick_id(ids: list[int], evt: gr.SelectData):
    """The augmentation id of the clicked tile (viewing it changes nothing else)."""
    return ids[evt.index] if ids and 0 <= evt.index < len(ids) else gr.skip()


EXPORT_COLUMNS = {"created_at": "when", "status_filter": "status", "count": "augmentations",
                  "originals": "originals", "zip_path": "zip", "path": "folder"}


def _exports_table(studio: Studio) -> Callable:
    def exports():
        import pandas as pd

        rows = studio.workspace.manifest.list_exports()[::-1]  # newest first
        for row in rows:  # file names only: no server paths in answers
            row["zip_path"] = Path(row["zip_path"]).name if row.get("zip_path") else ""
            row["path"] = Path(row["path"]).name
        table = pd.DataFrame(rows, columns=list(EXPORT_COLUMNS))
        return table.rename(columns=EXPORT_COLUMNS)

    return exports


def launch_kwargs(config: AppConfig, args: argparse.Namespace | None = None) -> dict:
    """launch() arguments: files served from the workspace only, upload size capped, theme and css."""
    kwargs: dict[str, Any] = dict(
        # served: the export zips (and the stage images in Gradio's cache); never the manifest, the store's other
        # files or the uploaded datasets of the workspace
        allowed_paths=[str(config.exports_dir)],
        blocked_paths=[str(config.workspace)],
        max_file_size=config.max_file_size,
        theme=gr.themes.Soft(),
        css=CSS,
        ssr_mode=False,
        footer_links=["api"],
    )
    if args is not None:
        kwargs.update(server_name=args.host, server_port=args.port, share=args.share, auth=parse_auth(args.auth))
    return kwargs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes
    config = config_from_args(args)
    try:
        demo = build_app(config)
    except DiffuseMixError as exc:  # e.g. a workspace whose manifest is gone: one sentence, as the CLI says it
        if args.verbose:
            raise
        raise SystemExit(f"error: {exc}") from None
    demo.launch(**launch_kwargs(config, args))


if __name__ == "__main__":
    main()
