"""Recipes: _base_, overrides, interpolation, validation errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidtempo.config import RecipeError, instantiate, load_recipe
from vidtempo.config.load import resolve_recipe, to_yaml
from vidtempo.config.validate import validate_node


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    (tmp_path / "base.yaml").write_text("trainer: {max_steps: 10, precision: 32-true}\noptim: {lr: 0.1}\n")
    path = tmp_path / "r.yaml"
    path.write_text(
        "_base_: base.yaml\nname: demo\noutput_dir: runs/${name}\noptim: {lr: 0.2, weight_decay: 0.0}\n"
        "model:\n  compressor: {_target_: pool, in_dim: 8}\n"
    )
    return path


def test_base_merge_and_interpolation(recipe: Path):
    cfg = resolve_recipe(load_recipe(recipe))
    assert cfg.trainer.max_steps == 10 and cfg.optim.lr == 0.2 and cfg.output_dir == "runs/demo"


def test_overrides_set_add_delete_and_shorthand(recipe: Path):
    cfg = load_recipe(recipe, ["optim.lr=0.5", "+optim.betas=[0.9, 0.95]", "~trainer.precision",
                               "model.compressor=tdc"])
    assert cfg.optim.lr == 0.5 and list(cfg.optim.betas) == [0.9, 0.95]
    assert "precision" not in cfg.trainer
    assert cfg.model.compressor._target_ == "tdc" and cfg.model.compressor.in_dim == 8
    assert "lr: 0.5" in to_yaml(cfg)


def test_misspelled_override_names_key_file_and_suggestion(recipe: Path):
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, ["optim.lrr=0.5"])
    msg = str(info.value)
    assert str(recipe) in msg and "optim.lrr" in msg and "Did you mean: lr" in msg


def test_base_chain_merges_in_order(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("x: 1\ny: 1\nz: 1\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\ny: 2\nz: 2\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("_base_: ../b.yaml\nz: 3\n")  # paths relative to each file
    cfg = load_recipe(tmp_path / "sub" / "c.yaml")
    assert (cfg.x, cfg.y, cfg.z) == (1, 2, 3) and "_base_" not in cfg


def test_base_chain_that_loops_is_refused_with_the_loop(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\nx: 1\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\ny: 2\n")
    with pytest.raises(RecipeError, match=r"loops back to .*a\.yaml"):
        load_recipe(tmp_path / "a.yaml")


def test_missing_recipe_file_is_named(tmp_path: Path):
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_instantiate_alias_dotted_path_and_partial():
    comp = instantiate({"_target_": "pool", "in_dim": 8, "stride": 1}, key="compressor")
    assert type(comp).__name__ == "SpatialPoolCompressor" and comp.stride == 1
    part = instantiate({"_target_": "vidtempo.models.projectors.MLPProjector", "_partial_": True, "in_dim": 4})
    assert part(out_dim=6).out_dim == 6


def test_validate_unknown_argument_lists_valid_ones():
    with pytest.raises(RecipeError) as info:
        validate_node({"_target_": "pool", "in_dim": 8, "strid": 2}, key="model.compressor", recipe="r.yaml")
    msg = str(info.value)
    assert "model.compressor.strid" in msg and "stride" in msg and "r.yaml" in msg


def test_validate_wrong_type_names_expected_type():
    with pytest.raises(RecipeError, match=r"model.compressor.stride.*expected int"):
        validate_node({"_target_": "pool", "in_dim": 8, "stride": "two"}, key="model.compressor")


def test_validate_unknown_alias_lists_choices():
    with pytest.raises(RecipeError) as info:
        validate_node({"_target_": "qformerx"}, key="model.compressor", recipe="r.yaml")
    assert "Valid compressor aliases: pool, t_fuseformer, tdc" in str(info.value)
    assert "model.compressor._target_" in str(info.value)


def test_child_node_with_new_target_replaces_the_base_node(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("data: {train: {_target_: synth, root: x, split: train}, batch_size: 2}\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\ndata: {train: {_target_: conversation, path: y}}\n")
    cfg = load_recipe(tmp_path / "child.yaml")
    assert dict(cfg.data.train) == {"_target_": "conversation", "path": "y"} and cfg.data.batch_size == 2
