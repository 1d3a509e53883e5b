"""The explorer: an ipywidgets panel to ask the GPT for faces and watch what each setting does.

    toggles   one per conditioning attribute: ? (unspecified) / no / yes
    sliders   guidance scale, temperature, top-k (0 = off), seed; a batch-size choice; with a ranker (an attribute
              classifier), best of k: each face is the one of k the classifier finds closest to the request
    complete  optionally keep the first rows of a validation face's 16x16 tokens and let the GPT write the rest
    Generate  samples with those settings and shows the faces as one PNG grid, updated in place

The logic lives in small functions (`attributes_from_toggles`, `settings_from_controls`, `keep_rows_preview`) and in
`Explorer.generate()`, so tests drive it without a browser. The sampler is injectable: `Explorer(..., sample_fn=f)`
calls `f(model, vocab, vqvae, n=..., attributes=..., guidance_scale=..., temperature=..., top_k=..., seed=...
[, prefix_codes=..., keep_tokens=...])` and expects images (n, 3, H, W) in [-1, 1], like
`facegen.sampling.sample_faces`; best of k draws its k rounds with that sampler too (`facegen.rerank.sample_best_of`).

Sampling runs on the model's device (the GPT's and the VQ-VAE's, as `facegen.pipeline` loaded them: the profile's
device); images come back to the CPU only to be shown.

Nothing is printed: in a kernel without a widget front end (nbval, the static book) printed text would become cell
output; status goes to a Label instead.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping

import ipywidgets as w
import torch

from facegen.viz import image_grid

UNSPECIFIED = "?"
TOGGLE_OPTIONS = ((UNSPECIFIED, UNSPECIFIED), ("no", 0), ("yes", 1))  # (label, value): values the Vocabulary reads
BATCH_SIZES = (1, 4, 8, 16)
MAX_BEST_OF = 4  # the top of the best-of slider, as notebook 06 measures it; k rounds cost k times the seconds
GRID_COLUMNS = 8
SLIDER_STYLE = {"description_width": "100px"}  # room for "temperature" and "top-k (0=off)"
IDLE_DESCRIPTION = "Generate"
BUSY_DESCRIPTION = "Generating..."


# --------------------------------------------------------------------------------------------- controls -> sampler


def attributes_from_toggles(values: Mapping[str, object]) -> dict[str, int]:
    """{name: toggle value} -> the attributes to condition on, {name: 0 or 1}; `?` ones are left out (the Vocabulary
    writes them as <Name=?>)."""
    attributes = {}
    for name, value in values.items():
        if isinstance(value, str) and value == UNSPECIFIED:
            continue
        if isinstance(value, bool) or value not in (0, 1):
            raise ValueError(f"attribute toggle {name!r}: value {value!r} is not one of {UNSPECIFIED!r}, 0, 1")
        attributes[name] = int(value)
    return attributes


# Guidance 3 by default: in notebook 06's sweep it finds the asked-for attributes far more often than 1 (no guidance)
# and most of what the top of the slider gives (cpu, 2026-11-29: 84.3% at s = 1, 88.7% at 3, 90.2% at 5; Frechet
# distance 1.7x, 1.3x, 1.2x the floor), for twice the sampling time; from the middle of the slider a learner can see
# the effect both ways.
DEFAULT_GUIDANCE = 3.0


def settings_from_controls(*, batch_size: int, guidance_scale: float, temperature: float, top_k: int,
                           seed: int) -> dict:
    """The sampler's keyword arguments from the controls' values; top-k 0 means "off" (None), temperature 0 greedy."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if float(temperature) < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if int(top_k) < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k!r}")
    return {"n": int(batch_size), "guidance_scale": float(guidance_scale), "temperature": float(temperature),
            "top_k": int(top_k) or None, "seed": int(seed)}


def completion_settings(codes: torch.Tensor, keep_rows: int, n: int) -> dict:
    """Sampler arguments that keep the first `keep_rows` token rows of one face's codes (grid, grid) for all n
    samples: prefix_codes (n, grid, grid) and keep_tokens = keep_rows * grid."""
    if codes.ndim != 2 or codes.shape[0] != codes.shape[1]:
        raise ValueError(f"completion: codes must be one square grid (grid, grid), got {tuple(codes.shape)}")
    grid = codes.shape[0]
    if not 0 <= int(keep_rows) <= grid:
        raise ValueError(f"completion: keep_rows must be in [0, {grid}], got {keep_rows!r}")
    return {"prefix_codes": codes.long().unsqueeze(0).expand(n, grid, grid).clone(),
            "keep_tokens": int(keep_rows) * grid}


def keep_rows_preview(image: torch.Tensor, keep_rows: int, grid_size: int = 16) -> torch.Tensor:
    """One image (3, H, W) in [-1, 1] with the pixels below the first `keep_rows` token rows greyed out: what the GPT
    is given when it completes the face (a token row covers H / grid_size pixel rows)."""
    if image.ndim != 3 or image.shape[1] % grid_size:
        raise ValueError(f"preview: expected one image (3, H, W) with H a multiple of {grid_size}, "
                         f"got {tuple(image.shape)}")
    shown = image.detach().float().clone()
    shown[:, keep_rows * (image.shape[1] // grid_size):] = 0.0  # 0 is mid-grey in [-1, 1]
    return shown


def png_bytes(images: torch.Tensor, nrow: int = GRID_COLUMNS) -> bytes:
    """Images (B, 3, H, W) in [-1, 1] as the PNG bytes of one grid (what an ipywidgets.Image shows)."""
    buffer = io.BytesIO()
    image_grid(images, nrow=nrow).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------- the widget


def _default_sampler(*args, **kwargs):
    from facegen.sampling import sample_faces  # imported late: the widget module stays light

    return sample_faces(*args, **kwargs)


class Explorer:
    """The explorer panel. Display it as the last expression of a cell; `generate()` is what the button calls.

    model, vocab, vqvae: a trained GPT, its `facegen.tokens.Vocabulary` and the VQ-VAE whose tokens it speaks.
    valid_images: uint8 (N, 3, H, W) validation faces for completion mode (None hides the mode).
    sample_fn: the sampler (default `facegen.sampling.sample_faces`).
    ranker: an attribute classifier (`ensure_classifier`'s) to pick the best of k faces per request; None hides the
    "best of" slider."""

    def __init__(self, model, vocab, vqvae, valid_images: torch.Tensor | None = None,
                 sample_fn: Callable | None = None, batch_size: int = 8, ranker: torch.nn.Module | None = None):
        if batch_size not in BATCH_SIZES:
            raise ValueError(f"Explorer: batch_size must be one of {BATCH_SIZES}, got {batch_size!r}")
        if valid_images is not None and (valid_images.dtype != torch.uint8 or valid_images.ndim != 4
                                         or len(valid_images) == 0):
            raise ValueError(f"Explorer: valid_images must be uint8 (N, 3, H, W) with N >= 1 (load_images(profile, "
                             f"'valid')), got {valid_images.dtype} {tuple(valid_images.shape)}")
        self.model, self.vocab, self.vqvae = model, vocab, vqvae
        self.valid_images = valid_images
        self.sample_fn = sample_fn or _default_sampler
        self.ranker = ranker
        self.last_images: torch.Tensor | None = None
        self.toggles = {name: _toggle() for name in vocab.attributes}
        self.guidance = w.FloatSlider(value=DEFAULT_GUIDANCE, min=0.0, max=5.0, step=0.25, description="guidance",
                                      continuous_update=False, style=SLIDER_STYLE)
        self.temperature = w.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.05, description="temperature",
                                         continuous_update=False, style=SLIDER_STYLE)  # 0 = greedy
        self.top_k = w.IntSlider(value=0, min=0, max=vocab.codebook_size, step=1, description="top-k (0=off)",
                                 continuous_update=False, style=SLIDER_STYLE)
        self.seed = w.IntSlider(value=0, min=0, max=999, description="seed", continuous_update=False,
                                style=SLIDER_STYLE)
        self.best_of = w.IntSlider(value=1, min=1, max=MAX_BEST_OF, description="best of", continuous_update=False,
                                   style=SLIDER_STYLE)
        self.batch_size = w.ToggleButtons(options=BATCH_SIZES, value=batch_size, description="faces",
                                          style={"button_width": "40px"})
        self.complete = w.Checkbox(value=False, description="complete a validation face", indent=False)
        n_valid = 1 if valid_images is None else len(valid_images)
        self.face_index = w.IntSlider(value=0, min=0, max=n_valid - 1, description="face #",
                                      continuous_update=False, style=SLIDER_STYLE)
        self.keep_rows = w.IntSlider(value=vocab.grid_size // 2, min=1, max=vocab.grid_size - 1,
                                     description="rows kept", continuous_update=False, style=SLIDER_STYLE)
        self.preview = w.Image(format="png", layout=w.Layout(width="128px", height="128px"))
        self.button = w.Button(description=IDLE_DESCRIPTION, button_style="primary", icon="play")
        self.status = w.Label(value="Choose attributes and press Generate.")
        self.faces = w.Image(format="png", value=png_bytes(torch.zeros(1, 3, 128, 128)),
                             layout=w.Layout(max_width="100%"))
        self.button.on_click(lambda _button: self.generate())
        for name, control in self.toggles.items():  # CSS classes: handles for the browser test and for styling
            control.add_class(f"facegen-toggle-{name}")
        self.button.add_class("facegen-generate")
        self.best_of.add_class("facegen-best-of")
        self.status.add_class("facegen-status")
        self.faces.add_class("facegen-faces")
        for control in (self.complete, self.face_index, self.keep_rows):
            control.observe(lambda _change: self._update_preview(), names="value")
        self._update_preview()
        self.widget = self._layout()

    # --- what the button does --------------------------------------------------------------------------------------

    def sampler_kwargs(self) -> dict:
        """The keyword arguments the next Generate passes to the sampler (after model, vocab, vqvae)."""
        kwargs = settings_from_controls(batch_size=self.batch_size.value, guidance_scale=self.guidance.value,
                                        temperature=self.temperature.value, top_k=self.top_k.value,
                                        seed=self.seed.value)
        kwargs["attributes"] = attributes_from_toggles({name: t.value for name, t in self.toggles.items()})
        if self.completing:
            kwargs.update(completion_settings(self._face_codes(), self.keep_rows.value, kwargs["n"]))
        return kwargs

    def generate(self) -> torch.Tensor | None:
        """Sample with the current settings and show the grid. While it runs the button is disabled and says
        "Generating..."; an error is shown in the status label (and returned as None) instead of being raised into
        the front end, where it would vanish."""
        self._set_busy(True)
        started = time.perf_counter()
        try:
            kwargs = self.sampler_kwargs()
            images, how = self._draw(kwargs)
            self.faces.value = png_bytes(images, nrow=min(GRID_COLUMNS, len(images)))
            self.last_images = images
            self.status.value = (f"{len(images)} faces{how} in {time.perf_counter() - started:.1f} s "
                                 f"(seed {kwargs['seed']}; same settings give the same faces)")
            return images
        except Exception as error:  # noqa: BLE001 -- shown to the user, who can change the settings and retry
            self.status.value = f"Error: {type(error).__name__}: {error}"
            return None
        finally:
            self._set_busy(False)

    def _draw(self, kwargs: dict) -> tuple[torch.Tensor, str]:
        """The faces for these sampler arguments, and how they were chosen (for the status line). Best of k ranks by
        the attributes asked for, so with none set there is nothing to rank: one round is drawn, and the status says
        so."""
        k = self.best_of.value if self.ranker is not None else 1
        if k == 1:
            return self.sample_fn(self.model, self.vocab, self.vqvae, **kwargs), ""
        if not kwargs["attributes"]:
            return (self.sample_fn(self.model, self.vocab, self.vqvae, **kwargs),
                    f" (best of {k} needs an attribute set to yes or no to rank by: one round drawn)")
        from facegen.rerank import sample_best_of  # imported late: the widget module stays light

        rest = {key: value for key, value in kwargs.items() if key not in ("n", "attributes", "seed")}
        rounds = iter(range(1, k + 1))

        def sample_round(*args, **round_kwargs):  # k rounds take k times as long: say which one is running
            self.status.value = f"{BUSY_DESCRIPTION} round {next(rounds)} of {k}"
            return self.sample_fn(*args, **round_kwargs)

        chosen = sample_best_of(self.model, self.vocab, self.vqvae, self.ranker, [kwargs["attributes"]] * kwargs["n"],
                                candidates=k, seed=kwargs["seed"], sampler=sample_round, **rest)
        return chosen.faces, f", each the best of {k} by the attribute classifier,"

    @property
    def completing(self) -> bool:
        return self.valid_images is not None and self.complete.value

    # --- helpers ---------------------------------------------------------------------------------------------------

    def _set_busy(self, busy: bool) -> None:
        self.button.disabled = busy
        self.button.description = BUSY_DESCRIPTION if busy else IDLE_DESCRIPTION
        self.button.icon = "hourglass-half" if busy else "play"
        if busy:
            self.status.value = BUSY_DESCRIPTION

    def _face(self) -> torch.Tensor:
        from facegen.data.transforms import from_uint8

        return from_uint8(self.valid_images[self.face_index.value])

    def _face_codes(self) -> torch.Tensor:
        """The chosen validation face as the VQ-VAE's token grid (grid, grid), on the CPU (encoded on the VQ-VAE's
        device; the sampler moves the codes to the GPT's)."""
        parameters = self.vqvae.parameters() if isinstance(self.vqvae, torch.nn.Module) else iter(())
        device = next(parameters, torch.empty(0)).device
        return self.vqvae.encode_indices(self._face().unsqueeze(0).to(device))[0].cpu()

    def _update_preview(self) -> None:
        if self.valid_images is None:
            return
        face = self._face()
        if self.complete.value:
            face = keep_rows_preview(face, self.keep_rows.value, self.vocab.grid_size)
        self.preview.value = png_bytes(face.unsqueeze(0), nrow=1)

    def _layout(self) -> w.Widget:
        toggles = w.GridBox([w.HBox([w.Label(name, layout=w.Layout(width="150px")), toggle])
                             for name, toggle in self.toggles.items()],
                            layout=w.Layout(grid_template_columns="repeat(2, max-content)", grid_gap="0 24px"))
        sliders = [self.guidance, self.temperature, self.top_k, self.seed]
        sliders = w.VBox(sliders + ([self.best_of] if self.ranker is not None else []) + [self.batch_size])
        parts = [w.HTML("<b>Attributes</b> (? = unspecified, the GPT chooses)"), toggles, sliders]
        if self.valid_images is not None:
            completion = w.VBox([self.complete, self.face_index, self.keep_rows])
            parts.append(w.HBox([completion, self.preview]))
        parts += [w.HBox([self.button, self.status]), self.faces]
        return w.VBox(parts)

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        # a stable plain-text fallback (the widget's own repr lists every trait, PNG bytes included)
        bundle["text/plain"] = f"Explorer({len(self.toggles)} attribute toggles; needs a live kernel to generate)"
        return bundle


def _toggle() -> w.ToggleButtons:
    return w.ToggleButtons(options=TOGGLE_OPTIONS, value=UNSPECIFIED, tooltips=["unspecified", "no", "yes"],
                           style={"button_width": "46px"}, layout=w.Layout(width="max-content"))


def explorer_for_profile(profile=None, generate: bool = True, progress: bool = True) -> Explorer:
    """An Explorer on a profile's trained GPT, VQ-VAE, validation faces and attribute classifier (the ranker of best
    of k; each built first if missing, with the ensure_* notes); `profile` is a Profile, its name, or None for the
    active one. With `generate`, a first batch is drawn so the panel opens with faces (and a notebook saved with
    widget state shows them)."""
    from facegen.config import get_profile
    from facegen.pipeline import ensure_classifier, ensure_gpt, ensure_vqvae, load_images

    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    gpt = ensure_gpt(profile, progress=progress)
    explorer = Explorer(gpt.model, gpt.vocab, ensure_vqvae(profile, progress=progress),
                        valid_images=load_images(profile, "valid", progress=progress),
                        ranker=ensure_classifier(profile, progress=progress))
    if generate:
        explorer.generate()
    return explorer
