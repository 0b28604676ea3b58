"""DiffuseMix Studio: the Gradio app's entry point (the Hugging Face Space runs this file).

    python app.py [--model ID] [--workspace W] [--host 127.0.0.1] [--port 7860] [--share] [--auth user:pass]

Environment variables stand in for the flags where a platform starts the app without arguments (a Hugging Face
Space runs ``python app.py``): DIFFUSEMIX_MODEL, DIFFUSEMIX_WORKSPACE, DIFFUSEMIX_AUTH, DIFFUSEMIX_RESOLUTION,
DIFFUSEMIX_STEPS, DIFFUSEMIX_PRESET, GRADIO_SERVER_NAME, GRADIO_SERVER_PORT. A Space is detected from SPACE_ID: then server-side
folder paths are disabled and only uploaded zips can be augmented in bulk. Listening beyond this machine (--host,
--share) needs --auth, or --no-auth-i-know to say that anyone who reaches the port may use the app.

The tabs live in ``diffusemix_core/ui/`` (one module per tab), their work in ``diffusemix_core/studio/``. Named API
endpoints (see the README): /augment, /remix, /all_prompts, /approve, /reject, /save_prompts, /get_prompts,
/prompt_report, /run_dataset, /run_dataset_preset, /estimate, /preset_settings, /cancel_run, /curate (and the
Curate tab's /view, /next_page, /toggle_selection, /plan_…, /confirm_…, /threshold, /auto_review_… of the README's
table), /export, /list_exports.
"""

from __future__ import annotations

import logging

from diffusemix_core.errors import DiffuseMixError
from diffusemix_core.ui.app import build_app
from diffusemix_core.ui.config import AppConfig, config_from_args, exposure, launch, launch_kwargs, parse_args

__all__ = ["AppConfig", "build_app", "config_from_args", "launch_kwargs", "main", "parse_args"]

log = logging.getLogger("diffusemix_studio")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes
    warning = exposure(args)  # SystemExit: beyond this machine without a login, unless the user says so
    config = config_from_args(args)
    try:
        demo = build_app(config)
    except DiffuseMixError as exc:  # e.g. a workspace whose manifest is gone: one sentence, as the CLI says it
        if args.verbose:
            raise
        raise SystemExit(f"error: {exc}") from None
    if warning:
        log.warning("%s.", warning)
    launch(demo, config, args)


if __name__ == "__main__":
    main()
