"""Default run folders that two different runs do not share by accident: what a config changes
from its presets becomes part of the name (Hydra resolvers, registered on import).

    run_dir: runs/sweep/${model.name}/${data.name}/${mask.name}${selection:${model},${data},${mask},${layers},${control},${control_seed},${adaptive}}
      # runs/sweep/organism/organism/image_text                  (presets as shipped)
      # runs/sweep/organism/organism/image_text_limit-100_seed-1 (data.limit=100 data.seed=1)
      # runs/sweep/organism/organism/image_text_layers-0+1+2     (layers=[0,1,2])
      # runs/sweep/organism/organism/image_text_control-text_keys_adaptive (control=text_keys adaptive=true)
    label: ${method_label:${method},${profile},${profile_file}}
      # contrastive, contrastive_percentile-5, contrastive_profile-organism, contrastive_profile_file-3f2a9c1b

Options that do not change a run's answers (where the data is, its layout, on_error, the device,
the attention backend, progress bars) stay out of the name; a collision they leave is refused
when the run resumes (``layerprobe.io.identity``), and that refusal names ``run_dir=`` / ``label=``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from omegaconf import OmegaConf

from layerprobe.cli.common import to_python
from layerprobe.io.paths import CONF_DIR

# preset keys that do not change answers (or are checked by the run's identity instead); download
# says only whether files may be fetched, so a rerun offline finds (and resumes) the same folder
NEUTRAL = {"name", "root", "layout", "on_error", "device", "attn_implementation", "check_keys", "decoder_layers",
           "chat_template", "download"}


def label_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(label_value(v) for v in value)
    text = json.dumps(value) if value is None or isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9.,+-]+", "_", text)[:40]  # a path component, not a sentence


def preset(group: str, name: str) -> dict:
    """The shipped options of preset ``name`` of ``group`` (``conf/<group>/<name>.yaml``); just
    its name if none ships."""
    path = CONF_DIR / group / f"{name}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.is_file() else {"name": name}


def changed(group: str, options, neutral=frozenset()) -> list[str]:
    """``key-value`` for each option of ``options`` that differs from its preset's."""
    options = to_python(options) or {}
    shipped = preset(group, options.get("name", ""))
    return [f"{k}-{label_value(v)}" for k, v in options.items()
            if k not in neutral and (k not in shipped or shipped[k] != v)]


def selection(model, data, mask, layers, control=None, control_seed=0, adaptive=False) -> str:
    """The sweep folder's suffix: every model, data and mask option off its preset, the layers, the
    specificity control (and its draw) and an adaptive sweep. Lists join with ``+``, not ``,``: the
    folder is given back on command lines (``run=<folder>``), where Hydra reads a comma as a list
    of runs."""
    parts = [*changed("model", model, NEUTRAL), *changed("data", data, NEUTRAL), *changed("mask", mask, NEUTRAL)]
    if to_python(layers) is not None:
        parts.append(f"layers-{label_value(to_python(layers))}")
    if control is not None:
        parts.append(f"control-{label_value(control)}")
        if control_seed:
            parts.append(f"control_seed-{label_value(control_seed)}")
    if adaptive:
        parts.append("adaptive")
    return "".join(f"_{p}" for p in parts).replace(",", "+")


def _digest(text: str | bytes) -> str:
    return hashlib.sha256(text if isinstance(text, bytes) else text.encode()).hexdigest()[:8]


def profile_part(profile, profile_file) -> str | None:
    """``profile-<preset>`` (a shipped or saved preset, recognised by its content), ``profile-<digest>``
    (a preset with options changed), ``profile_file-<digest of the file>``; None without one."""
    if profile_file is not None:
        path = Path(str(profile_file))
        content = path.read_bytes() if path.is_file() else str(profile_file)
        return f"profile_file-{_digest(content)}"
    profile = to_python(profile)
    if not profile:
        return None
    # the shipped presets, then the working folder's (eval.yaml adds ./conf to Hydra's search path)
    for file in [*sorted((CONF_DIR / "profile").glob("*.yaml")), *sorted(Path("conf/profile").glob("*.yaml"))]:
        if OmegaConf.to_container(OmegaConf.load(file)) == profile:
            return f"profile-{label_value(file.stem)}"
    return f"profile-{_digest(json.dumps(profile, sort_keys=True, default=str))}"


def method_label(method, profile=None, profile_file=None) -> str:
    """A run's default label: the method's name, then ``option-value`` for each option that
    differs from the shipped defaults, then the profile for a method that reads one, so that a
    multirun over an option (or a profile) writes one directory per value."""
    from layerprobe.methods.registry import takes_profile

    options = to_python(method)
    parts = [options["name"], *changed("method", options, {"name"})]
    given = profile_part(profile, profile_file)
    if given and takes_profile(options["name"]):
        parts.append(given)
    return "_".join(parts)


OmegaConf.register_new_resolver("method_label", method_label, replace=True)
OmegaConf.register_new_resolver("selection", selection, replace=True)
