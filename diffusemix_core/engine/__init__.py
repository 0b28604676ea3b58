"""The DiffuseMix engine: masks, mixing, fractals, prompts, drift, image loading, the denoising loop, model
loading, the test models and GPU tuning. Pure maths and generation; imports nothing above it (no gradio,
sqlite-utils or ray)."""
