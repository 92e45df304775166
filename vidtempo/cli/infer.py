"""``vidtempo infer RECIPE --checkpoint DIR --video F --prompt "..."``: one answer from one video.

``--lvcot`` answers with TDC's Long-Video Chain-of-Thought (docs/methods/lvcot.md): the video is cut into N
segments (``--lvcot-segments N``, or N from the duration by ``--lvcot-rule``), each is described first
(``--lvcot-prompt``), and the descriptions go in ``<think>...</think>`` before the question. The segment
descriptions are printed to stderr; the answer alone to stdout.

Before loading, the checkpoint's files are checked (``vidtempo.cli.checkpoint_files``), and the recipe's audio
settings are compared with the checkpoint's model (:func:`check_audio`): a model that reads audio given a
recipe without ``data.collator.audio`` is an error (it would answer from silence); audio decoded for a model
without an audio encoder is a warning.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from vidtempo.cli.main import UserError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("recipe", help="recipe YAML (its data.collator, overlaid with eval.collator, decides frame "
                        "sampling, as in eval and serve)")
    parser.add_argument("overrides", nargs="*", help="key=value, +key=value or ~key")
    parser.add_argument("--checkpoint", required=True, help="a stage's final/ directory (e.g. runs/NAME/0_sft/final)")
    parser.add_argument("--video", required=True, help="video file")
    parser.add_argument("--prompt", required=True, help="question about the video")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--lvcot", action="store_true",
                        help="Long-Video Chain-of-Thought: describe N segments first (default N rule: videomme)")
    parser.add_argument("--lvcot-segments", type=int, metavar="N",
                        help="fixed number of segments (implies --lvcot; default: N from the duration rule)")
    parser.add_argument("--lvcot-rule", metavar="NAME", help="duration rule: videomme (3 from 900 s, 2 from "
                        "600 s) or mlvu (2 from 600 s) (implies --lvcot)")
    parser.add_argument("--lvcot-prompt", metavar="TEXT", help="segment prompt: 'describe' (default), 'question' "
                        "(question-conditioned) or a template with {question} (implies --lvcot)")
    parser.add_argument("--lvcot-max-new-tokens", type=int, metavar="N",
                        help="length of each segment description (default 128; implies --lvcot)")  # fmt: skip


def lvcot_settings(args: argparse.Namespace) -> Any:
    """``LVCoTSettings`` from the ``--lvcot*`` flags, or None when none of them is given."""
    from vidtempo.inference.lvcot import LVCoTSettings

    node = {"segments": args.lvcot_segments, "rule": args.lvcot_rule, "prompt": args.lvcot_prompt,
            "max_new_tokens": args.lvcot_max_new_tokens}  # fmt: skip
    node = {k: v for k, v in node.items() if v is not None}
    if not (args.lvcot or node):
        return None
    return LVCoTSettings.from_dict(node, where="lvcot")


def answer_with_trace(
    checkpoint: str,
    collator_settings: dict,
    video: str,
    prompt: str,
    max_new_tokens: int = 64,
    lvcot: Any = None,
) -> tuple[str, Any]:
    """(greedy answer, ``LVCoTResult`` or None): see :func:`answer`. The answer comes from
    :class:`vidtempo.inference.answer.Answerer`, the code ``vidtempo serve`` answers with."""
    from vidtempo.cli.checkpoint_files import check_checkpoint
    from vidtempo.data.samples import ConversationSample
    from vidtempo.inference.answer import load_answerer

    check_checkpoint(checkpoint)
    answerer = load_answerer(checkpoint, collator_settings)
    check_audio(answerer.model, collator_settings, checkpoint)
    sample = ConversationSample(video=video, messages=[{"role": "user", "content": prompt}], id="infer")
    (out,) = answerer.answer([sample], max_new_tokens, lvcot=lvcot)
    if out.error is not None:
        raise FileNotFoundError(out.error)
    return out.text, out.trace


def check_audio(model: Any, collator_settings: dict, checkpoint: str) -> None:
    """Compare what the model reads with what the recipe's collator decodes.

    Raises:
        UserError: the model has an audio encoder but the collator decodes no audio, or the encoder's mel
            bins differ from ``data.collator.audio_mel``.
    """
    reads = "audio" in model.capabilities
    decodes = bool(collator_settings.get("audio"))
    if reads and not decodes:
        raise UserError(f"{checkpoint}: the model reads audio (it has an audio encoder) but the recipe's "
                        "data.collator.audio is false, so it would hear silence; use the recipe it was trained "
                        "with or pass data.collator.audio=true")  # fmt: skip
    if decodes and not reads:
        log.warning("%s: the model has no audio encoder: the audio the recipe decodes (data.collator.audio) is "
                    "ignored", checkpoint)  # fmt: skip
        return
    n_mels = getattr(getattr(model, "audio_encoder", None), "n_mels", None)
    mel = collator_settings.get("audio_mel")
    if reads and n_mels and mel and int(mel) != int(n_mels):
        raise UserError(f"{checkpoint}: the audio encoder reads {n_mels} mel bins but the recipe's "
                        f"data.collator.audio_mel is {mel}; use the recipe the checkpoint was trained with")  # fmt: skip


def answer(
    checkpoint: str,
    collator_settings: dict,
    video: str,
    prompt: str,
    max_new_tokens: int = 64,
    lvcot: Any = None,
) -> str:
    """Greedy answer of the checkpoint's model to ``prompt`` about ``video`` (with LVCoT when ``lvcot`` is a
    ``LVCoTSettings``)."""
    return answer_with_trace(checkpoint, collator_settings, video, prompt, max_new_tokens, lvcot)[0]


def _print_trace(trace: Any) -> None:
    if trace is None:
        return
    if not trace.segments:
        print(f"[lvcot] {trace.duration:.1f} s video: one segment by the rule, answering directly", file=sys.stderr)
    for (start, end), text in zip(trace.segments, trace.summaries):
        print(f"[lvcot] {start:.1f}-{end:.1f} s: {json.dumps(text, ensure_ascii=False)}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from vidtempo.config.load import load_recipe, resolve_recipe
    from vidtempo.inference.lvcot import LVCoTError

    try:
        lvcot = lvcot_settings(args)
    except LVCoTError as err:
        print(f"vidtempo infer: error: {err}", file=sys.stderr)
        return 2
    from vidtempo.data.video_prompt import inference_collator_settings

    cfg = OmegaConf.to_container(resolve_recipe(load_recipe(args.recipe, args.overrides)))
    collator = inference_collator_settings(cfg)  # data.collator + eval.collator, as eval and serve read it
    text, trace = answer_with_trace(args.checkpoint, collator, args.video, args.prompt, args.max_new_tokens, lvcot)
    _print_trace(trace)
    print(text)
    return 0
