"""Contrastive attention (Song, Li & Yu 2026), applied inside the one prefill pass of a generation.

    profile = load_profile("llava15_7b")
    with contrastive_attention(loaded, profile, percentile=20, scale=0.5) as ca:
        answers = generate_answers(loaded, loaded.encode(images, questions), max_new_tokens=16)
    ca.records[0]   # {"pre_layer": 8, "hellinger": {"2": 0.41, ...}, "n_suppressed": 115, ...}

Per sample, in the prefill call:
1. at every fusion layer and at the post-integrated layer, the last prompt token's attention over
   the visual tokens is recomputed from that layer's query/key states for the last row (see
   ``attention_rows``), aggregated over heads (``heads``), as a distribution over the visual tokens;
2. the pre-integrated layer is the fusion layer whose distribution is farthest from the
   post-integrated one in Hellinger distance (ties: the lowest layer);
3. contrast = |A_post - A_pre| per visual token; tokens strictly below the sample's ``percentile``-th
   percentile of contrast (linear interpolation, as ``numpy.percentile``; tokens equal to it are kept)
   are suppressed at the review layer, by ``scale``, in one of three ways (``target``):
   - ``attention`` (default): a soft mask. Every text query's pre-softmax score on a suppressed key
     gets ``log(scale)`` added, i.e. its attention weight is multiplied by ``scale`` before the row
     is renormalised, in prefill and in every decode step (the set is fixed in prefill);
   - ``values``: the suppressed tokens' value states at the review layer are multiplied by
     ``scale`` (in prefill; decode steps read them from the cache): what they pass on shrinks, but
     the other tokens get no more weight;
   - ``hidden``: their hidden states at the review layer's input are multiplied by ``scale``. Pre-norm
     decoders (Llama, Mistral) normalise each token before its keys and values, so the review
     layer's own attention is unchanged (to RMSNorm's eps) unless ``scale=0``: the change travels in
     the residual stream to the layers after it.
``scale=1.0`` leaves logits bit-identical to vanilla generation for every target. Each record also
says where the last prompt token's attention went (``attention_mass``, at the post-integrated and
the review layer, before suppression): its share on the suppressed and on the kept visual tokens.

Ablations: ``pre_layer=<l>`` fixes the pre-integrated layer; ``control="random"`` suppresses as many
uniformly random visual tokens (seeded) as the contrast rule would have.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import torch

from layerprobe.analysis.profiles import LayerProfile, load_profile
from layerprobe.core.layers import layer_index
from layerprobe.core.generation import generate_answers
from layerprobe.errors import ConfigError
from layerprobe.methods.base import Method, answer_records
from layerprobe.core.attention_rows import (
    HEAD_AGGREGATIONS, is_prefill, last_row_probs, last_row_scores, visual_distribution,
)
from layerprobe.core.dispatch import controller

log = logging.getLogger(__name__)
DEFAULT_SCALE = 0.5  # the paper gives no factor; see docs/methods.md for the sweep behind it
CONTROLS = (None, "random")
TARGETS = ("attention", "values", "hidden")
DEFAULT_TARGET = "attention"  # the article's "soft masking at the review layer"; docs/methods.md


def profile_layers(profile: Any, num_layers: int) -> tuple[list[int], int, int]:
    """(fusion_layers, post_integrated_layer, review_layer) of a LayerProfile, a mapping, an object
    with those attributes, or a preset name / YAML path, validated against the model by
    ``LayerProfile.validate``. A bare mapping of layers (no ``model``/``num_layers``) is taken to
    be for this model."""
    if not isinstance(profile, (str, Path, LayerProfile)):
        get = profile.get if isinstance(profile, Mapping) else lambda k, d=None: getattr(profile, k, d)
        values = {k: get(k) for k in LayerProfile.keys() if get(k) is not None}
        profile = {"model": "given", "num_layers": num_layers, "review_layer": None, **values}
        checked = load_profile(profile, num_layers=num_layers, name=f"for {profile['model']}")
    else:
        checked = load_profile(profile, num_layers=num_layers)
    checked.require_layers()
    return sorted(checked.fusion_layers), checked.post_integrated_layer, checked.review_layer


def hellinger(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Hellinger distance of distributions along the last axis: sqrt(1/2 sum (sqrt p - sqrt q)^2)."""
    p, q = p.double(), q.double()
    return torch.sqrt(0.5 * ((p.sqrt() - q.sqrt()) ** 2).sum(-1))


def choose_pre_layer(fusion_dists: torch.Tensor, post: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the index (into the fusion axis) of the distribution farthest from ``post``.
    fusion_dists (L, B, T), post (B, T) -> (index (B,), distances (L, B)). Ties: the first."""
    distances = hellinger(fusion_dists, post[None])
    return distances.argmax(dim=0), distances  # argmax returns the first maximum


def low_contrast(contrast: torch.Tensor, visual: torch.Tensor, percentile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) mask of visual tokens strictly below the per-sample percentile of ``contrast`` over
    that sample's visual tokens, and the (B,) thresholds (nan for a sample without visual tokens)."""
    mask = torch.zeros_like(visual)
    thresholds = torch.full((visual.shape[0],), float("nan"), dtype=torch.float64)
    for b in range(visual.shape[0]):
        values = contrast[b, visual[b]].double()
        if values.numel() == 0:
            continue
        thresholds[b] = torch.quantile(values, percentile / 100.0)  # linear, as numpy.percentile
        mask[b] = visual[b] & (contrast[b].double() < thresholds[b])
    return mask, thresholds


def random_like(mask: torch.Tensor, visual: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """As many uniformly random visual tokens per sample as ``mask`` holds."""
    out = torch.zeros_like(mask)
    for b in range(mask.shape[0]):
        positions = visual[b].nonzero().flatten()
        pick = torch.randperm(positions.numel(), generator=generator)[: int(mask[b].sum())]
        out[b, positions[pick.to(positions.device)]] = True
    return out


def check_options(percentile, scale, heads, control, target=DEFAULT_TARGET) -> None:
    if target not in TARGETS:
        raise ConfigError(f"target={target!r}: choose one of {', '.join(TARGETS)}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile < 100:
        raise ConfigError(f"percentile={percentile!r}: must be in (0, 100)")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0.0 <= scale <= 1.0:
        raise ConfigError(f"scale={scale!r}: must be in [0, 1] (1 = no suppression)")
    if heads not in HEAD_AGGREGATIONS:
        raise ConfigError(f"heads={heads!r}: choose one of {', '.join(HEAD_AGGREGATIONS)}")
    if control not in CONTROLS:
        raise ConfigError(f"control={control!r}: choose null or 'random'")


class ContrastiveAttention:
    """Observer of the fusion, post-integrated and review layers, and the review-layer suppression
    (a soft mask for ``target="attention"``, hooks for ``values`` and ``hidden``)."""

    def __init__(self, loaded, fusion, post, review, percentile, scale, heads, pre_layer, control,
                 seed, keep_maps, target=DEFAULT_TARGET):
        self.loaded, self.fusion, self.post, self.review = loaded, fusion, post, review
        self.percentile, self.scale, self.heads = float(percentile), float(scale), heads
        self.pre_layer, self.control, self.keep_maps, self.target = pre_layer, control, keep_maps, target
        self.generator = torch.Generator().manual_seed(seed)
        self.candidates = [pre_layer] if pre_layer is not None else fusion
        self._layers = {*self.candidates, post, review}  # asked at every attention call: built once
        self.records: list[dict] = []
        self._batch: list[dict] = []  # this prefill's records, completed at the review layer
        self._dists: dict[int, torch.Tensor] = {}
        self.suppressed: torch.Tensor | None = None  # (B, T) of the last prefill, fixed for its decode
        self._pending: torch.Tensor | None = None  # target="hidden"/"values": set at post, used at review
        self._values: torch.Tensor | None = None  # target="values": handed from the layer to its value projection

    def layers(self) -> set[int]:
        return self._layers

    def observe(self, layer, query, key, scaling, layout, q_pos) -> None:
        if not is_prefill(layout, q_pos):
            return
        scores = last_row_scores(query, key, scaling)
        allowed = None  # the model's mask for the last row: only the mass reduction and records need it
        if self.heads == "mass" or layer in (self.post, self.review):
            allowed = controller(self.loaded).last_row_allowed(layer, layout)
        if layer in self.candidates or layer == self.post:
            self._dists[layer] = visual_distribution(scores, layout.visual, self.heads,
                                                     allowed if self.heads == "mass" else None)
        if layer == self.post:
            self._select(layout.visual)
            self._record_mass("post", scores, layout.visual, allowed)
        if layer == self.review and self.suppressed is not None:
            self._record_mass("review", scores, layout.visual, allowed)

    def _record_mass(self, where: str, scores, visual, allowed) -> None:
        """Where the last prompt token's attention goes, before any suppression at the review layer:
        the share of the whole row on the suppressed and on the kept visual tokens (heads
        averaged), and the suppressed tokens' share of the visual map under each head reduction."""
        suppressed = self.suppressed[:, : visual.shape[1]]
        row = last_row_probs(scores, allowed).mean(1)  # (B, kv)
        shares = {h: visual_distribution(scores, visual, h, allowed) for h in ("mean", "mass")}
        for b, rec in enumerate(self._batch):
            rec.setdefault("attention_mass", {})[where] = {
                "suppressed": float(row[b, suppressed[b]].sum()),
                "kept": float(row[b, visual[b] & ~suppressed[b]].sum()),
                **{f"suppressed_share_{h}": float(d[b, suppressed[b]].sum()) for h, d in shares.items()},
            }

    def _select(self, visual: torch.Tensor) -> None:
        post = self._dists[self.post]
        stacked = torch.stack([self._dists[c] for c in self.candidates])
        choice, distances = choose_pre_layer(stacked, post)
        pre = stacked[choice, torch.arange(post.shape[0])]
        contrast = (post - pre).abs()
        mask, thresholds = low_contrast(contrast, visual, self.percentile)
        if self.control == "random":
            mask = random_like(mask, visual, self.generator)
        self.suppressed = mask
        self._pending = mask if self.target in ("hidden", "values") else None
        self._batch = []
        for b in range(post.shape[0]):
            rec = {
                "pre_layer": self.candidates[int(choice[b])],
                "hellinger": {str(c): float(distances[i, b]) for i, c in enumerate(self.candidates)},
                "n_suppressed": int(mask[b].sum()), "n_visual": int(visual[b].sum()),
                "threshold": float(thresholds[b]),
            }
            if self.keep_maps:
                v = visual[b]
                rec["maps"] = {"pre": pre[b, v].tolist(), "post": post[b, v].tolist(),
                               "contrast": contrast[b, v].tolist(), "suppressed": mask[b, v].tolist()}
            self.records.append(rec)
            self._batch.append(rec)
        self._dists.clear()

    # target="attention": the review layer's soft mask, in prefill and every decode step
    def bias(self, layer, layout, q_pos) -> torch.Tensor | None:
        if layer != self.review or self.suppressed is None or self.scale == 1.0:
            return None
        keys = torch.zeros_like(layout.visual)
        keys[:, : self.suppressed.shape[1]] = self.suppressed[:, : keys.shape[1]]
        queries = layout.text_after[:, q_pos]
        # scale 0 removes the keys (log 0); the dtype's minimum keeps rows finite like a hard mask
        log_scale = math.log(self.scale) if self.scale > 0 else torch.finfo(torch.float32).min
        return torch.where(queries[:, :, None] & keys[:, None, :], log_scale, 0.0)

    def review_hook(self, module, args, kwargs):
        mask, self._pending = self._pending, None
        if mask is None:
            return None  # decode step, a call that was not a prefill, or target="attention"
        in_args = bool(args)
        hidden = args[0] if in_args else kwargs["hidden_states"]
        if hidden.shape[:2] != mask.shape:
            raise ConfigError(f"contrastive attention: review-layer input {tuple(hidden.shape[:2])} does not match "
                              f"the token layout {tuple(mask.shape)}")
        if self.target == "values":
            self._values = mask
            return None
        hidden = _scale_rows(hidden, mask, self.scale)
        if in_args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def values_hook(self, module, args, output):
        mask, self._values = self._values, None
        if mask is None:
            return None
        return _scale_rows(output, mask, self.scale)


def _scale_rows(x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    factor = torch.where(mask, scale, 1.0).to(x.dtype)[..., None]
    if torch.is_grad_enabled():
        return x * factor
    return x.mul_(factor)  # in place: no second copy at peak memory


@contextlib.contextmanager
def contrastive_attention(loaded, profile, percentile: float = 20, scale: float = DEFAULT_SCALE,
                          heads: str = "mean", pre_layer: int | None = None, control: str | None = None,
                          seed: int = 0, keep_maps: bool = False, target: str = DEFAULT_TARGET):
    """Apply contrastive attention to every prefill inside the context; see the module docstring."""
    check_options(percentile, scale, heads, control, target)
    fusion, post, review = profile_layers(profile, loaded.num_layers)
    if pre_layer is not None:
        pre_layer = layer_index("pre_layer", pre_layer, loaded.num_layers, below=post)
    state = ContrastiveAttention(loaded, fusion, post, review, percentile, scale, heads, pre_layer,
                                 control, seed, keep_maps, target)
    layer = loaded.decoder_layers[review]
    handles = [layer.register_forward_pre_hook(state.review_hook, with_kwargs=True)]
    try:
        if target == "values":
            values = loaded.adapter.projection(loaded.adapter.attention_module(layer), "value")
            handles.append(values.register_forward_hook(state.values_hook))
        soft = controller(loaded).edit(state) if target == "attention" else contextlib.nullcontext()
        with controller(loaded).observe(state), soft:
            yield state
    finally:
        for h in handles:
            h.remove()


class Contrastive(Method):
    """Contrastive attention as a ``layerprobe-eval`` method; records carry its per-sample choices,
    and the maps of the first ``keep_maps_for`` samples feed the Figure-1-style heatmaps."""

    name = "contrastive"

    def __init__(self, profile=None, percentile: float = 20, scale: float = DEFAULT_SCALE, heads: str = "mean",
                 pre_layer: int | None = None, control: str | None = None, seed: int = 0,
                 target: str = DEFAULT_TARGET):
        if profile is None:
            raise ConfigError("method contrastive needs a layer profile (profile=<preset name or YAML path>)")
        check_options(percentile, scale, heads, control, target)
        self.profile = profile
        self.options = dict(percentile=percentile, scale=scale, heads=heads, pre_layer=pre_layer,
                            control=control, seed=seed, target=target)
        self._maps_left, self._maps_ids = 0, set()

    def check(self, loaded) -> None:
        profile_layers(self.profile, loaded.num_layers)

    def keep_maps_for(self, n_samples: int) -> None:
        self._maps_left, self._maps_ids = n_samples, set()

    def answer_batch(self, loaded, samples, images, texts, max_new_tokens):
        # the first samples seen keep their maps; a repeated call on them (a warm-up) keeps them too
        ids = [str(s.sample_id) for s in samples]
        for sid in ids:
            if sid not in self._maps_ids and self._maps_left > 0:
                self._maps_ids.add(sid)
                self._maps_left -= 1
        keep = any(sid in self._maps_ids for sid in ids)
        inputs = loaded.encode(images, texts)
        with contrastive_attention(loaded, self.profile, keep_maps=keep, **self.options) as ca:
            answers = generate_answers(loaded, inputs, max_new_tokens)
        records = []
        for sid, r, rec in zip(ids, answer_records(answers), ca.records):
            if sid not in self._maps_ids:
                rec.pop("maps", None)
            records.append({**r, **rec})
        return records

    def draw(self, run_dir, loaded, data, n: int) -> list:
        """``heatmap_<sample>.png/.pdf`` for the first ``n`` rows of the run that kept maps (the
        sample id made a safe file name: ``layerprobe.io.filenames``)."""
        from layerprobe.io.filenames import safe_name
        from layerprobe.io.results import read_results
        from layerprobe.plots.methods import attention_heatmap
        from layerprobe.plots.save import save_figure

        if n <= 0:
            return []
        try:
            side = loaded.adapter.base_grid_side(loaded.model)
        except ConfigError as err:
            log.warning("no heatmaps: %s", err)
            return []
        post = profile_layers(self.profile, loaded.num_layers)[1]
        rows = read_results(run_dir)
        with_maps = rows[rows["maps"].notna()] if "maps" in rows else rows.iloc[:0]
        by_id = {str(s.sample_id): s for s in data.samples}
        written = []
        for _, row in with_maps.head(n).iterrows():
            sample = by_id.get(row["sample_id"])
            if sample is None:
                continue
            image = sample.load_image()
            fig = attention_heatmap(image, row["maps"], side, loaded.adapter.grid_region(image),
                                    int(row["pre_layer"]), post, data.prompt(sample))
            written += save_figure(fig, Path(run_dir) / f"heatmap_{safe_name(row['sample_id'])}")
        return written
