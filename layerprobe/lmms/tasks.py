"""Local lmms-eval tasks over files on disk, for ``lmms-eval --include_path``.

    python -m layerprobe.lmms.tasks lmms_tasks/ --benchmark textvqa=/data/textvqa --export organism
    lmms-eval --model layerprobe --model_args pretrained=organism,method=contrastive \\
      --include_path lmms_tasks/ --tasks layerprobe_textvqa,layerprobe_organism --log_samples --output_path logs/

``benchmark_task`` writes a task that *is* lmms-eval's own task (its YAML is included: prompt,
generation kwargs, ``process_results`` and metrics) with only the data source changed, to an
lmms-lab parquet mirror under a local root (the layout ``data.layout=parquet`` reads). GQA is not
offered: lmms-eval's GQA task fetches its images from the hub inside ``doc_to_visual``.
``export_task`` writes any exact-match layerprobe benchmark (the organism's synthetic task) as a
parquet file plus a task scored by lmms-eval's built-in ``exact_match``.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
from pathlib import Path

import yaml

from layerprobe.errors import ConfigError
from layerprobe.io.filenames import safe_name

# benchmark -> (lmms-eval task YAML, relative to lmms_eval/tasks; parquet files under the root; split)
LMMS_TASKS = {
    "vqav2": ("vqav2/vqav2_val.yaml", "data/validation-*.parquet", "validation"),
    "textvqa": ("textvqa/textvqa_val.yaml", "data/validation-*.parquet", "validation"),
    "docvqa": ("docvqa/docvqa_val.yaml", "DocVQA/validation-*.parquet", "validation"),
    "okvqa": ("ok_vqa/ok_vqa_val2014.yaml", "data/val2014-*.parquet", "val2014"),
    "vizwiz": ("vizwiz_vqa/vizwiz_vqa_val.yaml", "data/val-*.parquet", "val"),
}


def lmms_tasks_dir() -> Path:
    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("lmms-eval is not installed: pip install 'layerprobe[lmms]'")
    return Path(next(iter(spec.submodule_search_locations))) / "tasks"


class Function(str):
    """A task field naming a Python function (lmms-eval's ``!function module.name`` tag)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


def _write_yaml(path: Path, config: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(config, Dumper=_Dumper, sort_keys=False))


def benchmark_task(out_dir, name: str, root) -> str:
    """Write ``layerprobe_<name>.yaml``: lmms-eval's validation task of ``name`` reading the parquet
    mirror under ``root``; returns the task name."""
    if name not in LMMS_TASKS:
        raise ConfigError(f"benchmark {name!r}: no local lmms-eval task; choose one of {', '.join(LMMS_TASKS)}")
    task_yaml, pattern, split = LMMS_TASKS[name]
    root = Path(root).expanduser().resolve()
    if not list(root.glob(pattern)):
        raise ConfigError(f"{root}: no {pattern} (the lmms-lab parquet mirror of {name})")
    include = lmms_tasks_dir() / task_yaml
    if not include.is_file():
        raise ConfigError(f"{include}: lmms-eval has no such task file (installed lmms-eval too old or too new?)")
    task = f"layerprobe_{name}"
    _write_yaml(Path(out_dir) / f"{task}.yaml", {
        "include": str(include), "task": task, "dataset_path": "parquet", "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(root / pattern)}}, "test_split": split,
    })
    return task


def export_task(out_dir, data, task: str | None = None) -> str:
    """Write a layerprobe benchmark (``load_benchmark(...)``) as ``<task>.parquet`` + ``<task>.yaml``:
    the prompt layerprobe builds, the image as PNG, scored by lmms-eval's ``exact_match``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if data.metric != "exact_match":
        raise ConfigError(f"data={data.name}: export_task writes exact-match tasks; {data.name} is scored by "
                          f"{data.metric} (use benchmark_task for lmms-eval's own task)")
    task = task or f"layerprobe_{data.name}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in data.samples:
        buf = io.BytesIO()
        s.load_image().save(buf, "PNG")
        rows.append({"sample_id": str(s.sample_id), "question": s.question, "prompt": data.prompt(s),
                     "answer": s.answers[0], "answers": list(s.answers),
                     "image": {"bytes": buf.getvalue(), "path": f"{safe_name(s.sample_id)}.png"}})
    table = pa.Table.from_pylist(rows)
    meta = b'{"info": {"features": {"image": {"_type": "Image"}}}}'  # decoded to PIL by datasets
    pq.write_table(table.replace_schema_metadata({b"huggingface": meta}), out_dir / f"{task}.parquet")
    _write_yaml(out_dir / f"{task}.yaml", {
        "task": task, "dataset_path": "parquet", "dataset_kwargs": {"data_files": {"test": f"{task}.parquet"}},
        "test_split": "test", "output_type": "generate_until",
        "doc_to_visual": Function("layerprobe.lmms.tasks.doc_to_visual"),
        "doc_to_text": Function("layerprobe.lmms.tasks.doc_to_text"), "doc_to_target": "answer",
        "generation_kwargs": {"max_new_tokens": data.max_new_tokens, "until": ["\n\n"]},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": True}],
        "metadata": [{"version": 0.0, "source": f"layerprobe data={data.name}, {len(rows)} samples"}],
    })
    return task


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["prompt"]


def main(argv=None) -> None:
    from layerprobe.data.registry import load_benchmark

    parser = argparse.ArgumentParser(prog="python -m layerprobe.lmms.tasks", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--benchmark", action="append", default=[], metavar="NAME=ROOT",
                        help=f"lmms-eval's task over a local parquet mirror ({', '.join(LMMS_TASKS)})")
    parser.add_argument("--export", action="append", default=[], metavar="DATA",
                        help="a layerprobe benchmark exported as a task (organism)")
    parser.add_argument("--limit", type=int, default=None, help="samples per exported benchmark")
    args = parser.parse_args(argv)
    names = []
    try:
        for spec in args.benchmark:
            name, sep, root = spec.partition("=")
            if not sep:
                raise ConfigError(f"--benchmark {spec!r}: expected NAME=ROOT")
            names.append(benchmark_task(args.out_dir, name, root))
        for name in args.export:
            names.append(export_task(args.out_dir, load_benchmark(name, limit=args.limit)))
    except ConfigError as err:
        raise SystemExit(f"layerprobe: error: {err}") from None
    print(f"--include_path {Path(args.out_dir).resolve()} --tasks {','.join(names)}")


if __name__ == "__main__":
    main()
