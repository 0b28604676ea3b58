"""DiffuseMix, one augmentation at a time or in batches (paper section 3.2, Algorithm 1).

The story of one augmentation, top to bottom:

1. ``sample``   draws the random choices of Algorithm 1 (prompt, mask, fractal, seed) from a seeded
                ``numpy.random.Generator`` and returns them as plain :class:`Choice` values;
2. ``generate`` turns (image, rendered prompt, seed) into Î with InstructPix2Pix (``pix2pix.py``);
3. ``compose``  applies the choices deterministically: H = M⊙I + (1−M)⊙Î, A = (1−λ)H + λF, plus the drift of Î;
4. the result is one :class:`AugmentationRecord` holding every stage and every choice.

:class:`Mixer` does 1 and 3 and never needs a model: re-mixing a record with another λ, mask or fractal, composing
a stored augmentation for display or export, and the bulk run's compose stage all use it. :class:`DiffuseMix` adds
the generator (2) and is the one-call convenience: ``DiffuseMix(...).augment("cat.jpg", seed=7)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..checks import check_int
from .drift import drift_score
from ..errors import BadArgumentError, BadPromptError
from .fractals import FractalLibrary, fit_to
from .generation import GenerationRequest, GenerationSettings
from .images import image_key, load_image
from .masks import MASK_KINDS, check_mask_kind, make_mask, mask_to_uint8
from .mixing import blend, check_lam, hybrid
from .pix2pix import Pix2PixGenerator  # torch and diffusers load with the model, not here
from .prompts import PromptLibrary
from .test_models import is_test_model

SEED_LIMIT = 2**31 - 1
STAGE_NAMES = ("original", "generated", "mask", "hybrid", "fractal", "final")
UPLOADED_FRACTAL_PREFIX = "upload:"


@dataclass(frozen=True)
class Choice:
    """What Algorithm 1 draws for one augmentation, before anything is applied."""

    prompt: str  # the raw prompt, e.g. "autumn" (the template is applied at generation time)
    mask: str  # a mask kind, e.g. "left": the half of the original that is kept
    fractal: str  # a fractal id of the library
    seed: int  # the generation seed asked for


@dataclass
class AugmentationRecord:
    """One augmentation end to end: the six stages and every choice that made them.

    The manifest's rows, the export's metadata.csv and the app's panels are views of this record.
    """

    original: np.ndarray  # I, uint8 (h, w, 3)
    generated: np.ndarray  # Î, uint8 (h, w, 3), resized back to the source's size
    mask: np.ndarray  # M, (h, w) bool (or float in [0, 1] when feathered); True where I is kept
    hybrid: np.ndarray  # H = M⊙I + (1−M)⊙Î
    fractal: np.ndarray  # F, fitted to (h, w)
    final: np.ndarray  # A = (1−λ)H + λF
    prompt: str  # the raw prompt, e.g. "autumn"
    prompt_text: str  # the prompt as the model saw it (template applied)
    template: str  # the template that made prompt_text
    mask_kind: str
    fractal_id: str
    lam: float
    feather: int
    requested_seed: int  # the generation seed asked for (Choice.seed)
    used_seed: int  # the seed that made Î: requested_seed unless a degenerate output was retried
    model: str
    settings: dict[str, Any] = field(default_factory=dict)  # GenerationSettings.cache_key() of the model
    is_test_model: bool = False
    drift: float | None = None  # drift_score(I, Î) in [0, 1]
    label: str | None = None
    source: str | None = None

    def choices(self) -> dict[str, Any]:
        """Every choice as a JSON-able dict (the manifest row, export row and UI panel are views of this)."""
        return {
            "prompt": self.prompt,
            "prompt_text": self.prompt_text,
            "template": self.template,
            "mask": self.mask_kind,
            "fractal": self.fractal_id,
            "lam": self.lam,
            "feather": self.feather,
            "seed": self.requested_seed,
            "used_seed": self.used_seed,
            "model": self.model,
            "settings": dict(self.settings),
            "is_test_model": self.is_test_model,
            "drift": self.drift,
            "label": self.label,
            "source": self.source,
        }

    def stages(self) -> dict[str, np.ndarray]:
        """The six stages as displayable uint8 images, keyed by STAGE_NAMES."""
        return {
            "original": self.original,
            "generated": self.generated,
            "mask": mask_to_uint8(self.mask),
            "hybrid": self.hybrid,
            "fractal": self.fractal,
            "final": self.final,
        }


def check_seed(seed: int) -> int:
    return check_int("seed", seed, minimum=0, maximum=SEED_LIMIT)


def mix(original: np.ndarray, generated: np.ndarray, fractal: np.ndarray, *, mask_kind: str, lam: float,
        feather: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply one augmentation's choices to I, Î and a fractal image of any size: returns (M, H, F, A). No model."""
    h, w = original.shape[:2]
    mask = make_mask(mask_kind, h, w, feather=feather)
    frac = fractal if fractal.shape[:2] == (h, w) else fit_to(fractal, h, w)
    hyb = hybrid(original, generated, mask)
    return mask, hyb, frac, blend(hyb, frac, check_lam(lam))


class Mixer:
    """Algorithm 1 without the model: draw choices (:meth:`sample`) and apply them (:meth:`compose`, :meth:`remix`).

    Holds the prompt library (for drawing and for the template), the fractal library, the mask kinds drawn, λ and
    the seam feather. Everything it does is cheap, deterministic array work.
    """

    def __init__(
        self,
        prompts: PromptLibrary | Sequence[str] | None = None,
        fractals: FractalLibrary | None = None,
        masks: Sequence[str] = MASK_KINDS,
        lam: float = 0.2,
        feather: int = 0,
        seed: int = 0,
    ) -> None:
        if prompts is None:
            prompts = PromptLibrary.default()
        elif not isinstance(prompts, PromptLibrary):
            prompts = PromptLibrary.from_texts(list(prompts))
        prompts.validate()
        self.prompts = prompts
        self.fractals = fractals if fractals is not None else FractalLibrary.default()
        if len(self.fractals) == 0:
            raise BadArgumentError("the fractal library is empty; point it at a folder of images.")
        self.masks = tuple(check_mask_kind(kind) for kind in masks)
        if not self.masks:
            raise BadArgumentError(f"at least one mask kind is needed; choose from {MASK_KINDS}.")
        self.lam = check_lam(lam)
        self.feather = check_int("feather", feather, minimum=0)
        self._rng = np.random.default_rng(check_seed(seed))

    # 1. sample ----------------------------------------------------------------------------------------
    def sample(
        self,
        rng: np.random.Generator,
        n: int = 1,
        *,
        prompt: str | None = None,
        mask: str | None = None,
        fractal: str | None = None,
    ) -> list[Choice]:
        """Draw n choices of Algorithm 1 from `rng`; a fixed prompt/mask/fractal overrides its draw.

        Every value is drawn whether or not it is fixed, so fixing one choice never shifts the others.
        """
        enabled = self.prompts.enabled()
        if not enabled:
            raise BadPromptError("no prompt is enabled in the prompt library; enable at least one.")
        if prompt is not None and not prompt.strip():
            raise BadPromptError("the prompt is empty; give a prompt text or leave it to be drawn.")
        if mask is not None:
            check_mask_kind(mask)
        if fractal is not None and fractal not in self.fractals.ids:
            raise BadArgumentError(f"unknown fractal {fractal!r}; the library has {len(self.fractals)} ids.")
        choices = []
        for _ in range(n):
            drawn_prompt = enabled[int(rng.integers(len(enabled)))]
            seed = int(rng.integers(0, SEED_LIMIT))
            drawn_mask = self.masks[int(rng.integers(len(self.masks)))]
            drawn_fractal = self.fractals.ids[int(rng.integers(len(self.fractals)))]
            choices.append(
                Choice(
                    prompt=prompt if prompt is not None else drawn_prompt,
                    mask=mask if mask is not None else drawn_mask,
                    fractal=fractal if fractal is not None else drawn_fractal,
                    seed=seed,
                )
            )
        return choices

    def seeded_choice(self, seed: int | None = None, **fixed: str | None) -> Choice:
        """The choice of one augmentation drawn from ``default_rng(seed)``, generating with `seed` itself.

        Without a seed, one comes from the instance's own seeded stream.
        """
        if seed is None:
            seed = int(self._rng.integers(0, SEED_LIMIT))
        seed = check_seed(seed)
        return dataclasses.replace(self.sample(np.random.default_rng(seed), 1, **fixed)[0], seed=seed)

    # 3. compose ------------------------------------------------------------------------------------------
    def compose(
        self,
        original: np.ndarray,
        generated: np.ndarray,
        choice: Choice,
        *,
        settings: GenerationSettings,
        used_seed: int | None = None,
        prompt_text: str | None = None,
        lam: float | None = None,
        label: str | None = None,
        source: str | None = None,
    ) -> AugmentationRecord:
        """The record of one augmentation from I, its Î and the choices: mixing and drift only, no model call.

        `settings` are those of the model that made Î (recorded, not run). `used_seed` is the seed that made Î when
        a degenerate output was retried (default: ``choice.seed``); `prompt_text` the rendered prompt when the
        caller has it already (default: rendered with this mixer's template).
        """
        lam = self.lam if lam is None else check_lam(lam)
        mask, hyb, frac, final = mix(original, generated, self.fractals.fit(choice.fractal, *original.shape[:2]),
                                     mask_kind=choice.mask, lam=lam, feather=self.feather)
        return AugmentationRecord(
            original=original,
            generated=generated,
            mask=mask,
            hybrid=hyb,
            fractal=frac,
            final=final,
            prompt=choice.prompt,
            prompt_text=self.prompts.render(choice.prompt) if prompt_text is None else prompt_text,
            template=self.prompts.template,
            mask_kind=choice.mask,
            fractal_id=choice.fractal,
            lam=lam,
            feather=self.feather,
            requested_seed=choice.seed,
            used_seed=choice.seed if used_seed is None else int(used_seed),
            model=settings.model,
            settings=settings.cache_key(),
            is_test_model=is_test_model(settings.model),
            drift=float(drift_score(original, generated)),
            label=label,
            source=source,
        )

    def remix(
        self,
        record: AugmentationRecord,
        *,
        lam: float | None = None,
        mask: str | None = None,
        fractal: str | np.ndarray | None = None,
    ) -> AugmentationRecord:
        """The same Î re-mixed with another λ, mask kind or fractal (an id, or an image the user brought)."""
        lam = record.lam if lam is None else check_lam(lam)
        mask_kind = record.mask_kind if mask is None else check_mask_kind(mask)
        if fractal is None:
            fractal_id, fractal_image = record.fractal_id, record.fractal
        elif isinstance(fractal, np.ndarray):
            fractal_image = load_image(fractal)
            fractal_id = UPLOADED_FRACTAL_PREFIX + image_key(fractal_image)[:12]
        else:
            fractal_id = fractal
            fractal_image = self.fractals.fit(fractal, *record.original.shape[:2])
        m, hyb, frac, final = mix(record.original, record.generated, fractal_image, mask_kind=mask_kind, lam=lam,
                                  feather=record.feather)
        return dataclasses.replace(
            record, mask=m, hybrid=hyb, fractal=frac, final=final, mask_kind=mask_kind, fractal_id=fractal_id, lam=lam
        )


class DiffuseMix(Mixer):
    """The DiffuseMix augmentation: a :class:`Mixer` over an InstructPix2Pix generator.

    >>> dm = DiffuseMix(settings=GenerationSettings(model="tiny-random"))   # doctest: +SKIP
    >>> record = dm.augment("cat.jpg", seed=7)                                # doctest: +SKIP
    >>> record.final.shape, record.choices()["prompt"]                        # doctest: +SKIP
    """

    def __init__(
        self,
        prompts: PromptLibrary | Sequence[str] | None = None,
        fractals: FractalLibrary | None = None,
        masks: Sequence[str] = MASK_KINDS,
        lam: float = 0.2,
        settings: GenerationSettings | None = None,
        seed: int = 0,
        feather: int = 0,
        generator: Pix2PixGenerator | None = None,
    ) -> None:
        super().__init__(prompts, fractals, masks, lam=lam, feather=feather, seed=seed)
        if generator is None:
            generator = Pix2PixGenerator(settings or GenerationSettings())
        self.generator = generator

    @property
    def settings(self) -> GenerationSettings:
        return self.generator.settings

    def compose(self, original: np.ndarray, generated: np.ndarray, choice: Choice, *,
                settings: GenerationSettings | None = None, **options) -> AugmentationRecord:
        """:meth:`Mixer.compose`, recording this generator's settings unless others are given."""
        return super().compose(original, generated, choice, settings=settings or self.settings, **options)

    def augment(
        self,
        image: Any,
        *,
        prompt: str | None = None,
        mask: str | None = None,
        fractal: str | np.ndarray | None = None,
        seed: int | None = None,
        lam: float | None = None,
        label: str | None = None,
        source: str | None = None,
    ) -> AugmentationRecord:
        """One augmentation of `image` (a path, bytes, PIL image or uint8 array).

        With `seed`, the choices are drawn from ``default_rng(seed)`` and Î is generated with `seed`, so the same
        seed gives the same record; without it the seed comes from the instance's own seeded stream. `fractal` is a
        library id or an image the user brought (any size).
        """
        original = load_image(image)
        uploaded = fractal if isinstance(fractal, np.ndarray) else None
        choice = self.seeded_choice(seed, prompt=prompt, mask=mask, fractal=None if uploaded is not None else fractal)
        record = self.augment_batch([original], [choice], lam=lam, labels=[label], sources=[source])[0]
        return record if uploaded is None else self.remix(record, fractal=uploaded)

    def augment_all_prompts(
        self, image: Any, *, mask: str | None = None, seed: int | None = None, lam: float | None = None,
        batch_size: int = 4, progress=None,
    ) -> list[AugmentationRecord]:
        """One augmentation per enabled prompt, all with the same seed, mask and fractal: prompts side by side.
        ``progress(done, total)`` is told after every batch of `batch_size` prompts."""
        original = load_image(image)
        choice = self.seeded_choice(seed, mask=mask)
        choices = [dataclasses.replace(choice, prompt=p) for p in self.prompts.enabled()]
        return self.augment_batch([original] * len(choices), choices, lam=lam, batch_size=batch_size,
                                  progress=progress)

    def augment_batch(
        self,
        images: Sequence[np.ndarray],
        choices: Sequence[Choice],
        *,
        image_keys: Sequence[str] | None = None,
        lam: float | None = None,
        batch_size: int = 4,
        labels: Sequence[str | None] | None = None,
        sources: Sequence[str | None] | None = None,
        progress=None,
    ) -> list[AugmentationRecord]:
        """Augment images[i] with choices[i] for every i, generating in batches.

        The same image may appear several times (one entry per augmentation slot); give `image_keys` (e.g. the
        file's sha256) so each distinct image is VAE-encoded once, otherwise keys are content hashes.
        """
        if len(images) != len(choices):
            raise BadArgumentError(f"{len(images)} images but {len(choices)} choices; give one choice per image.")
        lam = self.lam if lam is None else check_lam(lam)
        keys = list(image_keys) if image_keys is not None else [image_key(img) for img in images]
        texts = [self.prompts.render(c.prompt) for c in choices]
        requests = [
            GenerationRequest(image=img, image_key=key, prompt_text=text, seed=c.seed)
            for img, key, text, c in zip(images, keys, texts, choices)
        ]
        results = self.generator.generate(requests, batch_size=batch_size, progress=progress)
        labels = list(labels) if labels is not None else [None] * len(images)
        sources = list(sources) if sources is not None else [None] * len(images)
        return [
            self.compose(img, result.image, choice, settings=self.settings, used_seed=result.used_seed,
                         prompt_text=text, lam=lam, label=label, source=source)
            for img, choice, text, result, label, source in zip(images, choices, texts, results, labels, sources)
        ]
