"""How the app is started: its flags (and the environment variables that stand in for them), the config built from
them, who may reach it, and the arguments of ``launch()``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import gradio as gr

from ..engine.generation import DEFAULT_MODEL  # torch-free at import: the model loads lazily
from ..studio.config import LOOPBACK_HOSTS, AppConfig
from ..studio.model import APP_PRESETS
from ..studio.served import DEFAULT_INTERACTIVE_PIXELS
from ..workspace.uploads import parse_size
from .common import CSS

__all__ = ["AppConfig", "config_from_args", "exposure", "launch", "launch_kwargs", "parse_args", "parse_auth"]

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
                        help="interface to listen on; 0.0.0.0 exposes the app to the network and then needs --auth "
                             "(or --no-auth-i-know) (default %(default)s)")
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")),
                        help="port (default %(default)s)")
    parser.add_argument("--exports", default=env("DIFFUSEMIX_EXPORTS"),
                        help="folder for export zips (default: <workspace>-exports beside the workspace)")
    parser.add_argument("--share", action="store_true",
                        help="also open a public gradio.live link (needs --auth or --no-auth-i-know)")
    parser.add_argument("--auth", default=env("DIFFUSEMIX_AUTH"),
                        help="require a login, given as user:pass (env DIFFUSEMIX_AUTH)")
    parser.add_argument("--no-auth-i-know", action="store_true",
                        help="serve beyond this machine (--host, --share) without a login: anyone who reaches the "
                             "port can change decisions and download every image")
    parser.add_argument("--resolution", type=int, default=int(env("DIFFUSEMIX_RESOLUTION", "512")),
                        help="working resolution of the model in the Explore tab (default %(default)s)")
    parser.add_argument("--preset", default=env("DIFFUSEMIX_PRESET", "reference"), choices=APP_PRESETS,
                        help="the default preset of Explore and Dataset: reference (today's output, 60 UNet "
                             "evaluations per augmentation), fast (30) or fastest (10); the Dataset tab can pick "
                             "another per run (env DIFFUSEMIX_PRESET; default %(default)s)")
    parser.add_argument("--steps", type=int, default=int(env("DIFFUSEMIX_STEPS")) if env("DIFFUSEMIX_STEPS") else None,
                        help="denoising steps of the default preset, in Explore and Dataset (env DIFFUSEMIX_STEPS; "
                             "default: the preset's, 20 for reference)")
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
        preset=args.preset,
        device=args.device,
        fractal_dir=Path(args.fractal_dir) if args.fractal_dir else None,
        space_mode=bool(os.environ.get("SPACE_ID")),
        local=not os.environ.get("SPACE_ID") and not args.share and args.host in LOOPBACK_HOSTS,
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


def exposure(args: argparse.Namespace) -> str | None:
    """Who can reach the app without a login, in words (None: nobody but this machine's users, or a login).

    Raises SystemExit with the remedy when the app would listen beyond this machine without a login and the user
    did not say so explicitly (--no-auth-i-know), except on a Hugging Face Space (SPACE_ID set), where the Space's
    visibility decides who may open it.
    """
    space = os.environ.get("SPACE_ID")
    if args.auth or not (space or args.share or args.host not in LOOPBACK_HOSTS):
        return None
    if space:
        return (f"this app runs on the Hugging Face Space {space} without --auth: whoever can open the Space can "
                "change decisions and download every augmentation and original (make the Space private, or set "
                "DIFFUSEMIX_AUTH=user:pass)")
    where = "a public gradio.live link (--share)" if args.share else f"--host {args.host} on port {args.port}"
    if not args.no_auth_i_know:
        raise SystemExit(f"error: {where} makes the app reachable from other machines without a login, so anyone "
                         "who reaches it could change decisions and download every image; add --auth user:pass (or "
                         "set DIFFUSEMIX_AUTH), or pass --no-auth-i-know if that is what you want.")
    return (f"the app is reachable from other machines without a login ({where}, --no-auth-i-know): anyone who "
            "reaches it can change decisions and download every augmentation and original; add --auth user:pass to "
            "require one")


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


def launch(demo: gr.Blocks, config: AppConfig, args: argparse.Namespace) -> None:
    """Serve the app until it is stopped; a port in use is one line with the remedy (SystemExit), not a traceback."""
    try:
        demo.launch(**launch_kwargs(config, args))
    except OSError as exc:
        if "Cannot find empty port" not in str(exc):
            raise
        raise SystemExit(f"error: port {args.port} is in use on this machine (another program, or this app started "
                         "twice); pass --port N with a free port, or stop what listens there.") from None
