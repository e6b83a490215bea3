"""Mistakes Hydra itself catches (a typo'd key, an unknown preset, an override it cannot parse)
end like every other bad input: one line naming the nearest valid key or preset, exit code 2,
never a hint to add a key with ``+``. A failed job of a multirun (SLURM, joblib) that ended in
layerprobe's own one-line error reports that line, once, instead of the launcher's traceback.

    def main():
        run_app(_app, "sweep")        # the console script: Hydra app + these translations

    layerprobe-sweep data.limt=10
    # layerprobe: error: data.limt=10: no such option; did you mean data.limit? (options of data: name, root, ...)
"""

from __future__ import annotations

import difflib
import os
import re
import sys

from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from layerprobe.cli.common import error_exit
from layerprobe.io.paths import CONF_DIR

PREFIX = "layerprobe: error: "


def _overrides() -> list[str]:
    return [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]


def _given(key: str) -> str:
    """The command-line item that set ``key`` (with its value), or the key."""
    return next((a for a in _overrides() if a.lstrip("+~").split("=", 1)[0] == key), key)


def _nearest(word: str, choices) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return found[0] if found else None


def _keys_at(config_name: str, parent: str) -> list[str]:
    """Keys of node ``parent`` of the config as composed from the command's preset choices."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    choices = [a for a in _overrides() if "." not in a.split("=", 1)[0] and not a.startswith(("+", "~"))]
    for overrides in (choices, []):
        try:
            with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name, overrides=overrides, return_hydra_config=parent.startswith("hydra"))
            node = OmegaConf.select(cfg, parent) if parent else cfg
            return [str(k) for k in node.keys()] if OmegaConf.is_dict(node) else []
        except Exception:   # a choice of the command is itself wrong: try the defaults
            continue
    return []


def _unknown_key(err: Exception, config_name: str) -> str | None:
    """Hydra's "Could not override 'x'. To append to your config use +x=..." is a key that does
    not exist: a typo far more often than a wish to add one, so no ``+`` is suggested."""
    found = re.search(r"Could not override '([^']+)'\.\s*To append", str(err))
    if not found:
        return None
    key = found.group(1)
    parent, _, leaf = key.rpartition(".")
    keys = [k for k in _keys_at(config_name, parent) if k != "hydra"]
    near = _nearest(leaf, keys)
    hint = f"; did you mean {f'{parent}.' if parent else ''}{near}?" if near else ""
    where = f"options of {parent}" if parent else "options"
    return f"{_given(key)}: no such option{hint} ({where}: {', '.join(keys)})"


def _missing_preset(err: MissingConfigException) -> str | None:
    text = str(err)
    found = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if not found:
        return None
    group, name = found.groups()
    options = re.findall(r"^\t(\S+)$", text, re.M)
    near = _nearest(name, options)
    hint = f"; did you mean {group}={near}?" if near else ""
    return f"{group}={name}: no such preset{hint} (presets in {group}: {', '.join(options) or 'none'})"


def one_line(err: Exception, config_name: str) -> str:
    """Hydra's (or OmegaConf's) error as one line for the user."""
    text = str(err).strip()
    if isinstance(err, MissingConfigException):
        return _missing_preset(err) or text.splitlines()[0]
    if isinstance(err, OverrideParseException):
        return f"{getattr(err, 'override', '?')}: cannot parse this override ({text.splitlines()[0]}; quote it for " \
               "the shell, e.g. 'layers=[0,1]')"
    if isinstance(err, ConfigCompositionException):
        message = _unknown_key(err, config_name)
        if message:
            return message
        group = re.search(r"Could not override '([^']+)'\. No match in the defaults list", text)
        if group and (CONF_DIR / group.group(1)).is_dir():
            return f"{_given(group.group(1))}: {group.group(1)} is not in the defaults; add it with +{_given(group.group(1))}"
        append = re.search(r"An item is already at '([^']+)'", text)
        if append:
            return f"{_given(append.group(1))}: {append.group(1)} is already set; give it without the +"
    first = text.splitlines()[0] if text else type(err).__name__
    cause = str(err.__cause__ or "").strip().splitlines()
    return f"{first} ({cause[0]})" if cause and cause[0] not in first else first


def _job_errors(err: BaseException) -> list[str]:
    """The one-line errors of failed multirun jobs, found in what the launcher raised (submitit
    puts a failed job's stderr into its exception), each once, in order."""
    seen: list[str] = []
    while err is not None:
        for line in str(err).splitlines():
            line = line.strip()
            if line.startswith(PREFIX) and line not in seen:
                seen.append(line)
        err = err.__cause__ or err.__context__
    return seen


def run_app(app, config_name: str) -> None:
    """Run the Hydra ``app`` with Hydra's own errors and failed jobs' errors made one line each."""
    previous = os.environ.get("HYDRA_FULL_ERROR")
    mine = previous != "1"                       # a user who set it wants Hydra's full traces
    os.environ["HYDRA_FULL_ERROR"] = "1"         # so that Hydra raises instead of printing them
    try:
        app()
    except (HydraException, OmegaConfBaseException) as err:
        if not mine:
            raise
        error_exit(one_line(err, config_name))
    except Exception as err:
        lines = _job_errors(err)
        if not mine or not lines:
            raise
        print("\n".join(lines), file=sys.stderr)
        sys.exit(2)
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
