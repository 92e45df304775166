"""Frames, timestamps and token ids are the same in ``train``, ``eval``, ``infer`` and ``serve`` (#30 item 2).

For the model of each tiny recipe (pooling VideoLLM, TDC, native Qwen2.5-VL), one real H.264 file (7.5 fps,
5.3 s, a scene cut) and one question go through the four real entry points with the recipe's own settings:

* ``train``: the recipe's datamodule (``build_datamodule``: dataset + collator, as ``vidtempo train`` builds it);
* ``eval``: ``run_eval`` on a Charades-STA annotation naming the file;
* ``infer``: the ``vidtempo infer`` command;
* ``serve``: ``vidtempo serve``'s service on a localhost port, asked by the official ``openai`` client.

What each inference path hands to ``model.generate`` is recorded at the class; the training batch is the
teacher-forced prompt + answer, whose prompt part must be the same ids. For Qwen2.5-VL the model's own
expansion (``<|video_pad|>`` ids, ``second_per_grid_ts``, 3-D MRoPE positions) is compared too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from vidtempo.data.chat import IGNORE_INDEX

ANSWER = "1.0 - 2.5 seconds"


class Calls:
    """What reached ``generate`` (and, for Qwen2.5-VL, ``prepare_inputs``), call by call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
        self.generate: list[dict[str, Any]] = []
        self.prepared: list[dict[str, Any]] = []
        real_generate, real_prepare = cls.generate, getattr(cls, "prepare_inputs", None)

        def generate(model, input_ids, attention_mask, video=None, **kw):  # noqa: ANN001, ANN202
            keep = attention_mask[0].bool()
            mask = video.frame_mask[0]
            self.generate.append({"ids": input_ids[0][keep].tolist(), "frames": video.frames[0][mask].clone(),
                                  "timestamps": video.timestamps[0][mask].clone(), "query": video.queries[0]})  # fmt: skip
            return real_generate(model, input_ids, attention_mask, video=video, **kw)

        monkeypatch.setattr(cls, "generate", generate)
        if real_prepare is not None:

            def prepare_inputs(model, *args, **kw):  # noqa: ANN001, ANN202
                out = real_prepare(model, *args, **kw)
                self.prepared.append(expanded(out))
                return out

            monkeypatch.setattr(cls, "prepare_inputs", prepare_inputs)


def expanded(out: dict[str, Any]) -> dict[str, Any]:
    """Row 0 of Qwen2.5-VL's prepared inputs: expanded ids, MRoPE positions (3, L), seconds per grid."""
    keep = out["attention_mask"][0].bool()
    return {"ids": out["input_ids"][0][keep].tolist(), "positions": out["position_ids"][:, 0][:, keep].clone(),
            "second_per_grid_ts": out["second_per_grid_ts"].tolist(), "grid": out["video_grid_thw"].tolist()}  # fmt: skip


def write_inputs(cfg: dict[str, Any], root: Path) -> tuple[Path, Path, str]:
    """The video, a Charades-STA annotation and a one-record training JSONL asking the eval item's question;
    returns (video, annotation, prompt) and points the recipe's data and eval sections at them."""
    from vidtempo.data.testing import make_test_video
    from vidtempo.eval.benchmarks import default_prompts, get_benchmark
    from vidtempo.eval.items import BenchmarkSource

    video = make_test_video(root / "clip.mp4", duration=5.3, fps=7.5, size=(64, 48), cuts=(2.1,), audio=False)
    ann = root / "charades.txt"
    ann.write_text("clip 1.0 2.5##a red square appears.\n")
    (item,) = get_benchmark("charades_sta").load(BenchmarkSource(str(ann), str(root)), default_prompts(), None)
    record = {"id": "clip", "video": "clip.mp4",
              "conversations": [{"from": "human", "value": item.prompt}, {"from": "gpt", "value": ANSWER}]}  # fmt: skip
    (root / "train.jsonl").write_text(json.dumps(record) + "\n")
    cfg["data"].update({"train": {"_target_": "conversation", "path": str(root / "train.jsonl"),
                                  "video_root": str(root)}, "val": None, "num_workers": 0})  # fmt: skip
    cfg["eval"] = {"batch_size": 1, "num_workers": 0, "max_new_tokens": 2, "device": "cpu", "controls": []}
    for key in ("dpo", "curriculum"):
        cfg.pop(key, None)
    return video, ann, item.prompt


@pytest.mark.parametrize("kind", ["pool", "tdc", "qwen"])
def test_train_eval_infer_serve_see_the_same_frames_timestamps_and_ids(kind, helpers, tmp_path, monkeypatch) -> None:
    from openai import OpenAI

    from vidtempo.cli.main import build_parser, main, parse
    from vidtempo.cli.serve import build_service
    from vidtempo.config.instantiate import instantiate
    from vidtempo.eval.runner import run_eval
    from vidtempo.models.checkpoint import load_pretrained
    from vidtempo.training.build import build_datamodule

    cfg = helpers.recipe_dict(kind)
    video, ann, prompt = write_inputs(cfg, tmp_path)
    assert prompt.startswith("<video>\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    ckpt = helpers.save_checkpoint(cfg, tmp_path / "ckpt")
    model, tokenizer, _ = load_pretrained(ckpt)
    calls = Calls(monkeypatch, type(model))

    # train: the datamodule `vidtempo train` builds (dataset + the recipe's collator)
    tok = instantiate(cfg["tokenizer"], key="tokenizer")
    train = next(iter(build_datamodule(cfg["data"], tok, str(recipe)).train_dataloader()))
    assert not train.skipped and len(train) == 1
    # eval, infer, serve: each records one generate call
    run_eval(recipe, ckpt, "charades_sta", annotations=str(ann), video_root=str(tmp_path), out_dir=tmp_path / "eval",
             progress=False)  # fmt: skip
    assert main(["infer", str(recipe), "--checkpoint", str(ckpt), "--video", str(video), "--prompt", prompt,
                 "--max-new-tokens", "2"]) == 0  # fmt: skip
    service = build_service(parse(build_parser(), ["serve", str(recipe), "--checkpoint", str(ckpt)]))
    with helpers.serving(service) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        ask = {"model": service.model_id, "max_tokens": 2, "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": str(video)}},  # the part stands where <video> does
            {"type": "text", "text": prompt.removeprefix("<video>\n")}]}]}  # fmt: skip
        reply = client.chat.completions.create(**ask)
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**ask, stream=True)
                           if c.choices)  # fmt: skip
    assert streamed == reply.choices[0].message.content is not None
    assert len(calls.generate) == 4, [c["ids"] for c in calls.generate]
    paths = dict(zip(("eval", "infer", "serve", "serve stream"), calls.generate))

    reference = paths["eval"]
    assert len(reference["timestamps"]) >= 8 and reference["timestamps"].diff().gt(0).all()
    for name, got in paths.items():
        assert torch.equal(got["frames"], reference["frames"]), name
        assert torch.equal(got["timestamps"], reference["timestamps"]), name
        assert got["ids"] == reference["ids"], name
        assert got["query"] == reference["query"], name
    # train: the same frames and times; its ids are the prompt's, then the answer (the only labelled part)
    n_frames = int(train.frame_mask[0].sum())
    assert torch.equal(train.frames[0, :n_frames], reference["frames"])
    assert torch.equal(train.timestamps[0, :n_frames], reference["timestamps"])
    ids = train.input_ids[0][train.attention_mask[0].bool()].tolist()
    labels = train.labels[0][train.attention_mask[0].bool()].tolist()
    n = len(reference["ids"])
    assert ids[:n] == reference["ids"] and set(labels[:n]) == {IGNORE_INDEX}
    assert ANSWER in tokenizer.decode([i for i in labels[n:] if i != IGNORE_INDEX])
    assert train.queries[0] == reference["query"]

    if kind == "qwen":  # the model's own expansion: video pad ids, seconds per temporal patch, MRoPE positions
        assert len(calls.prepared) == 4
        ref = calls.prepared[0]
        times = reference["timestamps"]  # 2 frames per temporal patch: 2 x the mean spacing, in seconds
        assert ref["second_per_grid_ts"] == pytest.approx([2 * float(times[-1] - times[0]) / (len(times) - 1)])
        for got in calls.prepared[1:]:
            assert got["ids"] == ref["ids"] and got["grid"] == ref["grid"]
            assert got["second_per_grid_ts"] == ref["second_per_grid_ts"]
            assert torch.equal(got["positions"], ref["positions"])
        trained = expanded(model.prepare_inputs(train.input_ids, train.attention_mask, train.labels,
                                                train.video_inputs()))  # fmt: skip
        m = len(ref["ids"])
        assert trained["ids"][:m] == ref["ids"] and trained["grid"] == ref["grid"]
        assert trained["second_per_grid_ts"] == ref["second_per_grid_ts"]
        assert torch.equal(trained["positions"][:, :m], ref["positions"])

    if kind == "pool":  # eval.collator overrides data.collator in all three inference paths alike
        calls.generate.clear()
        override = ["+eval.collator.num_frames=5"]
        run_eval(recipe, ckpt, "charades_sta", overrides=override, annotations=str(ann), video_root=str(tmp_path),
                 out_dir=tmp_path / "eval5", progress=False)  # fmt: skip
        assert main(["infer", str(recipe), *override, "--checkpoint", str(ckpt), "--video", str(video),
                     "--prompt", prompt, "--max-new-tokens", "2"]) == 0  # fmt: skip
        service = build_service(parse(build_parser(), ["serve", str(recipe), *override, "--checkpoint", str(ckpt)]))
        with helpers.serving(service) as url:
            OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0).chat.completions.create(**ask)
        assert [len(c["timestamps"]) for c in calls.generate] == [5, 5, 5]
        for got in calls.generate[1:]:
            assert torch.equal(got["frames"], calls.generate[0]["frames"]) and got["ids"] == calls.generate[0]["ids"]
            assert torch.equal(got["timestamps"], calls.generate[0]["timestamps"])
