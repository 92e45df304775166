"""``vidtempo serve`` as a real subprocess on a free localhost port, asked by the official ``openai`` client
(#30 item 1): streamed and plain answers equal ``vidtempo infer``'s (greedy), 20 concurrent requests all
answer (batched; p50/p95 latency printed), bad requests get a 4xx JSON error naming the field and the server
keeps serving.

The checkpoint is the model of ``recipes/tiny/sft_pool.yaml`` (random weights), served with that recipe, as in
docs/serving.md.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "sft_pool.yaml"
MODEL = "sft_pool_tiny"  # the recipe's name
QUESTION = "When does the beep sound?"
MAX_TOKENS = 8


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vidtempo.cli.main", *args]


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


class Served:
    """The server process, its base URL and what ``vidtempo infer`` answered for the same video."""

    def __init__(self, proc: subprocess.Popen, url: str, infer_answer: str, video: Path, long_video: Path,
                 root: Path) -> None:  # fmt: skip
        self.proc, self.url, self.infer_answer, self.video, self.long_video, self.root = (
            proc, url, infer_answer, video, long_video, root)  # fmt: skip

    def client(self) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=60)

    def post(self, body: Any, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of a POST to /v1/chat/completions."""
        data = raw if raw is not None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/v1/chat/completions", data=data,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


def messages(url: str, question: str = QUESTION) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                         {"type": "text", "text": question}]}]  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory, helpers) -> Any:
    from vidtempo.cli.main import main
    from vidtempo.data.testing import make_test_video

    root = tmp_path_factory.mktemp("serve")
    helpers.save_checkpoint(helpers.recipe_dict("pool"), root / "ckpt")
    video = make_test_video(root / "beep.mp4", duration=3.0, fps=8, size=(64, 48), beeps=((1.2, 880.0),))
    long_video = make_test_video(root / "long.mp4", duration=12.0, fps=2, size=(64, 48), audio=False)
    (root / "notes.mp4").write_text("not a video\n")
    server = subprocess.Popen(_cli("serve", str(RECIPE), "--checkpoint", str(root / "ckpt"), "--port", "0",
                                   "--max-video-seconds", "10", "--max-frames", "16", "--max-batch", "8",
                                   "--max-wait-ms", "20"),
                              stderr=subprocess.PIPE, text=True, env=_env())  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(server.stderr), daemon=True).start()  # keep the pipe drained
    try:
        # while the server starts: `vidtempo infer` (the command's entry point, in this process) answers
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["infer", str(RECIPE), "--checkpoint", str(root / "ckpt"), "--video", str(video),
                         "--prompt", QUESTION, "--max-new-tokens", str(MAX_TOKENS)]) == 0  # fmt: skip
        deadline = time.monotonic() + 120
        while not any("vidtempo serve:" in line for line in lines):
            assert server.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        port = re.search(r"http://127\.0\.0\.1:(\d+)", "".join(lines)).group(1)
        served = Served(server, f"http://127.0.0.1:{port}", out.getvalue().strip(), video, long_video, root)
        assert served.get("/health")[1]["status"] == "ok"
        yield served
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    assert not any("Traceback" in line for line in lines), "".join(lines)


def test_openai_client_streamed_and_plain_answers_equal_infer(served) -> None:
    client = served.client()
    assert [m.id for m in client.models.list().data] == [MODEL]
    plain = client.chat.completions.create(model=MODEL, messages=messages(str(served.video)), max_tokens=MAX_TOKENS)
    assert plain.choices[0].message.content == served.infer_answer and served.infer_answer
    assert plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage.completion_tokens <= MAX_TOKENS and plain.usage.prompt_tokens > 8 * 4  # 8 frames x 4 tokens
    stream = client.chat.completions.create(model=MODEL, messages=messages(str(served.video)), max_tokens=MAX_TOKENS,
                                            stream=True, stream_options={"include_usage": True})  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == served.infer_answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    # the same file as a file:// URL and as a base64 data URL
    data = "data:video/mp4;base64," + base64.b64encode(served.video.read_bytes()).decode()
    for url in (served.video.as_uri(), data):
        again = client.chat.completions.create(model=MODEL, messages=messages(url), max_tokens=MAX_TOKENS)
        assert again.choices[0].message.content == served.infer_answer
    # per-request sampling: 2 fps over 3 s = 6 frames, capped to 4 by max_frames
    status, body = served.post({"model": MODEL, "messages": messages(str(served.video)), "max_tokens": 2,
                                "fps": 2, "max_frames": 4})  # fmt: skip
    assert status == 200 and body["vidtempo"]["num_frames"] == 4


def test_twenty_concurrent_requests_all_answer_batched(served) -> None:
    client = served.client()

    def ask(k: int) -> tuple[float, str]:
        start = time.perf_counter()
        if k % 2:
            chunks = client.chat.completions.create(model=MODEL, messages=messages(str(served.video)),
                                                    max_tokens=MAX_TOKENS, stream=True)  # fmt: skip
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            reply = client.chat.completions.create(model=MODEL, messages=messages(str(served.video)),
                                                   max_tokens=MAX_TOKENS)  # fmt: skip
            text = reply.choices[0].message.content
        return time.perf_counter() - start, text

    before = served.get("/health")[1]
    with ThreadPoolExecutor(max_workers=20) as pool:  # 20 requests in flight at once, localhost only
        results = list(pool.map(ask, range(20)))
    latencies = sorted(t for t, _ in results)
    assert all(text for _, text in results)
    assert {text for _, text in results} == {served.infer_answer}  # batched rows answer as a single one does
    after = served.get("/health")[1]
    assert after["answered"] - before["answered"] == 20
    assert after["largest_batch"] > 1 and after["batches"] - before["batches"] < 20  # requests shared generate calls
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))]
    print(f"\nRESULT case=serve_20_concurrent p50_s={p50:.3f} p95_s={p95:.3f} max_s={latencies[-1]:.3f} "
          f"generate_calls={after['batches'] - before['batches']} largest_batch={after['largest_batch']}")


BAD = [  # (id, body change, status, param)
    ("no video", {"messages": [{"role": "user", "content": QUESTION}]}, 400, "messages"),
    ("unknown model", {"model": "gpt-4o"}, 404, "model"),
    ("missing model", {"model": None}, 400, "model"),
    ("fps zero", {"fps": 0}, 400, "fps"),
    ("fps string", {"fps": "2"}, 400, "fps"),
    ("too many frames", {"fps": 30}, 400, "fps"),
    ("max_frames", {"max_frames": 1000}, 400, "max_frames"),
    ("max_tokens", {"max_tokens": 0}, 400, "max_tokens"),
    ("sampling", {"temperature": 0.7}, 400, "temperature"),
    ("unknown field", {"logit_bias": {"5": 1}}, 400, "logit_bias"),
    ("lvcot on a pooling model", {"lvcot": True}, 400, "lvcot"),
    ("image part", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x.png"}}]}]}, 400, "messages[0].content[0].type"),  # fmt: skip
    ("bad role", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_requests_get_4xx_naming_the_field(served, case) -> None:
    _, change, status, param = case
    body = {"model": MODEL, "messages": messages(str(served.video)), "max_tokens": 2, **change}
    got, error = served.post({k: v for k, v in body.items() if v is not None})
    assert (got, error["error"]["param"]) == (status, param), error
    assert error["error"]["message"].startswith(f"{param}: ")


VIDEO_PARAM = "messages[0].content[0].video_url.url"


def test_bad_videos_get_4xx_naming_the_video_field_and_the_server_keeps_serving(served) -> None:
    cases = {
        "undecodable": (str(served.root / "notes.mp4"), 400, "cannot decode"),
        "missing": (str(served.root / "nope.mp4"), 400, "file not found"),
        "too long": (str(served.long_video), 400, "12.0 s long"),
        "remote": ("https://example.com/v.mp4", 400, "does not fetch remote files"),
        "bad base64": ("data:video/mp4;base64,@@@", 400, "not valid base64"),
        "base64 of a non-video": ("data:video/mp4;base64," + base64.b64encode(b"hello").decode(), 400,
                                  "cannot decode"),  # fmt: skip
    }
    for name, (url, status, words) in cases.items():
        got, error = served.post({"model": MODEL, "messages": messages(url), "max_tokens": 2})
        assert (got, error["error"]["param"]) == (status, VIDEO_PARAM), (name, error)
        assert words in error["error"]["message"], (name, error)
    got, error = served.post(None, raw=b"{not json")
    assert got == 400 and "not JSON" in error["error"]["message"]
    assert served.get("/v1/nothing")[0] == 404
    assert served.get("/health")[1]["status"] == "ok" and served.proc.poll() is None
    assert served.post({"model": MODEL, "messages": messages(str(served.video)), "max_tokens": 2})[0] == 200
