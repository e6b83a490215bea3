"""The one attention function layerprobe registers with transformers: it dispatches on the
decoder layer and otherwise calls the stock SDPA / eager / flash function unchanged.

    ctrl = controller(loaded)
    with ctrl.edit(KnockoutEdit(layers={8}, edges="image->text")):
        loaded.model.generate(**inputs)   # layer 8's text queries cannot see visual keys

Everything an intervention needs per call arrives here: the layer (from the attention module),
the query/key states after RoPE and cache update, the mask, and the token layout of the
sequence. A pre-hook on the model's forward records its ``input_ids``; the first attention call
of that forward then tells how many positions were already cached (key length minus query
length), whatever the cache keyword is called in the installed transformers. Mask edits
return the (query, key) pairs to block; observers read the last query row (contrastive
attention). Untouched layers get exactly the stock call, so no-op runs are bit-identical.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Protocol

import torch

from layerprobe.compat import (
    eager_attention_for, register_attention, sdpa_attention_forward, set_text_attention, stock_attention,
    text_attention,
)
from layerprobe.errors import ConfigError
from layerprobe.core.layout import TokenLayout

PREFIX = "layerprobe_"
_CONTROLLERS: "weakref.WeakKeyDictionary[torch.nn.Module, Controller]" = weakref.WeakKeyDictionary()


class MaskEdit(Protocol):
    """Blocks (query, key) pairs at some layers. ``blocked`` returns (B, q, kv) bool or None.
    An edit may also define ``bias(layer, layout, q_pos)``: (B, q, kv) float added to the
    pre-softmax scores (log of a weight factor), or None: a soft mask."""

    def layers(self) -> set[int] | None: ...  # None: may act at every layer

    def blocked(self, layer: int, layout: TokenLayout, q_pos: torch.Tensor) -> torch.Tensor | None: ...


class AttentionObserver(Protocol):
    def layers(self) -> set[int]: ...

    def observe(self, layer: int, module, query, key, layout: TokenLayout, q_pos: torch.Tensor) -> None: ...


def _base_function(name: str, module) -> Callable:
    if name == "eager":
        return eager_attention_for(module)
    if name == "sdpa":
        return sdpa_attention_forward
    return stock_attention(name)


def _attention(module, query, key, value, attention_mask, **kwargs):
    ctrl = _CONTROLLERS.get(module)
    base_name = ctrl.base if ctrl is not None else "sdpa"
    base = _base_function(base_name, module)
    if ctrl is not None and ctrl.override is not None:
        return ctrl.override(module, query, key, value, attention_mask, **kwargs)
    if ctrl is None or not ctrl.busy or ctrl.passing_through:
        return base(module, query, key, value, attention_mask, **kwargs)
    layer = ctrl.layer_of[module]
    layout = ctrl.layout_for(key.shape[2], query.shape[2])
    q_pos = torch.arange(key.shape[2] - query.shape[2], key.shape[2], device=query.device)
    for obs in ctrl.observers:
        if layer in obs.layers():
            obs.observe(layer, module, query, key, layout, q_pos)
    blocked = ctrl.blocked(layer, layout, q_pos)
    bias = ctrl.bias(layer, layout, q_pos)
    if blocked is None and bias is None:
        return base(module, query, key, value, attention_mask, **kwargs)
    mask = _materialise(attention_mask, layout, q_pos, query.dtype, "eager" if bias is not None else base_name)
    if mask.dtype == torch.bool and bias is not None:  # a 4D boolean mask handed in by the caller
        mask = torch.where(mask, torch.zeros((), dtype=query.dtype, device=mask.device), torch.finfo(query.dtype).min)
    if blocked is not None:
        mask = (mask & ~blocked[:, None] if mask.dtype == torch.bool
                else mask.masked_fill(blocked[:, None], torch.finfo(mask.dtype).min))
    if bias is not None:
        mask = mask + bias[:, None].to(mask.dtype)
    if base_name not in ("sdpa", "eager"):
        # flash kernels take no arbitrary mask: the edited layer runs SDPA on the same states
        base = sdpa_attention_forward
    return base(module, query, key, value, mask, **kwargs)


def _materialise(mask, layout: TokenLayout, q_pos, dtype, base_name) -> torch.Tensor:
    """A 4D mask for this call; SDPA's causal fast path passes None, flash a 2D padding mask."""
    if mask is not None and mask.dim() == 4:
        return mask
    allowed = layout.allowed(q_pos)[:, None]
    if base_name == "eager":
        zero = torch.zeros((), dtype=dtype, device=q_pos.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)
    return allowed


for _name in ("sdpa", "eager", "flash_attention_2", "flash_attention_3"):
    register_attention(PREFIX + _name, _attention, like=_name)
del _name


class Controller:
    """Per-model state: the layer of each attention module, the active edits and observers,
    and the token layout of the sequence being run. Installs the dispatching backend only
    while something is active (or permanently, for models with a built-in structure)."""

    def __init__(self, model, adapter):
        self.model_ref = weakref.ref(model)
        self.adapter = adapter
        layers = adapter.decoder_layers(model)
        self.layer_of = {adapter.attention_module(layer): i for i, layer in enumerate(layers)}
        self.num_layers = len(layers)
        self.edits: list[MaskEdit] = []
        self.permanent: list[MaskEdit] = []
        self.observers: list[AttentionObserver] = []
        self.base: str | None = None
        self._hook = None
        self._layout: TokenLayout | None = None
        self._pending: tuple | None = None  # (input_ids, attention_mask) of a forward not yet placed
        self._annotations: list[tuple] = []  # (input_ids, question mask) from encode(questions=)
        self.passing_through = False
        # replaces the whole attention call while set (the fast sweep engine's shared prefix)
        self.override: Callable | None = None
        for module in self.layer_of:
            _CONTROLLERS[module] = self

    @property
    def busy(self) -> bool:
        return bool(self.edits or self.permanent or self.observers)

    # installation -----------------------------------------------------------------------
    def _install(self) -> None:
        if self._hook is not None:
            return
        model = self.model_ref()
        current = text_attention(self.adapter.text_config(model)) or "sdpa"
        self.base = current[len(PREFIX):] if current.startswith(PREFIX) else current
        if self.base not in ("sdpa", "eager", "flash_attention_2", "flash_attention_3"):
            raise ConfigError(f"attn_implementation={self.base!r}: layerprobe supports sdpa, eager and flash_attention_2/3")
        set_text_attention(model, PREFIX + self.base)
        self._hook = model.register_forward_pre_hook(self._track_layout, with_kwargs=True)

    def _uninstall(self) -> None:
        if self._hook is None or self.busy:
            return
        self._hook.remove()
        self._hook = None
        self._layout = None
        self._pending = None
        set_text_attention(self.model_ref(), self.base)

    @contextlib.contextmanager
    def edit(self, edit: MaskEdit):
        self._install()
        self.edits.append(edit)
        try:
            yield edit
        finally:
            self.edits.remove(edit)
            self._uninstall()

    @contextlib.contextmanager
    def observe(self, observer: AttentionObserver):
        self._install()
        self.observers.append(observer)
        try:
            yield observer
        finally:
            self.observers.remove(observer)
            self._uninstall()

    @contextlib.contextmanager
    def passthrough(self):
        """Calls inside get the stock function with the mask they pass: for callers (the fast
        sweep engine) that build complete masks themselves."""
        self.passing_through = True
        try:
            yield
        finally:
            self.passing_through = False

    @contextlib.contextmanager
    def overriding(self, attention: Callable):
        """Every attention call inside runs ``attention(module, query, key, value, mask, **kwargs)``
        instead of the stock function: for engines that compute attention their own way over
        states they hold (the fast sweep engine's prefix shared by many variants)."""
        self.override = attention
        try:
            yield
        finally:
            self.override = None

    def add_permanent(self, edit: MaskEdit) -> None:
        """A structural mask that is part of the model (the organism's planted layers)."""
        self._install()
        self.permanent.append(edit)

    # layout -----------------------------------------------------------------------------
    def _track_layout(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        self._pending = None if input_ids is None else (input_ids, kwargs.get("attention_mask"))
        if input_ids is None:
            self._layout = None

    def set_sequence(self, input_ids, attention_mask, past: int = 0) -> TokenLayout:
        """Record the tokens of a forward call; ``past`` tokens are already in the cache."""
        if past == 0 or self._layout is None:
            visual = self.adapter.visual_token_mask(self.model_ref(), input_ids)
            question = next((q for ids, q in self._annotations if ids.shape == input_ids.shape
                             and torch.equal(ids, input_ids)), None)
            self._layout = TokenLayout.from_ids(input_ids, attention_mask, visual, question=question)
        else:
            # Decode steps feed generated text: never visual, even a generated image-marker token.
            visual = torch.zeros_like(input_ids, dtype=torch.bool)
            old = self._layout.truncate(past)
            valid = torch.cat([old.valid, torch.ones_like(visual)], dim=1)
            if attention_mask is not None and attention_mask.shape[1] == valid.shape[1]:
                valid = attention_mask.bool()
            question = None if old.question_tokens is None else torch.cat([old.question_tokens, visual], 1)
            self._layout = TokenLayout(valid, torch.cat([old.visual, visual & valid[:, past:]], 1), old.prompt_len,
                                       question)
        return self._layout

    def annotate(self, input_ids: torch.Tensor, question: torch.Tensor) -> None:
        """Where the question sits in a batch about to run: (B, T) bool over ``input_ids``. A
        forward on exactly these ids gets it in its layout (the last few batches are kept)."""
        self._annotations = [(input_ids, question), *self._annotations[:3]]

    def set_layout(self, layout: TokenLayout | None) -> None:
        self._layout = layout

    def layout_for(self, kv_len: int, q_len: int | None = None) -> TokenLayout:
        """The layout of the sequence an attention call sees (``kv_len`` keys, ``q_len`` queries).
        The first call of a forward places its tokens: ``kv_len - q_len`` are already cached."""
        if self._pending is not None and q_len is not None:
            input_ids, attention_mask = self._pending
            self._pending = None
            self.set_sequence(input_ids, attention_mask, past=kv_len - q_len)
        layout = self._layout
        if layout is None:
            raise ConfigError(
                "a layerprobe intervention is active but the forward call passed no input_ids; "
                "call the model with input_ids (not inputs_embeds) inside the context"
            )
        if layout.length != kv_len:
            raise ConfigError(
                f"token layout covers {layout.length} positions but attention sees {kv_len} keys; "
                "sliding-window or custom caches are not supported by layerprobe interventions"
            )
        return layout

    def bias(self, layer: int, layout: TokenLayout, q_pos) -> torch.Tensor | None:
        """Sum of the soft masks of the active edits at ``layer`` (None: no edit has one)."""
        out = None
        for edit in self.edits:
            wanted = edit.layers()
            if not hasattr(edit, "bias") or (wanted is not None and layer not in wanted):
                continue
            b = edit.bias(layer, layout, q_pos)
            if b is not None:
                out = b if out is None else out + b
        return out

    def blocked(self, layer: int, layout: TokenLayout, q_pos) -> torch.Tensor | None:
        out = None
        for edit in (*self.permanent, *self.edits):
            wanted = edit.layers()
            if wanted is not None and layer not in wanted:
                continue
            b = edit.blocked(layer, layout, q_pos)
            if b is not None:
                out = b if out is None else out | b
        return out


_BY_MODEL: "weakref.WeakKeyDictionary[torch.nn.Module, Controller]" = weakref.WeakKeyDictionary()


def controller(loaded) -> Controller:
    """The controller of a loaded model (created on first use)."""
    model = loaded.model
    ctrl = _BY_MODEL.get(model)
    if ctrl is None:
        ctrl = _BY_MODEL[model] = Controller(model, loaded.adapter)
    return ctrl
