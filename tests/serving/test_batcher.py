"""The batcher on a real tiny checkpoint, without HTTP: batched answers equal one-by-one answers, a video that
fails in the worker and an over-long prompt fail alone (the rest of their batch is answered), and LVCoT on a
TDC checkpoint through the HTTP app equals ``vidtempo infer --lvcot-segments``."""

from __future__ import annotations

import contextlib
import io
import threading

import pytest
import yaml

from vidtempo.data.samples import ConversationSample


@pytest.fixture(scope="module")
def pool(tmp_path_factory, helpers):
    from vidtempo.data.testing import make_corrupt_video, make_test_video
    from vidtempo.inference.answer import load_answerer

    root = tmp_path_factory.mktemp("batcher")
    cfg = helpers.recipe_dict("pool")
    helpers.save_checkpoint(cfg, root / "ckpt")
    videos = [make_test_video(root / f"v{k}.mp4", duration=2.0 + k, fps=8, size=(64, 48), audio=False)
              for k in range(3)]  # fmt: skip
    broken = make_corrupt_video(root / "broken.mkv", kind="truncated_stream")
    return load_answerer(str(root / "ckpt"), {**cfg["data"]["collator"], "generation": True}), videos, broken


def run_jobs(batcher, jobs_args):
    """Submit jobs together; returns each job's events once all are done."""
    from vidtempo.serving.batcher import Job

    events = [[] for _ in jobs_args]
    finished = [threading.Event() for _ in jobs_args]

    def sink(k):
        def emit(event):
            events[k].append(event)
            if event[0] in ("done", "error"):
                finished[k].set()

        return emit

    for k, (sample, settings, max_tokens) in enumerate(jobs_args):
        batcher.submit(Job(sample, settings, max_tokens, emit=sink(k), param=f"video{k}"))
    for f in finished:
        assert f.wait(120)
    return events


def sample(video, text):
    return ConversationSample(video=str(video), messages=[{"role": "user", "content": text}])


def test_batched_answers_equal_single_answers_and_failures_stay_alone(pool) -> None:
    from vidtempo.serving.batcher import Batcher

    answerer, videos, broken = pool
    questions = ["When is the beep?", "What color is the background at the start of the video?", "Why?"]
    single = [answerer.answer([sample(v, q)], 6)[0].text for v, q in zip(videos, questions)]
    batcher = Batcher(answerer, max_batch=8, max_wait_s=0.5).start()
    try:
        # different prompt lengths and limits in one batch (left padding); one video only the worker finds broken
        jobs = [(sample(v, q), answerer.settings, 6) for v, q in zip(videos, questions)]
        jobs.append((sample(broken, "When?"), answerer.settings, 6))
        events = run_jobs(batcher, jobs)
        assert batcher.stats["largest_batch"] == 4 and batcher.stats["batches"] == 1
        assert [e[-1][1].text for e in events[:3]] == single
        assert [e[0][0] for e in events] == ["start", "start", "start", "error"]
        error = events[3][0][1]
        assert (error.status, error.param) == (400, "video3") and "cannot decode" in error.message
        # an over-long prompt in a batch: retried alone, the others still answer
        budget = {**answerer.settings, "max_length": 60, "video_tokens": 32, "overlong": "error"}
        long_text = "When is the beep? " * 40
        events = run_jobs(batcher, [(sample(videos[0], questions[0]), budget, 6),
                                    (sample(videos[1], long_text), budget, 6)])  # fmt: skip
        assert events[0][-1][0] == "done" and events[0][-1][1].text == single[0]
        (kind, error), = events[1]
        assert (kind, error.status, error.param, error.code) == ("error", 400, "messages", "context_length_exceeded")
        assert batcher.alive
    finally:
        batcher.close()


def test_lvcot_for_tdc_through_the_app_equals_infer(helpers, tmp_path) -> None:
    from openai import OpenAI

    from vidtempo.cli.main import build_parser, main, parse
    from vidtempo.cli.serve import build_service
    from vidtempo.data.testing import make_test_video

    cfg = helpers.recipe_dict("tdc")
    recipe = tmp_path / "tdc.yaml"
    recipe.write_text(yaml.safe_dump({"name": "tdc", "tokenizer": cfg["tokenizer"], "model": cfg["model"],
                                      "data": {"collator": cfg["data"]["collator"]}}))  # fmt: skip
    ckpt = helpers.save_checkpoint(cfg, tmp_path / "ckpt")
    video = make_test_video(tmp_path / "v.mp4", duration=6.0, fps=4, size=(64, 48), cuts=(3.0,), audio=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["infer", str(recipe), "--checkpoint", str(ckpt), "--video", str(video), "--prompt", "What?",
                     "--max-new-tokens", "4", "--lvcot-segments", "2", "--lvcot-max-new-tokens", "3"]) == 0  # fmt: skip
    service = build_service(parse(build_parser(), ["serve", str(recipe), "--checkpoint", str(ckpt)]))
    assert service.supports_lvcot()
    with helpers.serving(service) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        ask = {"model": "tdc", "max_tokens": 4, "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": str(video)}}, {"type": "text", "text": "What?"}]}]}  # fmt: skip
        reply = client.chat.completions.create(**ask, extra_body={"lvcot": {"segments": 2, "max_new_tokens": 3}})
        stream = client.chat.completions.create(**ask, stream=True, extra_body={"lvcot": {"segments": 2,
                                                                                           "max_new_tokens": 3}})  # fmt: skip
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        trace = reply.model_extra["vidtempo"]["lvcot"]
        import openai

        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(**ask, extra_body={"lvcot": {"rule": "nope"}})
    assert reply.choices[0].message.content == streamed == out.getvalue().strip()
    assert [round(s[0], 1) for s in trace["segments"]] == [0.0, 3.0] and len(trace["summaries"]) == 2
    assert err.value.body["param"] == "lvcot" and "unknown preset 'nope'" in err.value.body["message"]
