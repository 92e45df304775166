"""benchmarks/damo_ablation.py: each variant recipe is the tiny DaMO recipe's stages 2-4 with exactly one change,
and every variant recipe validates."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import damo_ablation  # noqa: E402


def _flat(node, prefix=""):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    if isinstance(node, list):
        out = {}
        for i, v in enumerate(node):
            out.update(_flat(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: node}


def _recipe(name, tmp_path, **kw):
    return damo_ablation.variant_recipe(name, kw.get("steps"), tmp_path / name, tmp_path / "clips",
                                        kw.get("stage1"), kw.get("align_steps"))  # fmt: skip


def test_each_variant_changes_exactly_its_switch(tmp_path):
    base = _recipe("base", tmp_path, steps=(3, 4, 5))
    assert [s["name"] for s in base["stages"]] == ["bridge", "temporal", "dialogue"]
    assert [s["trainer"]["max_steps"] for s in base["stages"]] == [3, 4, 5]
    assert base["trainer"]["devices"] == 1 and base["data"]["collator"]["clip_store"] == str(tmp_path / "clips")
    flat_base = _flat({k: v for k, v in base.items() if k not in ("name", "output_dir")})
    expected = {
        "no_time": {"model.compressor.time_embedding"},
        "no_global": {"model.compressor.global_residual"},
        "no_window": {"model.compressor.time_window"},
        "alpha0": {"model.audio_encoder", "model.compressor.audio_dim", "model.trainable.audio_encoder",
                   "data.collator.audio", "data.collator.audio_mel", "stages.1.trainable.audio_encoder"},
        "stage1": {"init_from"},
    }
    for name, keys in expected.items():
        cfg = _recipe(name, tmp_path, steps=(3, 4, 5), stage1=str(tmp_path / "aligned"))
        flat = _flat({k: v for k, v in cfg.items() if k not in ("name", "output_dir")})
        changed = {k for k in flat_base.keys() | flat.keys() if flat_base.get(k, "?") != flat.get(k, "?")}
        changed = {k for k in changed if not k.startswith("model.audio_encoder.")}  # the node became null
        assert changed == keys, name
    no_aux = _recipe("no_aux", tmp_path)
    assert [set(s["objective"]["aux"]) for s in base["stages"]] == [{"encoder_tag", "saliency", "tag"}] * 3
    assert not any("aux" in s["objective"] for s in no_aux["stages"]) and "targets" not in no_aux["data"]["collator"]
    trained = _recipe("stage1", tmp_path, align_steps=7)
    assert [s["name"] for s in trained["stages"]] == ["align", "bridge", "temporal", "dialogue"]
    assert trained["stages"][0]["trainer"]["max_steps"] == 7 and "init_from" not in trained
    with pytest.raises(SystemExit, match="unknown variant"):
        _recipe("nope", tmp_path)


@pytest.mark.parametrize("name", sorted(damo_ablation.VARIANTS))
def test_every_variant_recipe_validates(name, tmp_path, capsys):
    from vidtempo.cli.main import main

    cfg = _recipe(name, tmp_path, steps=(1, 1, 1), align_steps=1)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_recipe_overrides_apply_to_every_variant(tmp_path):
    """``key=value`` overrides change the recipe before the variant does: here the modality queries are anchored
    in both variants, and alpha0 still removes the audio stream."""
    over = ("+model.compressor.anchored_queries=true", "seed=3")
    for name in ("base", "alpha0"):
        cfg = damo_ablation.variant_recipe(name, None, tmp_path / name, tmp_path / "clips", None, None,
                                           overrides=over)  # fmt: skip
        assert cfg["model"]["compressor"]["anchored_queries"] is True and cfg["seed"] == 3
    assert cfg["model"]["audio_encoder"] is None


def test_overrides_may_follow_or_sit_between_the_flags():
    args = damo_ablation.parse(["--data", "d", "seed=1", "--variants", "alpha0", "base", "--jobs", "2",
                                "trainer.log_every_n_steps=5"])  # fmt: skip
    assert args.overrides == ["seed=1", "trainer.log_every_n_steps=5"]
    assert args.variants == ["alpha0", "base"] and args.jobs == 2
