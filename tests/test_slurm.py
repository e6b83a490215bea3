"""The cluster path on a real SLURM: a throwaway single-node cluster (experiments/slurm_local.sh:
slurmctld, slurmd, slurmdbd and munge of their own) runs docs/scaling.md's recipe as an array job,
and merged shards equal an unsharded local run row for row; a cancelled task is finished by the
same command without recomputing the finished shards; a requeued (preempted) task resumes from
its results file without a duplicated row; a task that fails on bad input puts its one-line error
in its log and in the submitting command's output, and the other shards' results stay. While the
cluster is up it admits nobody else: MariaDB has no TCP listener and only root's socket login, and
the munge key is mode 0400 from the moment it exists.

Needs root, or the Debian packages installed (the script installs them with apt-get): otherwise
every test is skipped with the script's reason. Minutes long: ``-m slurm`` runs them (CI does)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from layerprobe.analysis.discovery import discover_runs
from layerprobe.io.results import read_results
from layerprobe.io.runs import merge_runs
from layerprobe.sweep.report import replot

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "slurm_local.sh"
FIXTURES = ROOT / "tests" / "fixtures" / "benchmarks"
VENV = Path(sys.prefix)
LATENCY = ["prefill_s", "total_s"]
KEY = ["benchmark", "sample_id", "condition", "layer"]
# one CPU and 2 GB per task, no GPU: the node has 2 cores, so two tasks run at once
SIZES = "hydra.launcher.gpus_per_node=0 hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=2"
TINY = "model=tiny_llava15 model.path=tiny:llava:4"
# batch_size=1: a shard's batches then cannot change an answer (docs/scaling.md, Determinism)
QUICK = "batch_size=1 timing_samples=0 progress=false"


def _dd_that_reports_modes(folder: Path) -> dict:
    """PATH and settings under which ``dd`` also writes the mode of each file it wrote (``of=``),
    taken the instant dd returns: before any chmod of the script could run."""
    shim = folder / "bin"
    shim.mkdir()
    (shim / "dd").write_text('#!/bin/sh\n"$REAL_DD" "$@"; rc=$?\n'
                             'for a; do case $a in of=*) stat -c "%a %n" "${a#of=}" >> "$DD_MODES";; esac; done\n'
                             'exit $rc\n')
    (shim / "dd").chmod(0o755)
    return {"PATH": f"{shim}:{os.environ['PATH']}", "REAL_DD": shutil.which("dd"), "DD_MODES": str(folder / "dd_modes")}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The cluster's environment (SLURM_CONF set) for as long as the module runs. The script holds
    the cluster until its stdin closes, so the daemons go down even if pytest is killed."""
    base = tmp_path_factory.mktemp("slurm")
    log = base / "slurm_local.log"
    dd = _dd_that_reports_modes(base)
    with open(log, "w") as err:
        proc = subprocess.Popen(["bash", str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, text=True, env={**os.environ, **dd})
    conf = None
    for line in proc.stdout:
        if line.startswith("export SLURM_CONF="):
            conf = line.strip().split("=", 1)[1]
            break
    if conf is None:
        rc = proc.wait(timeout=120)
        said = log.read_text()
        reason = re.search(r"^slurm_local: (cannot install .*)$", said, re.M)
        if rc == 3 and reason:
            pytest.skip(f"no local SLURM: {reason.group(1)}")
        pytest.fail(f"experiments/slurm_local.sh exited {rc}:\n{said[-3000:]}")
    env = {**os.environ, "SLURM_CONF": conf, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "DD_MODES": dd["DD_MODES"]}
    pids = _daemon_pids(Path(conf).parent)
    yield env
    proc.stdin.close()
    assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
    print(log.read_text())
    alive = [name for name, pid in pids.items() if _alive(pid, name)]
    assert not alive, f"daemons still running after the script stopped: {alive}"


def _daemon_pids(folder: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in (folder / "run").glob("*.pid")}


def _alive(pid: int, name: str) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


def with_venv(env) -> dict:
    """The cluster's environment with the test's venv first on PATH (the recipe's VENV)."""
    return {**env, "PATH": f"{VENV / 'bin'}:{env['PATH']}"}


def sh(env, command: str, cwd: Path = ROOT, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    """A shell command line in the cluster's environment."""
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=cwd, env=with_venv(env),
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{command}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def slurm_sweep(out: Path, overrides: str) -> str:
    return (f"layerprobe-sweep -m hydra/launcher=slurm {SIZES} "
            f"'hydra.launcher.setup=[\"source {VENV}/bin/activate\"]' hydra.sweep.dir={out} {overrides}")


def rows(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=LATENCY).sort_values(KEY).reset_index(drop=True)


def raw_keys(run: Path) -> list[tuple]:
    """Every row's key as written, duplicates included (read_results would hide none, but the file is the truth)."""
    lines = (run / "results.jsonl").read_text().splitlines()[1:]
    return [tuple(json.loads(line)[k] for k in KEY) for line in lines]


def recipe() -> str:
    """docs/scaling.md's SLURM recipe, the block after the "slurm-recipe" marker."""
    text = (ROOT / "docs" / "scaling.md").read_text()
    block = re.search(r"<!-- slurm-recipe[^>]*-->\s*```bash\n(.*?)```", text, re.S)
    assert block, "docs/scaling.md: no ```bash block after <!-- slurm-recipe -->"
    return block.group(1)


def substitute(text: str, old: str, new: str, regex: bool = False) -> str:
    """One edit of the recipe; an edit that no longer applies means the docs changed under the test."""
    out, n = re.subn(old if regex else re.escape(old), new, text, flags=re.M)
    assert n, f"docs/scaling.md's recipe no longer contains {old!r}"
    return out


# --- nobody else gets in ----------------------------------------------------------------------

def _listening_inodes() -> set[int]:
    """Socket inodes of every TCP socket in LISTEN state on the machine (IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                found.add(int(fields[9]))
    return found


def test_the_cluster_admits_nobody_else(slurm):
    folder = Path(slurm["SLURM_CONF"]).parent
    key = folder / "munge" / "munge.key"
    # the munge key was 0400 the instant dd had written it, not only after a chmod
    assert f"400 {key}" in Path(slurm["DD_MODES"]).read_text().splitlines()
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    # MariaDB listens on no TCP port: none of its sockets is a listening TCP socket
    pid = int((folder / "run" / "mariadbd.pid").read_text())
    links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    sockets = {int(link[len("socket:["):-1]) for link in links if link.startswith("socket:[")}
    assert sockets and not sockets & _listening_inodes()
    # its socket lies in a folder only root may enter; it reads and writes files in its own only
    assert stat.S_IMODE((folder / "db-run").stat().st_mode) == 0o700
    query = f"mariadb --no-defaults --socket={folder}/db-run/mariadb.sock -u root -N -e"
    said = sh(slurm, f"{query} 'select @@skip_networking, @@secure_file_priv'").stdout.split()
    assert said == ["1", f"{folder}/db-files/"]
    # root's login is socket authentication: no password exists to be guessed or read
    plugins = sh(slurm, f"{query} \"select json_extract(priv, '$.auth_or[1].plugin') from mysql.global_priv "
                        "where user='root'\"").stdout.split()
    assert plugins == ['"unix_socket"']


# --- the recipe -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recipe_runs(slurm, tmp_path_factory):
    base = tmp_path_factory.mktemp("recipe")
    out, whole = base / "sweep", base / "whole"
    script = recipe()
    # the site-specific first lines, and the sizes this node has
    script = substitute(script, r"^PARTITION=\S+", "PARTITION=local", regex=True)
    script = substitute(script, r"^VENV=\S+", f"VENV={VENV}", regex=True)
    script = substitute(script, r"^OUT=\S+", f"OUT={out}", regex=True)
    script = substitute(script, "hydra.launcher.timeout_min=240", f"hydra.launcher.timeout_min=30 {SIZES}")
    # a tiny model on the benchmark fixtures, 2 benchmarks x 2 shards of 5 samples
    script = substitute(script, "model=llava15_7b", TINY)
    script = substitute(script, "llava15_7b", "tiny_llava15")
    script = substitute(script, "'data.root=/datasets/${data.name}'", f"'data.root={FIXTURES}/${{data.name}}/official'")
    script = substitute(script, "data.limit=5000 data.num_shards=4 data.shard=0,1,2,3",
                        f"data.limit=5 data.num_shards=2 data.shard=0,1 {QUICK}")
    script = substitute(script, "shard*of4", "shard*of2")
    print(script)
    # the profile goes to conf/profile/ of the working directory: the test's own
    proc = sh(slurm, script, cwd=base, check=False)
    # the unsharded reference, run here with Hydra's basic launcher
    sh(slurm, f"layerprobe-sweep -m hydra.sweep.dir={whole} {TINY} data=vqav2,gqa "
              f"'data.root={FIXTURES}/${{data.name}}/official' data.limit=5 {QUICK}")
    runs = {name: [d / "tiny_llava15" / b / "image_text" / f"shard{i}of{n}" for b in ("gqa", "vqav2") for i in range(n)]
            for name, d, n in (("sharded", out, 2), ("whole", whole, 1))}
    return base, proc, runs


def test_recipe_runs_two_benchmarks_x_two_shards_as_one_array_job(recipe_runs):
    base, proc, runs = recipe_runs
    submitit = sorted(p.name for p in (base / "sweep" / ".submitit").iterdir() if p.is_dir())
    array = {name.split("_")[0] for name in submitit if "_" in name}
    assert len(array) == 1 and len(submitit) >= 4, submitit      # one array job, four tasks
    # submitit followed the tasks through sacct: the cluster keeps accounting
    assert "Bypassing sacct error" not in proc.stdout + proc.stderr
    for run in runs["sharded"]:
        assert (run / "results.jsonl").is_file(), run
        assert "layerprobe.sweep" in (run / "sweep.log").read_text()
    # 5 samples: shards of 3 and 2; baseline + a knockout at each of the 4 layers
    assert [len(read_results(r)) for r in runs["sharded"]] == [3 * 5, 2 * 5] * 2


def test_recipe_merges_to_the_unsharded_run(recipe_runs):
    base, proc, runs = recipe_runs
    (merged, _), (reference, _) = merge_runs(runs["sharded"]), merge_runs(runs["whole"])
    assert len(reference) == 2 * 5 * 5
    pd.testing.assert_frame_equal(rows(merged), rows(reference))
    # layerprobe-plot (in the recipe) against the library's replot of the unsharded runs
    replot(runs["whole"], out=base / "whole_merged")
    cols = ["benchmark", "condition", "layer", "n", "n_skipped", "accuracy", "ci_low", "ci_high"]
    plotted = pd.read_csv(base / "sweep" / "tiny_llava15" / "summary.csv")[cols]
    assert list(plotted["n"]) == [5] * 10
    pd.testing.assert_frame_equal(plotted, pd.read_csv(base / "whole_merged" / "summary.csv")[cols])


def test_recipe_discovers_from_the_shards_what_the_unsharded_run_gives(recipe_runs):
    base, proc, runs = recipe_runs
    # the tiny model has no late drop: layerprobe-discover writes the profile without a review
    # layer, says so once, and the recipe ends well (finding nothing is a result)
    notes = [line for line in proc.stdout.splitlines() if line.startswith("note: ")]
    assert proc.returncode == 0 and len(notes) == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = discover_runs(runs["whole"], out=base / "whole_profile" / "profile.yaml", figure=False)
    assert notes[0] == f"note: {result.missing}" and result.profile.review_layer is None
    written = sorted((base / "conf" / "profile").iterdir())
    assert [p.name for p in written] == ["my_tiny_llava15.yaml"]   # out= holds the profile only
    first = sorted(r for r in runs["sharded"])[0]
    sharded = pd.read_csv(first / "discovery.csv")                # the evidence stays with the runs
    whole = pd.read_csv(runs["whole"][0] / "discovery.csv")
    assert len(sharded) == 2 * 4
    pd.testing.assert_frame_equal(sharded, whole)


# --- cancellation and requeue ------------------------------------------------------------------

# the organism on 60 samples, two shards of 30 (33 answers a sample): on an idle machine a shard
# takes about ten seconds, so a signal sent after its first sample lands long before it finishes
# (with 6 a shard, the tasks finished before the requeue and the cancellation reached them)
ORGANISM = "data.limit=60 engine=naive " + QUICK
N_PER_SHARD = 30 * 33


def wait_until(what: str, test, timeout: float = 300):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = test()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def n_rows(run: Path) -> int:
    try:
        return max(0, len((run / "results.jsonl").read_text().splitlines()) - 1)
    except OSError:
        return 0


def task_states(env, job: str) -> dict[str, str]:
    out = sh(env, f"squeue -h -r -j {job} -o '%i %T'", check=False).stdout.split()
    return dict(zip(out[::2], out[1::2]))


def complete_lines(run: Path) -> str:
    """The results file up to its last newline: what a resume keeps (a torn last line is dropped)."""
    text = (run / "results.jsonl").read_text()
    return text[: text.rfind("\n") + 1]


def digest(run: Path) -> str:
    return hashlib.sha256((run / "results.jsonl").read_bytes()).hexdigest()


def resumed(run: Path) -> list[int]:
    """Answers found on disk by each resumption of the run, from its sweep.log."""
    return [int(n) for n in re.findall(r"resuming, (\d+) of \d+ answers", (run / "sweep.log").read_text())]


@pytest.fixture(scope="module")
def interrupted(slurm, tmp_path_factory):
    """Shard 0's task is requeued and shard 1's cancelled, each after its first sample; the command
    is then run again. Returns what was seen along the way."""
    base = tmp_path_factory.mktemp("interrupted")
    out = base / "sweep"
    shards = [out / "organism" / "organism" / "image_text" / f"shard{i}of2" for i in range(2)]
    command = slurm_sweep(out, f"{ORGANISM} data.num_shards=2 data.shard=0,1")
    logs = [base / "first.out", base / "first.err"]
    with open(logs[0], "w") as stdout, open(logs[1], "w") as stderr:   # files: a full pipe would stall it
        first = subprocess.Popen(["bash", "-c", command], stdout=stdout, stderr=stderr, cwd=ROOT, env=with_venv(slurm))
    seen = {}
    try:
        wait_until("both shards' first sample", lambda: all(n_rows(s) >= 33 for s in shards))
        job = wait_until("the array job id", lambda: next(
            (p.name.split("_")[0] for p in (out / ".submitit").iterdir()
             if p.name.split("_")[0].isdigit()), None))   # submitit's own files (.submission_file_*) sit there too
        seen["job"] = job
        sh(slurm, f"scontrol requeue {job}_0 && scancel {job}_1")
        # killed (SIGKILL KillWait after the SIGTERM submitit ignores), before the requeued one restarts
        wait_until("the requeued task to be pending", lambda: task_states(slurm, job).get(f"{job}_0") == "PENDING", 60)
        wait_until("the cancelled task to end", lambda: f"{job}_1" not in task_states(slurm, job), 60)
        seen["kept"] = [complete_lines(s) for s in shards]
        seen["first_rc"] = first.wait(timeout=900)
        seen["first"] = [p.read_text() for p in logs]
    finally:
        if first.poll() is None:
            first.kill()
    seen["after_first"] = [digest(s) for s in shards]
    seen["sacct"] = sh(slurm, f"sacct -D -n -P -j {job} -o JobID,State").stdout
    seen["second"] = sh(slurm, command)
    seen["after_second"] = [digest(s) for s in shards]
    reference = base / "whole"
    sh(slurm, f"layerprobe-sweep run_dir={reference} {ORGANISM}")
    return shards, reference, seen


def test_requeued_task_resumes_from_its_results_file(interrupted):
    (requeued, _), _, seen = interrupted
    job = seen["job"]
    assert f"{job}_0|REQUEUED" in seen["sacct"], seen["sacct"]
    kept = seen["kept"][0]
    n_kept = kept.count("\n") - 1
    assert 33 <= n_kept < N_PER_SHARD, "the requeued task had finished: nothing was interrupted"
    final = (requeued / "results.jsonl").read_text()
    assert final.startswith(kept)                       # the rows written before the requeue are kept as they are
    keys = raw_keys(requeued)
    assert len(keys) == len(set(keys)) == N_PER_SHARD   # no (sample, condition) row twice
    assert resumed(requeued)[0] == n_kept               # the second start found them on disk
    # the first command waited for the requeued task to finish: it is not what it reports
    # (as a whole task id: job 1's stderr names 1_1/1_1_0_result.pkl, which holds "1_0" as text)
    assert not re.search(rf"(?<![\w.]){job}_0(?![\w.])", seen["first"][1]), seen["first"][1][-2000:]


def test_cancelled_task_is_finished_by_the_same_command(interrupted):
    (done, cancelled), _, seen = interrupted
    job = seen["job"]
    out, err = seen["first"]
    assert seen["first_rc"] != 0
    assert f"Job {job}_1 " in err and "state: CANCELLED" in err, err[-3000:]
    n_kept = seen["kept"][1].count("\n") - 1
    assert 33 <= n_kept < N_PER_SHARD, "the cancelled task had finished: nothing was interrupted"
    # the second command: the finished shard is read, not recomputed; the cancelled one resumes
    assert seen["after_second"][0] == seen["after_first"][0]
    assert resumed(done)[-1] == N_PER_SHARD
    assert resumed(cancelled) == [n_kept]
    keys = raw_keys(cancelled)
    assert len(keys) == len(set(keys)) == N_PER_SHARD


def test_interrupted_shards_merge_to_the_unsharded_run(interrupted):
    shards, reference, _ = interrupted
    (merged, _), (whole, _) = merge_runs(shards), merge_runs([reference])
    assert len(whole) == 2 * N_PER_SHARD
    pd.testing.assert_frame_equal(rows(merged), rows(whole))


# --- a failing task ------------------------------------------------------------------------------

def test_failed_task_reports_its_error_and_the_other_shards_are_kept(slurm, tmp_path):
    roots = tmp_path / "roots"
    roots.mkdir()
    (roots / "vqav2-0").symlink_to(FIXTURES / "vqav2" / "official")   # shard 1's data.root does not exist
    out = tmp_path / "sweep"
    proc = sh(slurm, slurm_sweep(out, f"{TINY} data=vqav2 'data.root={roots}/${{data.name}}-${{data.shard}}' "
                                      f"data.limit=5 'layers=[0,2]' {QUICK} data.num_shards=2 data.shard=0,1"),
              check=False)
    line = (f"layerprobe: error: {roots}/vqav2-1: no such folder (data.root for vqav2, expected to hold "
            "v2_OpenEnded_mscoco_val2014_questions.json)")
    # the submitting command's output: that line, once, with exit code 2 (not submitit's traceback)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.splitlines().count(line) == 1, proc.stderr[-3000:]
    logs = list((out / ".submitit").glob("*_1/*_log.err"))
    assert len(logs) == 1 and line in logs[0].read_text().splitlines()    # the task's log
    run = out / "tiny_llava15" / "vqav2" / "image_text"
    assert line.removeprefix("layerprobe: error: ") in (run / "shard1of2" / "sweep.log").read_text()
    assert len(read_results(run / "shard0of2")) == 3 * 3                # the other shard finished
    assert (run / "shard0of2" / "summary.csv").is_file()
    assert not (run / "shard1of2" / "results.jsonl").exists()
