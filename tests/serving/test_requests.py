"""Request parsing (no model): the placeholder goes where the video part stands, OpenAI fields are read or
refused by name; streamed text deltas add up to the answer ``infer`` prints."""

from __future__ import annotations

import pytest

from vidtempo.inference.streaming import IncrementalText
from vidtempo.serving.requests import RequestError, ServeLimits, parse_chat_request

VIDEO = {"type": "video_url", "video_url": {"url": "/data/v.mp4"}}


def body(**kw):
    return {"model": "m", "messages": [{"role": "user", "content": [VIDEO, {"type": "text", "text": "When?"}]}], **kw}


def test_video_part_position_and_defaults() -> None:
    req = parse_chat_request(body(), "m", ServeLimits(default_max_tokens=7))
    assert req.messages == [{"role": "user", "content": "<video>\nWhen?"}]
    assert (req.max_tokens, req.stream, req.fps, req.max_frames, req.lvcot) == (7, False, None, None, None)
    after = parse_chat_request({"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Watch:"}, VIDEO, {"type": "text", "text": "When?"}]},
    ]}, "m", ServeLimits())  # fmt: skip
    assert after.messages[1]["content"] == "Watch:\n<video>\nWhen?"
    assert after.video.param == "messages[1].content[1].video_url.url"
    req = parse_chat_request(body(stream=True, stream_options={"include_usage": True}, max_completion_tokens=5,
                                  fps=1.5, max_frames=12, temperature=0, top_p=1, n=1, seed=3), "m", ServeLimits())  # fmt: skip
    assert (req.stream, req.include_usage, req.max_tokens, req.fps, req.max_frames) == (True, True, 5, 1.5, 12)


@pytest.mark.parametrize("change,param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": [VIDEO, VIDEO]}]}, "messages[0].content[1].video_url.url"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [VIDEO, {"type": "text", "text": "<video> twice"}]}]},
     "messages[0].content[1].text"),
    ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": "v.mp4"}]}]},
     "messages[0].content[0].video_url"),
    ({"messages": [{"role": "user", "content": [VIDEO]}, {"role": "assistant", "content": "ok"}]},
     "messages[1].role"),
    ({"fps": float("nan")}, "fps"),
    ({"fps": True}, "fps"),
    ({"max_frames": 2.5}, "max_frames"),
    ({"max_tokens": 5000}, "max_tokens"),
    ({"n": 2}, "n"),
    ({"top_p": 0.9}, "top_p"),
    ({"stream": "yes"}, "stream"),
    ({"tools": []}, "tools"),
])  # fmt: skip
def test_refusals_name_the_field(change, param) -> None:
    with pytest.raises(RequestError) as err:
        parse_chat_request(body(**change), "m", ServeLimits())
    assert err.value.param == param and err.value.status == 400
    assert err.value.body()["error"]["param"] == param and str(err.value).startswith(f"{param}: ")


def test_unknown_model_is_404() -> None:
    with pytest.raises(RequestError) as err:
        parse_chat_request(body(model="other"), "m", ServeLimits())
    assert (err.value.status, err.value.param, err.value.code) == (404, "model", "model_not_found")


@pytest.mark.parametrize("text", [" 1.5 - 3.0 seconds ", "Zürich ☕ 東京 — ünïcode, then  spaces  ", "\n\nok\n"])
def test_incremental_text_adds_up_to_the_stripped_answer(text, tokenizer) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    stream = IncrementalText(tokenizer)
    deltas = [stream.add(i) for i in ids] + [stream.finish()]
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert not any("\ufffd" in d for d in deltas)
    assert sum(1 for d in deltas if d) > 1  # it did stream
