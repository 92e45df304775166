"""Fault injection: a run killed at a write point, or given a changed recipe, bad data or a foreign checkpoint,
either resumes to the result of an uninterrupted run or stops with a one-line error; no temp file is left.

Real kills run in a subprocess (tests/core/fault_driver.py: SIGKILL / SIGINT at a patched write point); the
rest patches in-process. docs/reliability.md lists every case and what vidtempo does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from vidtempo.cli.main import main
from vidtempo.config.load import load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "tiny" / "sft_pool.yaml"
DRIVER = Path(__file__).resolve().parent / "fault_driver.py"


def recipe_dict(video_dir: Path, out: Path, steps: int = 4) -> dict:
    cfg = load_recipe(RECIPE, [f"output_dir={out}", "~data.val", "trainer.val_check_interval=null",
                               "trainer.log_every_n_steps=1", "data.batch_size=2", f"trainer.max_steps={steps}",
                               "checkpoint.every_n_steps=2"])  # fmt: skip
    cfg.data.train = {"_target_": "conversation", "path": str(video_dir / "train.jsonl"), "video_root": str(video_dir)}
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("_recipe_path_", None)
    # an auxiliary head too, so that a resumed run must also reproduce the heads saved beside the model
    plain["data"]["collator"]["targets"] = {"frame_tags": {"_target_": "event_tags", "labels": ["beep"]}}
    plain["objective"]["aux"] = {"encoder_tag": {"_target_": "encoder_tags", "weight": 0.5}}
    return plain


def write_recipe(plain: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(plain), path)
    return path


def run_killed(case: str, plain: dict, tmp: Path) -> subprocess.CompletedProcess:
    spec = tmp / f"{case}.json"
    spec.write_text(json.dumps(plain))
    env = {**os.environ, "TMPDIR": str(tmp / "tmpdir"), "PYTHONPATH": str(ROOT)}
    (tmp / "tmpdir").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, str(DRIVER), case, str(spec)], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def weights(final: Path) -> dict[str, torch.Tensor]:
    """The model's tensors and the auxiliary heads' (``aux_heads.safetensors``) of a final/ directory."""
    heads = final / "aux_heads.safetensors"
    extra = {f"aux/{k}": v for k, v in load_file(str(heads)).items()} if heads.is_file() else {}
    return {**load_file(str(final / "model.safetensors")), **extra}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def temps(*dirs: Path) -> list[Path]:
    return [p for d in dirs if d.is_dir() for p in d.rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def reference_run(video_dir, tmp_path_factory) -> Path:
    """An uninterrupted 4-step run (its stage folder)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", str(write_recipe(recipe_dict(video_dir, out), out.parent / "r.yaml"))]) == 0
    return out / "0_sft"


@pytest.fixture(scope="module")
def reference(reference_run) -> dict[str, torch.Tensor]:
    """The weights of the uninterrupted run."""
    return weights(reference_run / "final")


def losses(stage: Path) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r["train/loss"])) for r in csv_rows(stage) if r.get("train/loss")]


def test_killed_while_final_is_written_the_rerun_finishes_it(video_dir, tmp_path, reference):
    out = tmp_path / "run"
    plain = recipe_dict(video_dir, out)
    done = run_killed("final_mid", plain, tmp_path)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    final = out / "0_sft" / "final"
    assert not final.exists()  # the half-written checkpoint never carries the final name
    assert main(["train", str(write_recipe(plain, tmp_path / "again.yaml"))]) == 0
    assert (final / "COMPLETE").is_file() and (final / "recipe.yaml").is_file() and (final / "tokenizer.json").is_file()
    assert any(k.startswith("aux/encoder_tag.") for k in reference)
    assert same(weights(final), reference)  # the model and its heads
    assert temps(out, tmp_path / "tmpdir") == []


def test_killed_while_the_first_last_ckpt_is_written_resumes_from_the_step_checkpoint(video_dir, tmp_path, reference,
                                                                                       reference_run):
    out = tmp_path / "run"
    plain = recipe_dict(video_dir, out)
    done = run_killed("first_last", plain, tmp_path)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    ckpts = out / "0_sft" / "checkpoints"
    assert (ckpts / "epoch=0-step=2.ckpt").is_file() and not (ckpts / "last.ckpt").exists()
    assert temps(ckpts)  # the interrupted save left its half file (a crash runs no cleanup)
    assert main(["train", str(write_recipe(plain, tmp_path / "again.yaml"))]) == 0
    assert losses(out / "0_sft") == losses(reference_run)  # resumed at step 2 with every row of steps 0-3
    assert same(weights(out / "0_sft" / "final"), reference)
    assert temps(out, tmp_path / "tmpdir") == []  # the leftover was removed; nothing went to $TMPDIR


def test_a_truncated_last_ckpt_is_skipped_for_an_intact_step_checkpoint(video_dir, tmp_path, reference):
    import shutil

    out = tmp_path / "run"
    plain = recipe_dict(video_dir, out)
    recipe = write_recipe(plain, tmp_path / "r.yaml")
    assert main(["train", str(recipe), "trainer.max_steps=3", "--allow-changed-recipe"]) == 0
    shutil.rmtree(out / "0_sft" / "final")
    last = out / "0_sft" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])  # what a cross-filesystem move can leave
    assert main(["train", str(recipe), "--allow-changed-recipe"]) == 0  # max_steps 3 -> 4: said explicitly
    assert same(weights(out / "0_sft" / "final"), reference)


def test_ctrl_c_saves_a_checkpoint_says_how_to_resume_and_the_rerun_matches(video_dir, tmp_path, reference,
                                                                             reference_run):
    out = tmp_path / "run"
    plain = recipe_dict(video_dir, out)
    done = run_killed("sigint_step2", plain, tmp_path)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "Re-run the same command to resume" in done.stderr and "interrupted at step" in done.stderr
    state = torch.load(out / "0_sft" / "checkpoints" / "last.ckpt", weights_only=True)
    assert 2 <= state["global_step"] < 4 and not (out / "0_sft" / "final").exists()
    assert main(["train", str(write_recipe(plain, tmp_path / "again.yaml"))]) == 0
    assert same(weights(out / "0_sft" / "final"), reference)
    assert losses(out / "0_sft") == losses(reference_run)


def csv_rows(stage: Path) -> list[dict[str, str]]:
    import csv

    return list(csv.DictReader((stage / "logs" / "metrics.csv").open()))


def test_metrics_survive_a_second_interruption_before_the_resumed_logger_saves(tmp_path):
    from vidtempo.training.csv_log import ResumableCSVLogger

    first = ResumableCSVLogger(tmp_path, name="logs", version="")
    for step in range(3):
        first.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    first.save()
    before = (tmp_path / "logs" / "metrics.csv").read_text()
    resumed = ResumableCSVLogger(tmp_path, name="logs", version="")
    assert resumed.experiment is not None  # the resumed writer started; then the run is killed before any save
    assert (tmp_path / "logs" / "metrics.csv").read_text() == before


def test_a_finished_run_rerun_with_a_changed_recipe_is_refused_and_keeps_its_recipe(video_dir, tmp_path, capsys):
    out = tmp_path / "run"
    recipe = write_recipe(recipe_dict(video_dir, out, steps=2), tmp_path / "r.yaml")
    assert main(["train", str(recipe)]) == 0
    saved = (out / "recipe.yaml").read_text()
    capsys.readouterr()
    assert main(["train", str(recipe), "optim.lr=0.5", "trainer.max_steps=50"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr: 0.001 -> 0.5" in err and "trainer.max_steps: 2 -> 50" in err and "--allow-changed-recipe" in err
    assert err.startswith("error: ") and "\n" not in err.split("(run with --debug")[0].strip()  # one line
    assert (out / "recipe.yaml").read_text() == saved  # the run's recorded recipe is not rewritten
    assert main(["train", str(recipe), "data.batch_size=1", "--allow-changed-recipe"]) == 0
    assert json.loads((out / "manifest.json").read_text())["changes"][-1] == ["stage sft: data.batch_size: 2 -> 1"]


def test_a_short_run_whose_every_sample_is_skipped_fails_without_a_final(video_dir, tmp_path):
    from vidtempo.training.run import train
    from vidtempo.training.skips import TooManySkippedError

    plain = recipe_dict(video_dir, tmp_path / "run", steps=2)
    plain["data"]["train"]["video_root"] = str(tmp_path / "nowhere")
    with pytest.raises(TooManySkippedError, match=r"were skipped.*nothing was saved as final/"):
        train(OmegaConf.create(plain))
    assert not (tmp_path / "run" / "0_sft" / "final").exists()


def test_an_interrupted_later_stage_restarts_with_the_seed_an_uninterrupted_run_used(video_dir, tmp_path):
    """Stage 1 creates a fresh LoRA adapter: its initial values come from the stage's own seed, so a rerun after
    stage 0 finished gives the weights of an uninterrupted run (they differed by up to 0.25 before)."""
    import shutil

    from vidtempo.training.run import train

    def staged(out: Path):
        plain = recipe_dict(video_dir, out, steps=2)
        plain["model"]["trainable"] = {"vision_encoder": False, "compressor": True, "projector": True, "llm": False}
        plain["stages"] = [{"name": "a"}, {"name": "b", "trainable": {"llm": "lora"}, "lora": {"r": 4, "alpha": 8}}]
        return OmegaConf.create(plain)

    full = train(staged(tmp_path / "full"))
    train(staged(tmp_path / "cut"))
    shutil.rmtree(tmp_path / "cut" / "1_b")
    torch.manual_seed(123)  # whatever happened in the process before the rerun
    again = train(staged(tmp_path / "cut"))
    assert same(weights(again), weights(full))


def test_a_checkpoint_naming_foreign_code_is_refused_unless_trusted(tmp_path, monkeypatch):
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import UntrustedCheckpointError, load_pretrained, save_pretrained

    node = {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
            "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}}  # fmt: skip
    save_pretrained(build_video_llm(node), tmp_path, model_config=node)
    config = json.loads((tmp_path / "vidtempo.json").read_text())
    marker = tmp_path / "ran"
    config["model"]["compressor"] = {"_target_": "subprocess.getoutput", "cmd": f"touch {marker}"}
    (tmp_path / "vidtempo.json").write_text(json.dumps(config))
    with pytest.raises(UntrustedCheckpointError, match=r"model.compressor._target_: subprocess.getoutput.*--trust"):
        load_pretrained(tmp_path)
    assert not marker.exists()  # refused before anything was imported or called
    # a research class of one's own loads once trusted
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "training" / "plugins"))
    (tmp_path / "own").mkdir()
    own = {**node, "compressor": {"_target_": "own_parts.ScaledPool", "in_dim": 32}}
    save_pretrained(build_video_llm(own), tmp_path / "own", model_config=own)
    with pytest.raises(UntrustedCheckpointError):
        load_pretrained(tmp_path / "own")
    model, _, _ = load_pretrained(tmp_path / "own", trust_code=True)
    assert type(model.compressor).__name__ == "ScaledPool"


def test_a_damaged_checkpoint_config_is_a_one_line_error(tmp_path, capsys):
    from vidtempo.models.checkpoint import read_config

    (tmp_path / "vidtempo.json").write_text("")
    with pytest.raises(ValueError, match=r"vidtempo.json is empty or not JSON.*interrupted save"):
        read_config(tmp_path)


def test_killed_synth_workers_do_not_outlive_their_parent(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "vidtempo.cli.main", "data", "synth", "--out", str(tmp_path / "s"),
                             "--num-videos", "40", "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    children: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(children) < 2:
        children |= _children(proc.pid)
        time.sleep(0.2)
    assert children, "the synth command started no worker processes"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)]


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_cli_refuses_a_foreign_checkpoint_in_one_line_and_trusts_it_on_request(tmp_path, video_dir, capsys,
                                                                                    monkeypatch):
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import save_pretrained
    from vidtempo.models.tokenizers import tiny_tokenizer

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "training" / "plugins"))
    node = {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
            "compressor": {"_target_": "own_parts.ScaledPool", "in_dim": 32}, "llm": {"_target_": "tiny"}}  # fmt: skip
    save_pretrained(build_video_llm(node), tmp_path / "ckpt", model_config=node, tokenizer=tiny_tokenizer())
    argv = ["infer", str(RECIPE), "--checkpoint", str(tmp_path / "ckpt"), "--video", str(video_dir / "v0.mp4"),
            "--prompt", "When is the beep?", "--max-new-tokens", "2"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "own_parts.ScaledPool" in err and "--trust-checkpoint-code" in err
    assert main([*argv, "--trust-checkpoint-code"]) == 0


def test_a_copied_recipe_whose_val_interval_exceeds_a_small_epoch_validates_once_per_epoch(video_dir, tmp_path,
                                                                                           caplog):
    from vidtempo.training.run import train

    plain = recipe_dict(video_dir, tmp_path / "run", steps=3)
    plain["data"]["val"] = dict(plain["data"]["train"])  # 4 samples, batch 2: 2 batches an epoch
    plain["trainer"]["val_check_interval"] = 20
    with caplog.at_level("WARNING", logger="vidtempo"):
        final = train(OmegaConf.create(plain))
    assert (final / "COMPLETE").is_file()
    assert "trainer.val_check_interval=20 is more than the 2 training batches" in caplog.text
    assert any(r.get("val/loss") for r in csv_rows(final.parent))  # it did validate


def test_metrics_csv_appends_each_save_and_drops_a_row_cut_short_by_a_crash(tmp_path):
    from vidtempo.training.csv_log import ResumableCSVLogger

    path = tmp_path / "logs" / "metrics.csv"
    logger = ResumableCSVLogger(tmp_path, name="logs", version="")
    logger.log_metrics({"train/loss": 2.0}, step=0)
    logger.save()
    inode = path.stat().st_ino
    logger.log_metrics({"train/loss": 1.5}, step=1)
    logger.save()
    assert path.stat().st_ino == inode  # appended in place, not rewritten
    logger.log_metrics({"train/loss": 1.25, "val/loss": 3.0}, step=2)
    logger.save()  # a new column: the whole file rewritten with it
    assert path.read_text().split() == ["step,train/loss,val/loss", "0,2.0,", "1,1.5,", "2,1.25,3.0"]
    with open(path, "a") as f:
        f.write("3,1.1")  # killed in the middle of an append: no newline
    resumed = ResumableCSVLogger(tmp_path, name="logs", version="")
    resumed.log_metrics({"train/loss": 1.0}, step=3)
    resumed.save()
    assert path.read_text().split() == ["step,train/loss,val/loss", "0,2.0,", "1,1.5,", "2,1.25,3.0", "3,1.0,"]
