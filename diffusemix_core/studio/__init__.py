"""The app's state and logic without Gradio, one module per job, each tested without a browser.

config (AppConfig), state (Studio: what all sessions share), model (the model holder, one generator per
GenerationSettings), served (the pixel limit, the result cache, the stage files), explore (generate, re-mix, decide),
prompts (editing the prompt library from a table), dataset (the typed-folder sandbox, uploads, bulk runs),
exports (export zips and the list of past ones). The tabs in :mod:`diffusemix_core.ui` call these.
"""
