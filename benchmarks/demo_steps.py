"""Training steps/s of the demo recipe: this tree against an older commit (default 83147d7, before issue 29),
side by side in one run.

Usage: ``python benchmarks/demo_steps.py [--steps 300] [--repeats 1] [--baseline 83147d7] [--data demo/data]
[--num-videos 1200] [--short-steps S] [--recipe R] [--override KEY=VALUE ...]``

Each case runs ``vidtempo train recipes/tiny/synth_all.yaml`` for ``--steps`` steps from scratch, in a process of
its own, on the demo's TempoSynth data (1200 videos, seed 0; rendered first when ``--data`` has none). With
``--num-videos 120 --data DIR`` a tenth of it (96 training videos): the first epoch's decoding then takes a few
seconds and nearly every step runs warm, a quick comparison on a busy machine:

- ``old``: the baseline commit, from a ``git worktree`` of it (``PYTHONPATH`` pointing to it), its recipe as it
  was (one process, batch 16, a DataLoader worker decoding);
- ``new``: this tree and its recipe (two processes, DDP over gloo, 8 samples each: the same global batch).

Both get ``trainer.max_time=null optim.anneal_by=steps`` (exactly N steps; the lr does not change the cost) and
the environment ``make demo`` has: ``OMP_NUM_THREADS`` is removed (torch picks its threads) unless
``--keep-omp``. Cases alternate (old, new, old, new, ...), so load on a shared machine hits both alike.

Reported per case (median over the repeats):

- ``cold_steps_per_s``: N / the wall time of the whole command (process start, building, first-epoch decoding,
  validation and checkpoints included): what a run of N steps costs;
- ``warm_steps_per_s``: the median over the logged windows of the run's second half of ``perf/samples_per_s``
  (the ThroughputMonitor's, first process) / the per-process batch: the rate once most clips are decoded and
  cached, which is what most of the demo's steps run at;
- with ``--short-steps S``, ``cpu_s_per_step``: the CPU seconds of every process of the run (ranks and
  DataLoader workers, read from /proc), of the N-step run minus the S-step run, over N - S. Startup, building
  and first-epoch decoding cancel. It is no speed figure on a shared machine: a process with two threads
  that wait on each other burns CPU spinning when other jobs take its cores (the old recipe measured 1.77 CPU
  s a step under load).

``--recipe R`` and ``--override KEY=VALUE`` change the new case (a candidate recipe against the baseline).

Ends with ``RESULT case=old|new|ratio ...`` lines.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "recipes/tiny/synth_all.yaml"


def ensure_data(data: Path, python: str, videos: int) -> None:
    """Render the demo's TempoSynth set (``videos`` of them) into ``data`` unless it is there."""
    if (data / "manifest.json").is_file():
        return
    cmd = [python, "-m", "vidtempo.cli.main", "data", "synth", "--out", str(data), "--num-videos", str(videos),
           "--seed", "0", "--max-duration", "20", "--workers", "0"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def ensure_worktree(commit: str, path: Path) -> Path:
    """A detached ``git worktree`` of ``commit`` at ``path`` (reused when it is already there)."""
    if not (path / "vidtempo" / "__init__.py").is_file():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], check=True, cwd=ROOT,
                       capture_output=True)  # fmt: skip
    return path


TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _own_cpu_s(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds of ``pid`` itself) from /proc, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS  # ppid, utime + stime


def run_tree_cpu(cmd: list[str], poll_s: float = 0.5, **popen: Any) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd``; its result and the CPU seconds of every process of its tree (DDP ranks and DataLoader
    workers included, which ``RUSAGE_CHILDREN`` misses when a parent does not wait for them), read from /proc
    every ``poll_s`` (a process that lives less than that may be missed)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    seen: dict[int, float] = {}
    while proc.poll() is None:
        stats = {pid: st for pid in _pids() if (st := _own_cpu_s(pid)) is not None}
        tree = {proc.pid}
        for _ in range(4):  # the command, its ranks, their workers (and one more level)
            tree |= {pid for pid, (ppid, _) in stats.items() if ppid in tree}
        seen.update({pid: stats[pid][1] for pid in tree if pid in stats})
        time.sleep(poll_s)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), sum(seen.values())


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def train(tree: Path, out: Path, data: Path, steps: int, videos: int, keep_omp: bool, recipe: str = RECIPE,
          overrides: tuple[str, ...] = ()) -> dict[str, float]:  # fmt: skip
    """Train N steps of ``tree``'s demo recipe (or ``recipe``, with ``overrides``); cold and warm steps/s and the
    CPU seconds of the whole command (every process it started)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if not keep_omp:
        env.pop("OMP_NUM_THREADS", None)
    cmd = [sys.executable, "-m", "vidtempo.cli.main", "train", recipe, f"output_dir={out}",
           f"data.train.root={data}", f"data.val.root={data}", f"data.train.num_videos={videos}",
           f"data.val.num_videos={videos}", f"trainer.max_steps={steps}",
           "trainer.max_time=null", "optim.anneal_by=steps", *overrides]  # fmt: skip
    if videos < 1200:  # an epoch shorter than the recipe's 200-step validation interval: validate every 50
        cmd.append("trainer.val_check_interval=50")
    start = time.perf_counter()
    proc, cpu = run_tree_cpu(cmd, cwd=tree, env=env)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{tree}: training failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    batch = int(yaml.safe_load((out / "recipe.yaml").read_text())["data"]["batch_size"])
    with open(out / "0_sft" / "logs" / "metrics.csv") as f:
        windows = [(int(r["step"]), float(r["perf/samples_per_s"])) for r in csv.DictReader(f)
                   if r.get("perf/samples_per_s")]  # fmt: skip
    late = [rate / batch for step, rate in windows if step >= steps // 2]
    if not late:
        raise RuntimeError(f"{out}: no perf/samples_per_s logged in the second half of the run")
    return {"wall_s": wall, "cold_steps_per_s": steps / wall, "warm_steps_per_s": statistics.median(late),
            "batch_per_process": batch, "cpu_s": cpu}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per case")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each case (alternated)")
    parser.add_argument("--baseline", default="83147d7", help="the commit to compare with")
    parser.add_argument("--data", type=Path, default=ROOT / "demo" / "data", help="the demo's TempoSynth folder")
    parser.add_argument("--num-videos", type=int, default=1200, help="TempoSynth videos in --data (the demo: 1200)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vidtempo_demo_steps")
    parser.add_argument("--keep-omp", action="store_true", help="keep OMP_NUM_THREADS for the training processes")
    parser.add_argument("--recipe", default=RECIPE, help="the new case's recipe (default: the demo's)")
    parser.add_argument("--override", action="append", default=[], help="KEY=VALUE for the new case (repeatable)")
    parser.add_argument("--short-steps", type=int, default=0,
                        help="also run each case for this many steps: the CPU seconds per step between the two "
                             "runs (startup, building and first-epoch decoding cancel), summed over every process "
                             "of the run, is reported as cpu_s_per_step")  # fmt: skip
    args = parser.parse_args()
    data = args.data.resolve()
    ensure_data(data, sys.executable, args.num_videos)
    trees = {"old": ensure_worktree(args.baseline, args.workdir / f"tree_{args.baseline}"), "new": ROOT}
    setups = {"old": (RECIPE, ()), "new": (args.recipe, tuple(args.override))}
    results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for rep in range(args.repeats):
        for case, tree in trees.items():
            r = run_case(case, rep, tree, data, args, *setups[case])
            results[case].append(r)
            print(f"{case} run {rep}: {r['wall_s']:.0f} s, cold {r['cold_steps_per_s']:.2f} steps/s, warm "
                  f"{r['warm_steps_per_s']:.2f} steps/s (batch {r['batch_per_process']} per process), "
                  f"{r['cpu_s']:.0f} CPU s" + (f", {r['cpu_s_per_step']:.3f} CPU s/step" if "cpu_s_per_step" in r
                                               else ""), flush=True)  # fmt: skip
    report(results, args)


def run_case(case: str, rep: int, tree: Path, data: Path, args: argparse.Namespace, recipe: str,
             overrides: tuple[str, ...]) -> dict[str, float]:  # fmt: skip
    """One run of a case (and its short run with ``--short-steps``: the marginal CPU seconds per step)."""
    runs = {}
    for steps in ([args.short_steps] if args.short_steps else []) + [args.steps]:
        out = args.workdir / f"run_{case}_{rep}_{steps}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        runs[steps] = train(tree, out, data, steps, args.num_videos, args.keep_omp, recipe, overrides)
    r = dict(runs[args.steps])
    if args.short_steps:
        r["cpu_s_per_step"] = (r["cpu_s"] - runs[args.short_steps]["cpu_s"]) / (args.steps - args.short_steps)
    return r


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    """The RESULT lines: each case's medians over the repeats, then new / old."""
    med = {case: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for case, rs in results.items()}
    load = os.getloadavg()[0]
    for case in ("old", "new"):
        m = med[case]
        cpu = f" cpu_s_per_step={m['cpu_s_per_step']:.4f}" if "cpu_s_per_step" in m else ""
        print(f"RESULT case={case} steps={args.steps} videos={args.num_videos} repeats={args.repeats} wall_s={m['wall_s']:.1f} "
              f"cold_steps_per_s={m['cold_steps_per_s']:.3f} warm_steps_per_s={m['warm_steps_per_s']:.3f}{cpu} "
              f"cpus={os.cpu_count()} load={load:.1f}")  # fmt: skip
    cold = med["new"]["cold_steps_per_s"] / med["old"]["cold_steps_per_s"]
    warm = med["new"]["warm_steps_per_s"] / med["old"]["warm_steps_per_s"]
    cpu = (f" cpu={med['old']['cpu_s_per_step'] / med['new']['cpu_s_per_step']:.2f}" if args.short_steps else "")
    print(f"RESULT case=ratio baseline={args.baseline} recipe={args.recipe} cold={cold:.2f} warm={warm:.2f}{cpu}")


if __name__ == "__main__":
    main()
