"""The app's tabs (Gradio): one module per tab, laid out and wired; every callback is a few lines that call
:mod:`diffusemix_core.studio`, where the logic and its tests live. :func:`build_app` assembles them."""

from .app import build_app
from .config import AppConfig, config_from_args, launch_kwargs, parse_args

__all__ = ["AppConfig", "build_app", "config_from_args", "launch_kwargs", "parse_args"]
