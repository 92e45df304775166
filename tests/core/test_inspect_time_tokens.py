"""``vidtempo inspect`` counts the embedding and LM-head rows that ``tokenizer.time_tokens`` adds to the LLM: its
parameter table equals the counts of the model ``vidtempo train`` builds for the same recipe."""

from __future__ import annotations

from pathlib import Path

from vidtempo.cli.inspect import inspect_recipe
from vidtempo.config.load import load_recipe
from vidtempo.models.build import build_video_llm
from vidtempo.models.interfaces import TrainableParts
from vidtempo.training.build import build_tokenizer, expand_stages, model_node_for
from vidtempo.training.run import prepare

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "sft_pool.yaml"
BINS = 100


def test_inspect_counts_the_time_token_rows_as_train_builds_them():
    plain_report = inspect_recipe(load_recipe(RECIPE))
    cfg = load_recipe(RECIPE, [f"+tokenizer.time_tokens={BINS}"])
    report = inspect_recipe(cfg)
    plain, recipe = prepare(cfg)  # the model as `vidtempo train` builds it (run.train)
    node = model_node_for(plain["model"], build_tokenizer(plain, recipe), recipe)
    model = build_video_llm(node, recipe=recipe)
    stage = expand_stages(plain)[0]
    model.set_trainable(TrainableParts(**stage["trainable"]))
    assert report["stages"][stage["name"]] == model.parameter_counts()
    hidden = model.hidden_size
    tied = model.llm.model.get_output_embeddings() is None or (
        model.llm.model.get_output_embeddings().weight is model.llm.model.get_input_embeddings().weight
    )
    rows = BINS * hidden * (1 if tied else 2)  # embedding rows (+ LM-head rows when untied)
    before, after = plain_report["stages"][stage["name"]]["llm"], report["stages"][stage["name"]]["llm"]
    assert after[0] - before[0] == rows and after[1] - before[1] == rows  # the LLM trains: the rows train too
