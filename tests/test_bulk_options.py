"""One options object from the command line to the pipeline (``bulk/options.py``): every `augment` flag lands in its
field, the mix options reach the Mixer (here and on a Ray worker), the run's row remembers them, and a changed
option is reported on the next run."""

from __future__ import annotations

import dataclasses
import inspect
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusemix_core.bulk.options import RUNNERS, AugmentOptions, MixOptions
from diffusemix_core.bulk.runner import run_augment
from diffusemix_core.cli.augment import options_from_args
from diffusemix_core.cli.main import build_parser, main
from diffusemix_core.engine.diffusemix import Mixer
from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.engine.generation import GenerationResult, GenerationSettings
from diffusemix_core.errors import BadArgumentError
from diffusemix_core.workspace.folder import Workspace

FRACTALS = FractalLibrary.procedural(3, seed=0, size=32)
TINY = ["--model", "tiny-random", "--resolution", "64", "--steps", "2"]

# every augment flag with a value other than its default, and the field it must set
FLAGS = {
    "--per-image": ("3", "per_image", 3),
    "--lam": ("0.35", "mix.lam", 0.35),
    "--feather": ("5", "mix.feather", 5),
    "--batch-size": ("7", "batch_size", 7),
    "--seed": ("9", "seed", 9),
    "--engine": ("ray", "runner", "ray"),
    "--address": ("auto", "ray_address", "auto"),
    "--workers": ("3", "workers", 3),
    "--gpus-per-worker": ("0.5", "gpus_per_worker", 0.5),
    "--cpus-per-worker": ("2", "cpus_per_worker", 2.0),
    "--scorer": ("tiny-random-clip", "scorer", "tiny-random-clip"),
    "--class-map": ("classes.txt", "class_map", Path("classes.txt")),
    "--steps": ("3", "settings.steps", 3),
    "--guidance-scale": ("2.5", "settings.guidance_scale", 2.5),
    "--image-guidance-scale": ("1.25", "settings.image_guidance_scale", 1.25),
    "--resolution": ("96", "settings.resolution", 96),
    "--model": ("tiny-random", "settings.model", "tiny-random"),
    "--device": ("cpu", "settings.device", "cpu"),
    "--dtype": ("float32", "settings.dtype", "float32"),
    "--revision": ("main", "settings.revision", "main"),
    "--stall-timeout": ("120", "stall_timeout", 120.0),
}
NO_FLAG = {"settings", "mix", "threads", "mix.masks"}  # options the command line does not set


def field_value(options: AugmentOptions, dotted: str):
    value = options
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def test_every_augment_flag_lands_in_its_option_field():
    argv = ["augment", "--train-dir", "t", "--workspace", "w", "--all-prompts", "--compile"]
    for flag, (text, _, _) in FLAGS.items():
        argv += [flag, text]
    options = options_from_args(build_parser().parse_args(argv))
    for flag, (_, dotted, expected) in FLAGS.items():
        assert field_value(options, dotted) == expected, flag
    assert options.all_prompts is True and options.settings.compile is True
    # and the other way round: every option but those in NO_FLAG is set by one of the flags above
    fields = {f.name for f in dataclasses.fields(AugmentOptions)} | {f"mix.{f.name}" for f in
                                                                     dataclasses.fields(MixOptions)}
    assert fields - NO_FLAG - {"all_prompts"} <= {dotted for _, dotted, _ in FLAGS.values()}


def test_the_engine_flag_offers_the_runners():
    parser = build_parser()
    augment = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("augment"))
    engine = next(a for a in augment._actions if "--engine" in a.option_strings)
    assert (engine.dest, tuple(engine.choices)) == ("runner", RUNNERS)


def test_the_defaults_of_the_flags_are_the_defaults_of_the_options():
    options = options_from_args(build_parser().parse_args(["augment", "--train-dir", "t", "--workspace", "w"]))
    assert dataclasses.replace(options, scorer=None) == AugmentOptions(settings=options.settings)
    assert options.settings == GenerationSettings()  # the generation flags' defaults are GenerationSettings'
    assert options.scorer == "auto"  # the command line scores by default; run_augment does not


def test_mix_options_are_the_mixers_parameters_and_reach_it():
    parameters = inspect.signature(Mixer).parameters
    assert {f.name for f in dataclasses.fields(MixOptions)} <= set(parameters)
    mix = MixOptions(lam=0.3, feather=4, masks=["left", "box"])
    mixer = mix.mixer(None, FRACTALS, seed=1)
    assert (mixer.lam, mixer.feather, mixer.masks) == (0.3, 4, ("left", "box"))
    assert mix.record() == {"lam": 0.3, "feather": 4, "masks": ["left", "box"]}


def test_a_ray_worker_rebuilds_the_mixer_from_the_same_mix_options():
    from diffusemix_core.bulk.ray_runner import MixerSpec

    mix = MixOptions(lam=0.45, feather=2, masks=("top",))
    spec = MixerSpec.of(mix.mixer(None, FRACTALS), mix)
    rebuilt = spec.mixer()
    assert spec.mix == mix and (rebuilt.lam, rebuilt.feather, rebuilt.masks) == (0.45, 2, ("top",))
    assert spec.digest != MixerSpec.of(mix.mixer(None, FRACTALS), MixOptions(lam=0.45, feather=3)).digest


@pytest.mark.parametrize(("make", "words"), [
    (lambda: AugmentOptions(runner="spark"), ["'spark'", "'local' or 'ray'"]),
    (lambda: AugmentOptions(batch_size="auto", runner="ray"), ["--batch-size auto", "give a number"]),
    (lambda: AugmentOptions(per_image=0), ["per_image", "0"]),
    (lambda: MixOptions(masks=()), ["at least one mask kind", "left"]),
    (lambda: MixOptions(masks="left"), ["'left'", "list of mask kinds"]),
    (lambda: MixOptions(feather=-1), ["feather", "-1"]),
])
def test_a_bad_option_names_the_value_and_the_remedy(make, words):
    with pytest.raises(BadArgumentError) as raised:
        make()
    assert all(word in str(raised.value) for word in words), str(raised.value)


class Echo:
    """Î = I: the run is fast and its images are known."""

    settings = GenerationSettings(model="tiny-random", resolution=64, steps=2, device="cpu")

    def load(self) -> None:
        pass

    def generate(self, requests, **kwargs):
        return [GenerationResult(image=r.image.copy(), used_seed=r.seed, retries=0) for r in requests]


def write_train(root: Path) -> Path:
    for i in range(3):
        (root / "c").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((24, 32, 3), 40 * i + 30, np.uint8)).save(root / "c" / f"{i}.png")
    return root


def test_a_changed_mix_option_is_reported_and_an_unrecorded_one_counts_as_its_default(tmp_path):
    train, ws = write_train(tmp_path / "train"), Workspace(tmp_path / "ws")

    def run(per_image: int, mix: MixOptions):
        options = AugmentOptions(per_image=per_image, mix=mix)
        return run_augment(ws, train, options, fractals=FRACTALS, generator=Echo())

    assert run(1, MixOptions()).settings_changed == []
    assert run(2, MixOptions(feather=3)).settings_changed == ["feather"]
    with ws.manifest.session() as db:  # a run recorded by an older version, which knew no mask kinds
        run_id, args = db.execute("SELECT id, args FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        old = json.loads(args)
        assert old["masks"] == ["left", "right", "top", "bottom"] and old["feather"] == 3 and old["lam"] == 0.2
        del old["masks"]
        db.execute("UPDATE runs SET args = ? WHERE id = ?", [json.dumps(old), run_id])
        db.conn.commit()
    assert run(3, MixOptions(feather=3)).settings_changed == []
    assert run(4, MixOptions(feather=3, masks=("box",))).settings_changed == ["masks"]


def test_feather_and_lambda_travel_from_the_command_line_to_the_rows(tmp_path, capsys):
    train = write_train(tmp_path / "train")
    ws = tmp_path / "ws"
    status = main(["augment", "--train-dir", str(train), "--workspace", str(ws), "--per-image", "2", "--lam", "0.35",
                   "--feather", "3", "--scorer", "none", "--no-progress", *TINY])
    assert status == 0, capsys.readouterr().err
    conn = sqlite3.connect(ws / "manifest.sqlite")
    try:
        assert conn.execute("SELECT DISTINCT lam, feather FROM augmentations").fetchall() == [(0.35, 3)]
        assert conn.execute("SELECT count(*) FROM augmentations").fetchone() == (6,)
        args = json.loads(conn.execute("SELECT args FROM runs").fetchone()[0])
    finally:
        conn.close()
    assert (args["lam"], args["feather"], args["per_image"], args["settings"]["steps"]) == (0.35, 3, 2, 2)
