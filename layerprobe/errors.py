"""Errors that layerprobe raises for bad input: one line, naming the file, field or value.

    try:
        samples = load_benchmark("vqav2", root="/data/vqav2")
    except DataError as err:
        print(err)   # "/data/vqav2/v2_...json: questions[3]: missing key 'question_id'"
"""


class LayerprobeError(ValueError):
    """Base class: every message is a single line that names what is wrong."""


class ConfigError(LayerprobeError):
    """A configuration value is out of range or inconsistent (layer index, percentile, ...)."""


class DataError(LayerprobeError):
    """A benchmark file, record or image cannot be read; names the file and the field or sample id."""


class ProfileError(LayerprobeError):
    """A layer profile does not validate; names the field."""


class ModelError(LayerprobeError):
    """A checkpoint cannot be loaded or its architecture is not supported."""
