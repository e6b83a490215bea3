"""Edge sets: the attention edges a knockout removes, one registered definition each. A definition
holds everything about its edge set: the name, the queries (positions whose attention it edits),
the keys they may not see (the image's, unless it says otherwise), a weight for a soft edit,
whether the fast sweep engine is exact for it, what the layout must know about each sample, and
its ``conf/mask/`` presets.

    edges = edge_set("image->text")
    edges.blocked(layout, q_pos)         # (B, q, kv) bool: the pairs it removes for queries at q_pos
    register(EdgeSet("image->first", "The question's first token loses the visual keys.",
                     queries=first_question_token, needs=(QUESTION,)))

Registering is the whole of adding one: ``knockout``, both sweep engines, ``method=knockout`` and
``run_sweep`` take it by name, and ``mask=<preset>`` once its YAML is written (``mask_config_text``
renders it; ``tests/test_edge_sets.py`` holds conf/mask/ equal to the registry).

Keys may be chosen per sample: ``needs=(SAMPLE,)`` puts each sample's key (from its id) into the
layout, and ``sample_generator(layout, b, seed)`` gives sample ``b`` the same random choices in any
batch, at any padding. The fast engine is exact for any keys, as long as every query lies after
the image (``fast=True`` is checked against the layout of every batch it runs).
"""

from __future__ import annotations

import hashlib
import math
import textwrap
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Callable

import torch

from layerprobe.core.layout import TokenLayout
from layerprobe.errors import ConfigError

QUESTION = "question"  # the layout knows each question's own tokens (TokenLayout.question)
SAMPLE = "sample"  # the layout knows each sample's key (TokenLayout.sample_keys)
NEEDS = (QUESTION, SAMPLE)
WINDOW_NOTE = "odd; layers l-window//2 .. l+window//2 are knocked out together"
GENERATED_NOTE = "(written from the edge set's definition in layerprobe/core/edges.py: edit it there)"


def visual_keys(layout: TokenLayout) -> torch.Tensor:
    return layout.visual


@dataclass(frozen=True)
class MaskPreset:
    """A ``conf/mask/<name>.yaml`` of an edge set: ``mask=<name>`` sweeps it in windows of
    ``window`` layers; ``doc`` is the file's comment (empty: the edge set's own)."""

    name: str
    window: int = 1
    doc: str = ""


@dataclass(frozen=True)
class EdgeSet:
    name: str
    doc: str  # one sentence or two: what loses what
    queries: Callable[[TokenLayout], torch.Tensor]  # (B, T) bool: positions whose attention is edited
    keys: Callable[[TokenLayout], torch.Tensor] = visual_keys  # (B, T) bool: what those may not see
    weight: float = 0.0  # 0: the keys are blocked; in (0, 1): their attention is scaled by it (a soft edit)
    fast: bool = True  # every query lies after the image, so the fast sweep engine is exact
    needs: tuple[str, ...] = ()  # what the layout must learn about each sample (QUESTION, SAMPLE)
    presets: tuple[MaskPreset, ...] = ()

    def __post_init__(self):
        if not 0.0 <= self.weight < 1.0:
            raise ConfigError(f"edge set {self.name!r}: weight={self.weight}: must be in [0, 1) (0 = blocked)")
        if self.fast and self.weight:
            raise ConfigError(f"edge set {self.name!r}: the fast engine applies no soft weight; set fast=False")
        unknown = [n for n in self.needs if n not in NEEDS]
        if unknown:
            raise ConfigError(f"edge set {self.name!r}: needs={unknown[0]!r}: one of {', '.join(NEEDS)}")
        for preset in self.presets:
            if preset.window < 1 or preset.window % 2 == 0:
                raise ConfigError(f"mask preset {preset.name!r}: window={preset.window}: must be odd and >= 1")

    def pairs(self, layout: TokenLayout, q_pos: torch.Tensor) -> torch.Tensor:
        """(B, q, kv) bool: the (query, key) pairs this edge set edits, for queries at ``q_pos``."""
        return self.queries(layout)[:, q_pos][:, :, None] & self.keys(layout)[:, None, :]

    def blocked(self, layout: TokenLayout, q_pos: torch.Tensor) -> torch.Tensor | None:
        """The pairs a knockout removes (None for a soft edit): the one definition of a knockout,
        read by the dispatcher and by the fast sweep engine alike."""
        return None if self.weight else self.pairs(layout, q_pos)

    def bias(self, layout: TokenLayout, q_pos: torch.Tensor) -> torch.Tensor | None:
        """(B, q, kv) float added to the pre-softmax scores of a soft edit: log(weight) on its pairs."""
        if not self.weight:
            return None
        return torch.where(self.pairs(layout, q_pos), math.log(self.weight), 0.0)

    def encode(self, loaded, samples, images, texts) -> dict:
        """A batch's model inputs; the layout also learns what this edge set needs of each sample."""
        return encode_for([self], loaded, samples, images, texts)


def encode_for(edge_sets, loaded, samples, images, texts) -> dict:
    """A batch's model inputs for several edge sets at once (a knockout and its control): the
    layout learns what any of them needs of each sample."""
    needs = {need: e.name for e in edge_sets for need in e.needs}
    questions = sample_ids = None
    if QUESTION in needs:
        questions = [getattr(s, "question", None) for s in samples]
        if not all(questions):
            raise ConfigError(f"edges={needs[QUESTION]!r}: every sample needs its question text")
    if SAMPLE in needs:
        sample_ids = [str(s.sample_id) for s in samples]
    return loaded.encode(images, texts, questions=questions, sample_ids=sample_ids)


# the registry ---------------------------------------------------------------------------
_REGISTRY: dict[str, EdgeSet] = {}


def register(edges: EdgeSet) -> EdgeSet:
    """Add ``edges`` under its name (a name or preset already taken is an error)."""
    if edges.name in _REGISTRY:
        raise ConfigError(f"edge set {edges.name!r}: already registered")
    taken = {p.name for e in _REGISTRY.values() for p in e.presets}
    clash = [p.name for p in edges.presets if p.name in taken]
    if clash:
        raise ConfigError(f"edge set {edges.name!r}: mask preset {clash[0]!r} already belongs to another edge set")
    _REGISTRY[edges.name] = edges
    return edges


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def edge_set(edges: str | EdgeSet) -> EdgeSet:
    """The registered edge set ``edges`` (an EdgeSet passes through); ConfigError naming the known ones."""
    if isinstance(edges, EdgeSet):
        return edges
    found = _REGISTRY.get(edges)
    if found is None:
        raise ConfigError(f"edges={edges!r}: unknown edge set; choose one of {', '.join(_REGISTRY)}")
    return found


def registered_edge_set(name: str) -> EdgeSet | None:
    """The edge set registered as ``name``, or None."""
    return _REGISTRY.get(name)


def edge_sets() -> list[EdgeSet]:
    """Every registered edge set, in the order of registration."""
    return list(_REGISTRY.values())


# per-sample choices -------------------------------------------------------------------------
def sample_key(sample_id: str) -> int:
    """A sample's key: a 63-bit number from its id, the same in every process."""
    return int.from_bytes(hashlib.sha256(str(sample_id).encode()).digest()[:8], "little") >> 1


def sample_generator(layout: TokenLayout, b: int, seed: int) -> torch.Generator:
    """A generator for sample ``b``'s seeded choices (an edge set with ``needs=(SAMPLE,)``)."""
    if layout.sample_keys is None:
        raise ConfigError("this edge set chooses keys per sample: encode the batch with its sample ids "
                          "(EdgeSet.encode does)")
    return torch.Generator().manual_seed((int(layout.sample_keys[b]) + seed * 0x9E3779B97F4A7C15) % 2**63)


# conf/mask/ -------------------------------------------------------------------------------------
def mask_config_text(edges: EdgeSet, preset: MaskPreset) -> str:
    """The ``conf/mask/<preset>.yaml`` of ``edges``: its comment, name, edge set and window."""
    comment = textwrap.wrap(preset.doc or edges.doc, 96) + [GENERATED_NOTE]
    return "".join(f"# {line}\n" for line in comment) + (
        f"name: {preset.name}\nedges: {edges.name}\nwindow: {preset.window}{' ' * 13}# {WINDOW_NOTE}\n")


def mask_configs() -> dict[str, str]:
    """{preset name: its YAML text} of every registered edge set."""
    return {p.name: mask_config_text(e, p) for e in edge_sets() for p in e.presets}


def write_mask_configs(directory: str | Path) -> list[Path]:
    """Write every registered preset's YAML into ``directory`` (conf/mask); returns those it changed."""
    written = []
    for name, text in mask_configs().items():
        path = Path(directory) / f"{name}.yaml"
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


# the built-in edge sets -----------------------------------------------------------------------
def _last_and_generated(layout: TokenLayout) -> torch.Tensor:
    return (layout.last_prompt | layout.generated) & layout.text_after


register(EdgeSet(
    "image->text", "Every text query after the image (generated tokens included) loses the visual keys.",
    queries=attrgetter("text_after"), presets=(MaskPreset("image_text"),)))
register(EdgeSet(
    "image->last", "Only the last prompt token and generated tokens lose the visual keys.",
    queries=_last_and_generated,
    presets=(MaskPreset("image_last"), MaskPreset("window9_last", 9, (
        "The cross-modal information-flow study's Image->Last: the last prompt token (and generated "
        "tokens) lose the visual keys in a window of 9 layers centred on l.")))))
register(EdgeSet(
    "image->question", (
        "The question's own tokens lose the visual keys (the cross-modal information-flow study's "
        "Image->Question): not the instruction after it, not the chat template's tokens, not the last "
        "prompt token. The sweep locates each question inside its prompt."),
    queries=attrgetter("question"), needs=(QUESTION,),
    presets=(MaskPreset("image_question"), MaskPreset("window9", 9, (
        "The cross-modal information-flow study's protocol: Image->Question blocked in a window of 9 "
        "layers centred on l (mask=window9_last for its Image->Last).")))))
register(EdgeSet(
    "image->prompt", (
        "All prompt text after the image except the last prompt token (question, instruction and the "
        "chat template's tokens) loses the visual keys."),
    queries=attrgetter("prompt_text"), presets=(MaskPreset("image_prompt"),)))
