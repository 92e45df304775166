"""``vidtempo eval RECIPE --checkpoint DIR --benchmark NAME``: evaluate a checkpoint on one benchmark.

Writes ``report.json`` and ``generations.jsonl`` into ``--out`` (resumable) and prints the results table.
See ``docs/evaluation.md``.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="vidtempo eval")
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["r.yaml", "--checkpoint", "ckpt", "--benchmark", "synth", "--limit", "5"])
    >>> args.benchmark, args.limit, args.overrides
    ('synth', 5, [])
"""

from __future__ import annotations

import argparse
import sys

BENCHMARK_NAMES = (
    "charades_sta",
    "activitynet_grounding",
    "msrvtt_retrieval",
    "msvd_retrieval",
    "synth_retrieval",
    "videomme",
    "mvbench",
    "egoschema",
    "synth",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``vidtempo eval``."""
    parser.add_argument("recipe", help="recipe YAML (data.collator decides frame sampling; eval: the rest)")
    parser.add_argument(
        "overrides", nargs="*", help="key=value, +key=value or ~key (e.g. +eval.batch_size=4)"
    )
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint directory: a stage's final/ (e.g. runs/NAME/0_sft/final)")
    parser.add_argument("--benchmark", required=True, choices=BENCHMARK_NAMES, help="benchmark to run")
    parser.add_argument("--annotations", help="annotation file (synth: the TempoSynth folder)")
    parser.add_argument("--video-root", help="folder the annotation's video names are relative to")
    parser.add_argument("--limit", type=int, help="evaluate the first N items (synth: of each task)")
    parser.add_argument("--out", help="output folder (default: OUTPUT_DIR/eval/BENCHMARK)")
    parser.add_argument("--batch-size", type=int, help="items per generate() call (eval.batch_size)")
    parser.add_argument("--num-workers", type=int, help="DataLoader decoding workers (eval.num_workers)")
    parser.add_argument("--processes", type=int,
                        help="CPU processes sharing the batches, one thread each; same rows (eval.processes)")
    parser.add_argument("--max-new-tokens", type=int, help="generation length (eval.max_new_tokens)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (eval.device)")
    parser.add_argument("--mcq-scoring", choices=("generate", "likelihood"),
                        help="multiple choice: generate and parse, or pick the most likely option (eval.mcq_scoring)")
    parser.add_argument("--mcq-answer", choices=("letter", "text"),
                        help="what likelihood scores per option: its letter or its text (eval.mcq_answer)")
    parser.add_argument("--fresh", action="store_true", help="discard earlier generations in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _settings_overrides(args: argparse.Namespace) -> dict[str, object]:
    pairs = {
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "processes": args.processes,
        "max_new_tokens": args.max_new_tokens,
        "device": args.device,
        "mcq_scoring": args.mcq_scoring,
        "mcq_answer": args.mcq_answer,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    """Run the evaluation, print the tables and where the files are; 2 on a user error."""
    from rich.console import Console

    from vidtempo.cli.checkpoint_files import check_checkpoint
    from vidtempo.data.errors import DataError
    from vidtempo.eval.results import results_tables
    from vidtempo.eval.runner import EvalError, run_eval

    check_checkpoint(args.checkpoint)
    try:
        result = run_eval(args.recipe, args.checkpoint, args.benchmark, overrides=args.overrides,
                          annotations=args.annotations, video_root=args.video_root, limit=args.limit,
                          out_dir=args.out, settings_overrides=_settings_overrides(args), fresh=args.fresh,
                          progress=not args.no_progress)  # fmt: skip
    except (EvalError, DataError) as err:
        print(f"vidtempo eval: error: {err}", file=sys.stderr)
        return 2
    console = Console()
    for table in results_tables(result.report):
        console.print(table)
    counts = result.report["counts"]
    console.print(
        f"{counts['generated_this_run']} generated, {counts['resumed']} resumed, "
        f"{counts['skipped']} skipped (see report.json)"
    )
    console.print(
        f"report: {result.out_dir / 'report.json'}\ngenerations: {result.out_dir / 'generations.jsonl'}"
    )
    return 0
