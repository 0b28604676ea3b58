"""DiffuseMix Studio: the Gradio app (layout and event wiring; every computation is a call into diffusemix_core).

    python app.py [--model ID] [--workspace W] [--host 127.0.0.1] [--port 7860] [--share] [--auth user:pass]

Environment variables stand in for the flags where a platform starts the app without arguments (a Hugging Face
Space runs ``python app.py``): DIFFUSEMIX_MODEL, DIFFUSEMIX_WORKSPACE, DIFFUSEMIX_AUTH, DIFFUSEMIX_RESOLUTION,
DIFFUSEMIX_STEPS, GRADIO_SERVER_NAME, GRADIO_SERVER_PORT. A Space is detected from SPACE_ID: then server-side
folder paths are disabled and only uploaded zips can be augmented in bulk.

Named API endpoints (see the README): /augment, /remix, /all_prompts, /approve, /reject, /save_prompts,
/get_prompts, /run_dataset, /cancel_run, /curate, /export, /list_exports.
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

from diffusemix_core.engine import STAGE_NAMES as STAGES, AugmentationRecord, DiffuseMix, Mixer
from diffusemix_core.errors import DiffuseMixError
from diffusemix_core.fractals import FractalLibrary
from diffusemix_core.generation import DEFAULT_MODEL  # torch-free at import: the model loads lazily
from diffusemix_core.random_models import UNTRAINED_NOTE, is_test_model
from diffusemix_core.masks import ALL_MASK_KINDS, MASK_KINDS
from diffusemix_core.prompts import PromptEntry, PromptLibrary
from diffusemix_core.bulk import run_augment
from diffusemix_core.interactive import (
    DEFAULT_INTERACTIVE_PIXELS,
    ModelHolder,
    ResultCache,
    StageFiles,
    load_interactive,
)
from diffusemix_core.manifest import STATUSES
from diffusemix_core.uploads import Uploads, parse_size
from diffusemix_core.workspace import Workspace

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
GALLERY_LIMIT = 300
CSS = """
#test-model-banner {border-left: 4px solid #d97706; padding-left: 0.6em;}
footer {display: none !important;}
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


@gpu_task
def generate_record(engine: DiffuseMix, image: np.ndarray, **choices) -> AugmentationRecord:
    """The GPU-bound step of Generate (decorated with spaces.GPU on ZeroGPU)."""
    return engine.augment(image, **choices)


@gpu_task
def generate_all_prompts(engine: DiffuseMix, image: np.ndarray, **choices) -> list[AugmentationRecord]:
    """The GPU-bound step of All prompts (decorated with spaces.GPU on ZeroGPU)."""
    return engine.augment_all_prompts(image, **choices)


@gpu_task
def run_dataset_job(workspace: Workspace, train_dir: Path, **kwargs):
    """The GPU-bound bulk run (decorated with spaces.GPU on ZeroGPU)."""
    return run_augment(workspace, train_dir, **kwargs)


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
                self.workspace.review(status, ids=[aug_id], origin="app")
                return f"Marked #{aug_id} {status}."
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
        root = self.config.data_root
        if root is not None and path != root and root not in path.parents:
            raise gr.Error(f"Folder '{text}' is outside the data root this app was started with; give a folder "
                           "inside it.")
        if not path.is_dir():
            raise gr.Error(f"Folder '{text}' does not exist; give a folder holding one sub-folder per class.")
        return path

    def run_dataset(self, train_dir, per_image, seed, lam, steps, resolution, batch_size, all_prompts,
                    request: gr.Request, progress=gr.Progress()):
        """Bulk augmentation of a class-folder dataset into the workspace; resumes when run again."""
        path = self.check_train_dir(train_dir)
        cancel = self.cancel_event(request, reset=True)
        progress(0, desc=f"Loading model {self.config.model}…")
        generator = self.model.generator(steps=int(steps), resolution=int(resolution))

        def report(p) -> None:
            progress((p.done, max(p.total, 1)), desc=f"Augmenting: {p.describe()}", unit="augmentations")

        summary = run_dataset_job(
            self.workspace, path, per_image=int(per_image), prompts=self.workspace.manifest.get_prompt_library(),
            fractals=self.fractals, lam=float(lam), settings=generator.settings, batch_size=int(batch_size),
            seed=int(seed), all_prompts=bool(all_prompts), generator=generator, progress=report, cancel=cancel,
        )
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
    def curate(self, label, prompt, status, order):
        """The gallery for a filter: (items, ids shown, summary line)."""
        rows = self.workspace.manifest.list_augmentations(
            label=None if label in (None, "", "all") else label,
            prompt=None if prompt in (None, "", "all") else prompt,
            status=None if status in (None, "", "all") else status,
            order="drift" if order == "drift (worst first)" else "id",
        )
        shown = rows[:GALLERY_LIMIT]
        items = [(self.final_path(row), caption(row)) for row in shown]
        more = f" (showing the first {GALLERY_LIMIT})" if len(rows) > GALLERY_LIMIT else ""
        return items, [int(row["id"]) for row in shown], f"{len(rows)} augmentations match{more}."

    def final_path(self, row: dict) -> str:
        """A of a workspace row as a PNG file for the gallery (composed from I, Î and F once, then cached)."""
        return self.files.path(f"ws-final/{row['id']}/{row['mask']}/{row['fractal']}/{row['lam']!r}",
                               self.workspace.final_image(row))

    def filter_choices(self):
        rows = self.workspace.manifest.list_augmentations()
        labels = sorted({str(r["label"]) for r in rows if r.get("label") is not None})
        prompts = sorted({str(r["prompt"]) for r in rows if r.get("prompt") is not None})
        return gr.Dropdown(choices=["all"] + labels), gr.Dropdown(choices=["all"] + prompts)

    def curate_select(self, ids: list[int], selected: list[int], evt: gr.SelectData):
        aug_id = ids[evt.index]
        record = self.workspace_record(aug_id)
        selected = sorted(set(selected or []) ^ {aug_id})
        return (*self.view(f"ws-{aug_id}", record), aug_id, selected, ", ".join(map(str, selected)))

    def review(self, status: str, which: str, current: int | None, selected: list[int] | None, ids: list[int] | None):
        """Set the status of the shown one, the selected ones, or all that the filter shows."""
        target = {"this": [current] if current else [], "selected": list(selected or []), "shown": list(ids or [])}[which]
        if not target:
            raise gr.Error("Nothing to review: select an augmentation in the gallery first.")
        decision = self.workspace.review(status, ids=target, origin="app")
        return f"Marked {decision.matched} augmentation(s) {status} ({decision.changed} changed)."

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

    # -- Export ---------------------------------------------------------------------------------------------
    def export(self, status="approved", include_originals=False):
        """Export the augmentations with this status as one zip (ImageFolder + metadata.csv + manifest.sqlite)."""
        folder = self.config.exports_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{status}-{uuid.uuid4().hex[:4]}"
        result = self.workspace.export(folder, status=status, include_originals=bool(include_originals),
                                       make_zip=True)
        noun = "augmentation" if result.count == 1 else "augmentations"
        return str(result.zip_path), f"Exported {result.count} {noun} to {result.zip_path.name}."



def caption(row: dict) -> str:
    drift = row.get("drift")
    drift_text = f" · drift {drift:.2f}" if isinstance(drift, (int, float)) else ""
    return f"#{row['id']} {row.get('label', '')} · {row.get('prompt', '')} · {row.get('status', '')}{drift_text}"


def describe_upload(dataset) -> str:
    """'Extracted 120 files: 2 classes, cats (60), dogs (60)' (or 'Already uploaded: …')."""
    head = "Already uploaded (nothing extracted again)" if dataset.reused else f"Extracted {dataset.files} files"
    classes = ", ".join(f"{name} ({n})" for name, n in dataset.classes[:30])
    more = f", … {len(dataset.classes) - 30} more" if len(dataset.classes) > 30 else ""
    return f"{head} from '{dataset.name}': {len(dataset.classes)} classes: {classes}{more}. Press Run to augment it."


def format_summary(info: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in info.items() if not isinstance(v, (list, dict)))


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
                    f"⚠️ **Untrained test model** (`{config.model}`): {UNTRAINED_NOTE}; start with "
                    "`--model timbrooks/instruct-pix2pix` for real results.",
                    elem_id="test-model-banner",
                )
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    image_in = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=220,
                                        elem_id="input-image")
                    gr.Examples([[str(p)] for p in EXAMPLES if p.exists()], inputs=[image_in], label="Examples")
                with gr.Column(scale=1, min_width=260):
                    prompt_dd = gr.Dropdown(
                        [RANDOM] + studio.workspace.manifest.get_prompt_library().enabled(), value=RANDOM, label="Prompt"
                    )
                    mask_dd = gr.Dropdown(mask_choices, value=RANDOM, label="Mask (half of I kept)")
                    fractal_dd = gr.Dropdown(fractal_choices, value=RANDOM, label="Fractal")
                    fractal_up = gr.Image(label="…or upload a fractal", type="filepath", height=90,
                                          sources=["upload"])
                with gr.Column(scale=1, min_width=260):
                    lam = gr.Slider(0.0, 1.0, value=0.2, step=0.01, label="λ (fractal blend)", elem_id="lam")
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                    label_in = gr.Textbox(label="Class label (used when saved)", placeholder="unlabelled")
                    with gr.Row():
                        generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                        all_btn = gr.Button("All prompts")
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
            with gr.Row():
                with gr.Column(scale=2):
                    grid = gr.Gallery(label="All prompts (Î per prompt; click one to open it)", columns=5,
                                      height=300)
                with gr.Column(scale=1):
                    choices_json = gr.JSON(label="Choices", elem_id="choices", height=300)
            grid_ids = gr.State([])

        with gr.Tab("Prompt library", id="prompts"):
            gr.Markdown("Edit prompts in the table (tick *enabled*), then **Save**. Used by every later run.")
            table = gr.Dataframe(headers=["prompt", "enabled"], datatype=["str", "bool"], interactive=True,
                                 label="Prompts")
            template = gr.Textbox(label="Template (exactly one {prompt})")
            with gr.Row():
                save_p = gr.Button("Save", variant="primary")
                new_prompt = gr.Textbox(placeholder="new prompt, e.g. foggy morning", show_label=False, scale=2)
                add_p = gr.Button("Add")
                del_p = gr.Button("Delete selected row")
                reset_p = gr.Button("Reset to the paper's nine")
            with gr.Row():
                import_f = gr.File(label="Import JSON/TOML", file_types=[".json", ".toml"], height=140)
                with gr.Column():
                    fmt = gr.Radio(["JSON", "TOML"], value="JSON", label="Download format")
                    download_p = gr.Button("Download library")
                    download_f = gr.File(label="Library file", interactive=False, height=100)
            prompt_msg = gr.Markdown()
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
            with gr.Row():
                f_label = gr.Dropdown(["all"], value="all", label="Label", allow_custom_value=True)
                f_prompt = gr.Dropdown(["all"], value="all", label="Prompt", allow_custom_value=True)
                f_status = gr.Dropdown(["all", *STATUSES], value="pending", label="Status")
                f_order = gr.Radio(["newest", "drift (worst first)"], value="drift (worst first)", label="Sort")
                refresh_btn = gr.Button("Refresh")
            curate_msg = gr.Markdown()
            gallery = gr.Gallery(label="Augmentations (click: show + toggle selection)", columns=8, height=320,
                                 allow_preview=False)
            with gr.Row():
                c_approve = gr.Button("Approve this")
                c_reject = gr.Button("Reject this")
                s_approve = gr.Button("Approve selected")
                s_reject = gr.Button("Reject selected")
                a_approve = gr.Button("Approve all shown")
                a_reject = gr.Button("Reject all shown", variant="stop")
                undo_btn = gr.Button("Undo last bulk decision", elem_id="undo-review")
            selected_txt = gr.Textbox(label="Selected ids", interactive=False)
            with gr.Row():
                c_stages = [gr.Image(label=STAGE_LABELS[n], format="png", interactive=False, height=150,
                                     elem_classes=["stage"]) for n in STAGES]
            c_choices = gr.JSON(label="Choices")
            shown_ids = gr.State([])
            current_id = gr.State(None)
            selected_ids = gr.State([])

        with gr.Tab("Export", id="export"):
            gr.Markdown("One zip: `<label>/<file>.png` (ImageFolder), `metadata.csv` (Hugging Face imagefolder), "
                        "`manifest.sqlite`.")
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
        generate_btn.click(
            error_to_gradio(studio.augment), [image_in, prompt_dd, mask_dd, lam, seed, fractal_dd, fractal_up],
            stage_outputs, api_name="augment", **model_events,
        ).then(**set_id).then(studio.model.status, None, status_md, api_visibility="private", queue=False)
        gr.on(
            [lam.release, mask_dd.input, fractal_dd.input, fractal_up.change],
            error_to_gradio(studio.remix), [result_id, lam, mask_dd, fractal_dd, fractal_up], stage_outputs,
            api_name="remix", trigger_mode="always_last", concurrency_limit=4, show_progress="hidden",
        )
        all_btn.click(
            error_to_gradio(studio.all_prompts), [image_in, mask_dd, lam, seed], [grid, grid_ids],
            api_name="all_prompts", **model_events,
        ).then(studio.model.status, None, status_md, api_visibility="private", queue=False)
        grid.select(error_to_gradio(studio.pick_from_grid), grid_ids, [*stage_outputs, result_id],
                    api_visibility="private")
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
        filters = [f_label, f_prompt, f_status, f_order]
        curate_outputs = [gallery, shown_ids, curate_msg]
        refresh = dict(fn=error_to_gradio(studio.curate), inputs=filters, outputs=curate_outputs,
                       api_visibility="private")
        gr.on([refresh_btn.click, f_label.change, f_prompt.change, f_status.change, f_order.change],
              error_to_gradio(studio.curate), filters, curate_outputs, api_name="curate")
        refresh_btn.click(studio.filter_choices, None, [f_label, f_prompt], api_visibility="private")
        gallery.select(error_to_gradio(studio.curate_select), [shown_ids, selected_ids],
                       [*c_stages, c_choices, current_id, selected_ids, selected_txt], api_visibility="private")
        for button, status, which in (
            (c_approve, "approved", "this"), (c_reject, "rejected", "this"),
            (s_approve, "approved", "selected"), (s_reject, "rejected", "selected"),
            (a_approve, "approved", "shown"), (a_reject, "rejected", "shown"),
        ):
            button.click(
                error_to_gradio(lambda cur, sel, ids, s=status, w=which: studio.review(s, w, cur, sel, ids)),
                [current_id, selected_ids, shown_ids], curate_msg, api_visibility="private", concurrency_limit=4,
            ).then(**refresh)

        undo_btn.click(error_to_gradio(studio.undo_review), None, curate_msg, api_name="undo_review").then(**refresh)

        # ---------------------------------------------------------------------------------- wiring: export
        export_btn.click(error_to_gradio(studio.export), [e_status, e_orig], [export_file, export_msg],
                         api_name="export").then(_exports_table(studio), None, exports_table, api_visibility="private")

        # ---------------------------------------------------------------------------------- on page load
        demo.load(studio.get_prompts, None, [table, template, prompt_dd], api_name="get_prompts")
        demo.load(studio.model.status, None, status_md, api_visibility="private")
        demo.load(_exports_table(studio), None, exports_table, api_name="list_exports")
        demo.load(studio.filter_choices, None, [f_label, f_prompt], api_visibility="private")
        demo.load(studio.uploads_table, None, uploads_outputs, api_visibility="private")
        demo.load(**refresh)

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
    demo = build_app(config)
    demo.launch(**launch_kwargs(config, args))


if __name__ == "__main__":
    main()
