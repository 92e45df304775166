"""``vidtempo.training.launch``: which runs start their ranks at the beginning of ``vidtempo train``, and the
watcher that stops a run whose rank failed. (Two-process trainings through this path, compared with one
process: tests/core/test_distributed.py.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vidtempo.training.launch import LocalRanks, is_first_process, launch_local_ranks, launch_size

CPU2 = {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}


@pytest.mark.parametrize(("trainer", "stages", "expected"), [
    (CPU2, None, 2),
    ({**CPU2, "strategy": "fsdp", "devices": 3}, None, 3),
    ({**CPU2, "num_nodes": 1}, [{"name": "a"}, {"name": "b", "trainer": {"max_steps": 3}}], 2),
    ({**CPU2, "accelerator": "gpu"}, None, 0),          # GPU runs keep Lightning's launcher
    ({**CPU2, "accelerator": "auto"}, None, 0),
    ({**CPU2, "devices": 1}, None, 0),
    ({**CPU2, "devices": "2"}, None, 0),                # Lightning's other spellings: its launcher
    ({**CPU2, "devices": True}, None, 0),
    ({**CPU2, "num_nodes": 2}, None, 0),
    ({**CPU2, "strategy": "auto"}, None, 0),
    ({**CPU2, "strategy": "ddp_spawn"}, None, 0),
    (CPU2, [{"name": "a"}, {"name": "b", "trainer": {"devices": 1}}], 0),   # a stage changes the layout
])  # fmt: skip
def test_launch_size(trainer, stages, expected):
    assert launch_size({"trainer": trainer, "stages": stages}) == expected


def test_nothing_starts_under_another_launcher(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launch_local_ranks(2, [sys.executable, "-c", "raise SystemExit(5)"]) is None
    assert not is_first_process()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")
    assert not is_first_process()


def test_ranks_started_here_get_the_rendezvous_and_their_rank(monkeypatch, tmp_path):
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR"):
        monkeypatch.setenv(key, "")  # recorded, so the values the launch sets are undone after the test
        monkeypatch.delenv(key)
    out = tmp_path / "env"
    probe = (f"import os; open(r'{out}' + os.environ['LOCAL_RANK'], 'w').write("
             "' '.join(os.environ[k] for k in ('LOCAL_RANK', 'NODE_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')))")
    ranks = launch_local_ranks(3, [sys.executable, "-c", probe])
    assert ranks is not None and ranks.wait() == 0
    import os

    port = os.environ["MASTER_PORT"]
    assert (os.environ["LOCAL_RANK"], os.environ["WORLD_SIZE"]) == ("0", "3") and is_first_process()
    assert [(tmp_path / f"env{k}").read_text() for k in (1, 2)] == [f"{k} 0 3 127.0.0.1 {port}" for k in (1, 2)]


def test_a_failed_rank_stops_the_run():
    """Rank 1 exits with 3 while rank 0 would wait forever (as in a collective): the watcher kills rank 2 and
    rank 0 within a second or two and says which rank failed."""
    script = textwrap.dedent("""
        import subprocess, sys, time
        from vidtempo.training.launch import LocalRanks
        ranks = LocalRanks([subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5); raise SystemExit(3)"]),
                            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])])
        print(ranks.procs[1].pid, flush=True)
        time.sleep(120)
    """)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 30
    assert proc.returncode == -9
    assert "rank 1 exited with code 3: stopping the other ranks" in proc.stderr
    stat = Path(f"/proc/{int(proc.stdout.split()[0])}/stat")
    time.sleep(0.2)
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # rank 2 is gone


def test_an_interrupted_rank_leaves_rank_0_time_to_save():
    """A rank that exits with 130 (Ctrl-C) is not a failure: rank 0 finishes and reads its code."""
    ranks = LocalRanks([subprocess.Popen([sys.executable, "-c", "raise SystemExit(130)"])])
    time.sleep(1.5)  # the watcher has seen the exit by now, and kept rank 0 (this test) alive
    assert ranks.wait() == 130


def test_wait_kills_ranks_left_after_the_timeout():
    ranks = LocalRanks([subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])])
    start = time.monotonic()
    assert ranks.wait(timeout=0.5) == -9
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("argv", [
    ["train", "recipes/tiny/synth_all.yaml", "seed=3"],
    ["-v", "--debug", "train", "recipes/tiny/synth_all.yaml", "seed=3", "--allow-changed-recipe"],
    ["--debug", "train", "recipes/tiny/synth_all.yaml"],
])  # fmt: skip
def test_a_started_rank_runs_the_same_command_with_its_global_flags(argv):
    """The command a started rank runs parses to the same arguments as the user's, ``-v`` / ``--debug`` included
    (a rank's error then has its traceback too)."""
    from vidtempo.cli.main import build_parser, parse
    from vidtempo.cli.train import rank_command

    parser = build_parser()
    args = parse(parser, argv)
    command = rank_command(args, "train")
    assert command[:3] == [sys.executable, "-m", "vidtempo.cli.main"]
    again = parse(parser, command[3:])
    assert vars(again) == vars(args)


@pytest.mark.parametrize("argv", [
    ["dpo", "recipes/tiny/tempo_synth.yaml", "seed=3"],
    ["-v", "dpo", "--curriculum", "recipes/tiny/tempo_synth.yaml", "seed=3", "--pre-sft"],
    ["dpo", "recipes/tiny/tempo_synth.yaml", "--post-sft", "seed=3", "--allow-changed-recipe", "a.b=1"],
])  # fmt: skip
def test_a_started_dpo_rank_runs_the_same_stages(argv):
    """A rank of ``vidtempo dpo`` gets the same recipe, overrides and flags (curriculum, order) as rank 0, wherever
    the user put them, so every rank expands the same stages."""
    from vidtempo.cli.dpo import _own_flags, parse_flags
    from vidtempo.cli.main import build_parser, parse
    from vidtempo.cli.train import rank_command

    parser = build_parser()
    args = parse_flags(parse(parser, argv))
    command = rank_command(args, "dpo", _own_flags(args))
    assert command[:3] == [sys.executable, "-m", "vidtempo.cli.main"] and "dpo" in command
    again = parse_flags(parse(parser, command[3:]))
    assert vars(again) == vars(args)
