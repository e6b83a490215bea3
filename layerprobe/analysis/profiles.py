"""Layer profiles: which decoder layers of a model fuse the image into the text, which one reviews
it, and the evidence behind them. They drive contrastive attention.

    profile = load_profile("llava15_7b")                # a preset in conf/profile/, or a YAML path
    profile = load_profile("runs/x/profile.yaml", num_layers=32)   # also checks it fits the model
    profile.fusion_layers, profile.review_layer, profile.post_integrated_layer   # 0-based
    profile.require_layers("contrastive attention")     # refuses review_layer: null, no fusion layer
    save_profile(profile, "conf/profile/my_model.yaml") # now a preset: profile=my_model
    check_model(profile, loaded)                        # refuses a profile made for another model

A profile is plain YAML (no Hydra needed). Every error is a one-line ProfileError naming the
profile and the field. A discovery that finds no review layer (or no layer at all) still writes
its profile, with ``review_layer: null`` (and ``fusion_layers: []``): a result, which methods that
need the layers refuse. ``save_profile`` stamps the file with a digest of its lines, so
``layerprobe-discover`` replaces only a profile it wrote and nobody edited since.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from layerprobe.core.layers import layer_index
from layerprobe.errors import ProfileError
from layerprobe.io.paths import CONF_DIR
from layerprobe.io.results import write_atomic

PROFILE_DIR = CONF_DIR / "profile"
REQUIRED = ("model", "num_layers", "fusion_layers")   # and review_layer, which may be null
DIGEST = "# digest "


def layerprobe_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("layerprobe")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class LayerProfile:
    model: str                                   # checkpoint id or path the layers belong to
    num_layers: int                              # decoder layers of that model
    fusion_layers: list[int]                     # candidates for the pre-integrated layer
    review_layer: int | None                     # where low-contrast visual tokens are suppressed; None: not found
    post_integrated_layer: int | None = None     # None means review_layer - 1
    model_config_hash: str | None = None
    edges: str | None = "image->text"            # the knockout the evidence comes from
    data: list[str] = field(default_factory=list)        # benchmarks of the evidence
    runs: list[str] = field(default_factory=list)        # sweep run directories
    n: dict[str, int] = field(default_factory=dict)      # paired samples per benchmark
    statistics: dict[str, Any] = field(default_factory=dict)   # test, alpha, min_effect, ...
    evidence: list[dict[str, Any]] = field(default_factory=list)  # per benchmark x layer
    source: str = ""                             # "layerprobe-discover", "paper", "manual"
    notes: str = ""
    layerprobe_version: str | None = None
    name: str = field(default="profile", compare=False, repr=False)   # for messages; not saved

    def __post_init__(self):
        if self.post_integrated_layer is None and isinstance(self.review_layer, int):
            self.post_integrated_layer = self.review_layer - 1

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "name"]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], name: str = "profile") -> "LayerProfile":
        if not isinstance(values, Mapping):
            raise ProfileError(f"profile {name}: expected a mapping of keys, got {type(values).__name__}")
        unknown = [k for k in values if k not in cls.keys()]
        if unknown:
            raise ProfileError(f"profile {name}: unknown key {unknown[0]!r}; valid keys: {', '.join(cls.keys())}")
        missing = [k for k in REQUIRED if values.get(k) is None] + [k for k in ("review_layer",) if k not in values]
        if missing:
            raise ProfileError(f"profile {name}: missing key {missing[0]!r}")
        # a missing or null key takes its default (post_integrated_layer: review_layer - 1)
        profile = cls(**{k: _plain(v) for k, v in values.items() if v is not None or k == "review_layer"}, name=name)
        return profile.validate()

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.keys()}

    def validate(self, num_layers: int | None = None) -> "LayerProfile":
        """Raise ProfileError unless the layers make sense (for a model of ``num_layers`` if given)."""
        def fail(message: str):
            raise ProfileError(f"profile {self.name}: {message}")

        def is_index(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        if not isinstance(self.model, str) or not self.model:
            fail(f"model={self.model!r} must be a non-empty checkpoint id or path")
        if not is_index(self.num_layers) or self.num_layers < 1:
            fail(f"num_layers={self.num_layers!r} must be a positive integer")
        if num_layers is not None and num_layers != self.num_layers:
            fail(f"num_layers={self.num_layers} but the model has {num_layers} decoder layers")
        depth = self.num_layers

        def check_layer(field_name: str, value) -> None:
            layer_index(f"profile {self.name}: {field_name}", value, depth, error=ProfileError)

        if not isinstance(self.fusion_layers, (list, tuple)):
            fail(f"fusion_layers={self.fusion_layers!r} must be a list of layer indices")
        for i, layer in enumerate(self.fusion_layers):
            check_layer(f"fusion_layers[{i}]", layer)
        if len(set(self.fusion_layers)) != len(self.fusion_layers):
            fail(f"fusion_layers={list(self.fusion_layers)} has a repeated layer")
        if self.review_layer is None:   # a discovery that found no review layer: a record, see require_layers
            if self.post_integrated_layer is not None:
                check_layer("post_integrated_layer", self.post_integrated_layer)
            return self._check_lists(fail)
        check_layer("review_layer", self.review_layer)
        check_layer("post_integrated_layer", self.post_integrated_layer)
        if self.review_layer <= self.post_integrated_layer:
            fail(f"review_layer={self.review_layer} must be > post_integrated_layer={self.post_integrated_layer}")
        for i, layer in enumerate(self.fusion_layers):
            if layer >= self.post_integrated_layer:
                fail(f"fusion_layers[{i}]={layer} must be < post_integrated_layer={self.post_integrated_layer} "
                     "(pre-integrated layers come before the post-integrated one)")
        return self._check_lists(fail)

    def _check_lists(self, fail) -> "LayerProfile":
        for key, kind in (("data", list), ("runs", list), ("n", dict), ("statistics", dict), ("evidence", list)):
            if not isinstance(getattr(self, key), kind):
                fail(f"{key} must be a {kind.__name__}, got {type(getattr(self, key)).__name__}")
        return self


    def require_layers(self, needed_by: str = "contrastive attention") -> "LayerProfile":
        """Refuse (ProfileError) a profile without a review layer or without fusion layers."""
        if self.review_layer is None:
            found = "no layer" if not self.fusion_layers else "only fusion layers"
            raise ProfileError(f"profile {self.name}: review_layer is null (its discovery found {found}); "
                               f"{needed_by} needs one: set review_layer: <layer> in the profile, or rerun "
                               "layerprobe-discover with review_layer=<layer>")
        if not self.fusion_layers:
            raise ProfileError(f"profile {self.name}: fusion_layers is empty; {needed_by} needs at least one "
                               "fusion layer")
        return self


def check_model(profile: "LayerProfile", loaded) -> None:
    """Refuse (ProfileError) ``profile`` on a model of another architecture than it was discovered on
    (``model_config_hash``, see ``layerprobe.models.identity``); a profile without one is checked
    on depth only."""
    made_for, now = profile.model_config_hash, loaded.config_hash()
    if made_for and made_for != now:
        raise ProfileError(f"profile {profile.name}: made for {profile.model} (model_config_hash {made_for}), but "
                           f"{loaded.name} has model_config_hash {now}; to use it on another model anyway "
                           "(a transfer, recorded in the run's header) give profile_check=false")


def _plain(value):
    """dicts and lists all the way down, so an OmegaConf node from Hydra loads like parsed YAML."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _resolve(name_or_path: str | Path) -> tuple[Path, str]:
    path = Path(name_or_path)
    if path.is_file():
        return path, str(name_or_path)
    text = str(name_or_path)
    if path.suffix in (".yaml", ".yml") or "/" in text or "\\" in text:
        raise ProfileError(f"profile {text}: file not found")
    preset = PROFILE_DIR / f"{text}.yaml"
    if not preset.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ProfileError(f"profile {text}: no such preset in {PROFILE_DIR}; presets: {', '.join(known) or 'none'}")
    return preset, text


def load_profile(name_or_path, num_layers: int | None = None, name: str = "profile") -> LayerProfile:
    """A preset name (``conf/profile/<name>.yaml``), a YAML path, or an already-parsed mapping
    (what Hydra composes from ``profile=<name>``; ``name`` names it in messages); validated,
    against ``num_layers`` if given."""
    if isinstance(name_or_path, LayerProfile):
        return name_or_path.validate(num_layers)
    if isinstance(name_or_path, Mapping):
        return LayerProfile.from_dict(dict(name_or_path), name=name).validate(num_layers)
    path, name = _resolve(name_or_path)
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ProfileError(f"profile {name}: not valid YAML{where}") from None
    return LayerProfile.from_dict(values if values is not None else {}, name=name).validate(num_layers)


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def save_profile(profile: LayerProfile, path: str | Path) -> Path:
    """Write ``profile`` as YAML, atomically, stamped with the digest of its lines (see
    ``unchanged_since_saved``); indices stay 0-based."""
    profile.validate()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(profile.to_dict(), sort_keys=False, default_flow_style=None, width=120)
    head = (f"# layer profile for {profile.model} ({profile.num_layers} decoder layers; indices are 0-based)\n"
            f"# load with layerprobe.analysis.profiles.load_profile({str(path)!r}) or profile=<this path>\n"
            f"{DIGEST}{_digest(body)} (layerprobe-discover replaces this file only while its lines are unchanged)\n")
    write_atomic(path, head + body)
    return path


def unchanged_since_saved(path: str | Path) -> bool:
    """Whether the file at ``path`` is a profile ``save_profile`` wrote and nobody edited since."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return False
    lines = text.splitlines(keepends=True)
    stamp = next((i for i, line in enumerate(lines[:5]) if line.startswith(DIGEST)), None)
    if stamp is None:
        return False
    return lines[stamp][len(DIGEST):].split()[0] == _digest("".join(lines[stamp + 1:]))


def method_profile(given, loaded, check: bool = True, name: str = "profile") -> dict | None:
    """The layers a method reads, as a plain mapping: ``given`` (a preset name, a YAML path or a
    mapping) checked against ``loaded`` (its depth, and with ``check`` its architecture:
    ``check_model``); without one, the organism's planted layers; otherwise None (the methods that
    need a profile say so)."""
    if given:
        profile = load_profile(given, num_layers=loaded.num_layers, name=name)
        if check:
            check_model(profile, loaded)
        return {k: v for k, v in profile.to_dict().items() if k not in ("evidence", "statistics")}
    planted = sorted(loaded.extra.get("organism", {}).get("planted", []))
    if not planted:
        return None
    return {"fusion_layers": planted[:-1], "review_layer": planted[-1], "post_integrated_layer": planted[-1] - 1}
