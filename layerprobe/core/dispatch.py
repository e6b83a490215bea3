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
An engine that computes attention its own way over states it holds (the fast sweep engine)
replaces the whole call while ``ctrl.replacing(fn)`` is active.
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
    """Reads an attention call: its query and key states (after RoPE, keys of every position so
    far) and the scale the model multiplies their products by."""

    def layers(self) -> set[int]: ...

    def observe(self, layer: int, query, key, scaling: float, layout: TokenLayout, q_pos: torch.Tensor) -> None: ...


def _base_function(name: str, module) -> Callable:
    if name == "eager":
        return eager_attention_for(module)
    if name == "sdpa":
        return sdpa_attention_forward
    return stock_attention(name)


def _attention(module, query, key, value, attention_mask, **kwargs):
    ctrl = _CONTROLLERS.get(module)
    if ctrl is not None and ctrl.replacement is not None:
        return ctrl.replacement(module, query, key, value, attention_mask, **kwargs)
    base_name = ctrl.base if ctrl is not None else "sdpa"
    base = _base_function(base_name, module)
    if ctrl is None or not ctrl.busy:
        return base(module, query, key, value, attention_mask, **kwargs)
    layer = ctrl.layer_of[module]
    layout = ctrl.layout_for(key.shape[2], query.shape[2])
    q_pos = torch.arange(key.shape[2] - query.shape[2], key.shape[2], device=query.device)
    watching = [obs for obs in ctrl.observers if layer in obs.layers()]
    if watching:
        scaling = ctrl.adapter.attention_scaling(module)
        for obs in watching:
            obs.observe(layer, query, key, scaling, layout, q_pos)
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
    while something is active (or permanently, for models with a built-in structure).

    Modes: ``edit`` (blocked pairs, soft biases), ``observe`` (read rows), ``add_permanent`` (the
    model's own structure) and ``replacing`` (an engine's own attention for every call)."""

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
        self._annotations: list[tuple] = []  # (input_ids, question mask, sample keys) from encode()
        # replaces the whole attention call while set (the fast sweep engine's shared prefix)
        self.replacement: Callable | None = None
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
        if self._hook is None or self.busy or self.replacement is not None:
            return
        self._hook.remove()
        self._hook = None
        self._layout = None
        self._pending = None
        set_text_attention(self.model_ref(), self.base)

    def edit(self, edit: MaskEdit):
        """Apply ``edit`` to every forward call inside the context."""
        return self._active(self.edits, edit)

    def observe(self, observer: AttentionObserver):
        """Show ``observer`` the attention calls of its layers inside the context."""
        return self._active(self.observers, observer)

    @contextlib.contextmanager
    def _active(self, active: list, item):
        self._install()
        active.append(item)
        try:
            yield item
        finally:
            active.remove(item)
            self._uninstall()

    @contextlib.contextmanager
    def replacing(self, attention: Callable):
        """Every attention call inside runs ``attention(module, query, key, value, mask, **kwargs)``
        instead of the stock function and the edits: for engines that compute attention their own
        way over states they hold, with complete masks they build themselves (the fast sweep
        engine's prefix shared by many variants)."""
        self._install()
        self.replacement = attention
        try:
            yield
        finally:
            self.replacement = None
            self._uninstall()

    def add_permanent(self, edit: MaskEdit) -> None:
        """A structural mask that is part of the model (the organism's planted layers)."""
        self._install()
        self.permanent.append(edit)

    def remove_permanent(self, edit: MaskEdit) -> None:
        self.permanent.remove(edit)
        self._uninstall()

    # layout -----------------------------------------------------------------------------
    def _track_layout(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        self._pending = None if input_ids is None else (input_ids, kwargs.get("attention_mask"))
        if input_ids is None:
            self._layout = None

    def layout_of(self, input_ids, attention_mask) -> TokenLayout:
        """The layout of a prompt batch, with what ``annotate`` said about exactly these ids."""
        visual = self.adapter.visual_token_mask(self.model_ref(), input_ids)
        question, keys = next(((q, k) for ids, q, k in self._annotations if ids.shape == input_ids.shape
                               and torch.equal(ids, input_ids)), (None, None))
        return TokenLayout.from_ids(input_ids, attention_mask, visual, question=question, sample_keys=keys)

    def set_sequence(self, input_ids, attention_mask, past: int = 0) -> TokenLayout:
        """Record the tokens of a forward call; ``past`` tokens are already in the cache."""
        if past == 0 or self._layout is None:
            self._layout = self.layout_of(input_ids, attention_mask)
        else:
            # Decode steps feed generated text: never visual, even a generated image-marker token.
            old = self._layout.truncate(past)
            valid = torch.cat([old.valid, torch.ones_like(input_ids, dtype=torch.bool)], dim=1)
            if attention_mask is not None and attention_mask.shape[1] == valid.shape[1]:
                valid = attention_mask.bool()
            self._layout = old.appended(torch.zeros_like(input_ids, dtype=torch.bool), valid)
        return self._layout

    def annotate(self, input_ids: torch.Tensor, question: torch.Tensor | None = None,
                 sample_keys: torch.Tensor | None = None) -> None:
        """What the layout of a batch about to run cannot read from its ids: where each question
        sits, (B, T) bool over ``input_ids``, and each sample's key, (B,). A forward on exactly
        these ids gets them in its layout (the last few batches are kept)."""
        self._annotations = [(input_ids, question, sample_keys), *self._annotations[:3]]

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

    def blocked(self, layer: int, layout: TokenLayout, q_pos) -> torch.Tensor | None:
        """(B, q, kv): the union of what the permanent and the active edits block at ``layer``."""
        return _combined((*self.permanent, *self.edits), "blocked", layer, layout, q_pos, torch.logical_or)

    def bias(self, layer: int, layout: TokenLayout, q_pos) -> torch.Tensor | None:
        """(B, q, kv): the sum of the active edits' soft masks at ``layer`` (None: no edit has one)."""
        return _combined(self.edits, "bias", layer, layout, q_pos, torch.add)

    def last_row_allowed(self, layer: int, layout: TokenLayout) -> torch.Tensor:
        """(B, kv) bool: the keys the last query row sees at ``layer``: no padding, and no pair a
        hard edit (permanent or active) blocks there."""
        blocked = self.blocked(layer, layout, layout.positions[-1:])
        return layout.valid if blocked is None else layout.valid & ~blocked[:, -1]


def _combined(edits, what: str, layer: int, layout: TokenLayout, q_pos, join) -> torch.Tensor | None:
    out = None
    for edit in edits:
        wanted, method = edit.layers(), getattr(edit, what, None)
        if method is None or (wanted is not None and layer not in wanted):
            continue
        part = method(layer, layout, q_pos)
        if part is not None:
            out = part if out is None else join(out, part)
    return out


_BY_MODEL: "weakref.WeakKeyDictionary[torch.nn.Module, Controller]" = weakref.WeakKeyDictionary()


def controller(loaded) -> Controller:
    """The controller of a loaded model (created on first use)."""
    model = loaded.model
    ctrl = _BY_MODEL.get(model)
    if ctrl is None:
        ctrl = _BY_MODEL[model] = Controller(model, loaded.adapter)
    return ctrl
