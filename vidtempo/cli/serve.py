"""``vidtempo serve RECIPE --checkpoint DIR [--host 127.0.0.1] [--port N]``: an OpenAI-compatible server for one
checkpoint (docs/serving.md).

The recipe's inference settings decide frame sampling (``data.collator`` overlaid with ``eval.collator``, as in
``eval`` and ``infer``); a request may change ``fps`` / ``max_frames``. Once listening, one line goes to stderr:
``vidtempo serve: MODEL on http://HOST:PORT`` (``--port 0`` picks a free port and this line tells which).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("recipe", help="recipe YAML (data.collator + eval.collator decide frame sampling)")
    parser.add_argument("overrides", nargs="*", help="key=value, +key=value or ~key")
    parser.add_argument("--checkpoint", required=True, help="a stage's final/ directory (e.g. runs/NAME/0_sft/final)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 = a free one, printed at start)")
    parser.add_argument("--model-name", help="the name clients send as `model` (default: the recipe's name)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--max-batch", type=int, default=8, help="most requests in one generate call")
    parser.add_argument("--max-wait-ms", type=float, default=10.0,
                        help="how long the first request of a batch waits for others (default 10)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length when a request gives none")
    parser.add_argument("--max-tokens-limit", type=int, default=1024, help="most tokens a request may ask for")
    parser.add_argument("--max-frames", type=int, default=256, help="most frames a request's video may be sampled to")
    parser.add_argument("--max-video-seconds", type=float, default=3600.0, help="longest video accepted")
    parser.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body (base64 videos)")
    parser.add_argument("--media-root", action="append", default=[], metavar="DIR",
                        help="local paths / file:// URLs must lie under DIR (repeatable; default: anywhere)")  # fmt: skip


def model_name(args: argparse.Namespace, cfg: dict[str, Any]) -> str:
    """``--model-name``, else the recipe's ``name``, else the checkpoint's folder (its parent for ``final``)."""
    if args.model_name:
        return str(args.model_name)
    if cfg.get("name"):
        return str(cfg["name"])
    path = Path(args.checkpoint).resolve()
    return path.parent.name if path.name == "final" else path.name


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_service(args: argparse.Namespace) -> Any:
    """The :class:`~vidtempo.serving.app.Service` the command serves: the recipe's inference settings, the
    checkpoint's model on its device, the request limits from the flags."""
    from omegaconf import OmegaConf

    from vidtempo.cli.checkpoint_files import check_checkpoint
    from vidtempo.cli.infer import check_audio
    from vidtempo.cli.main import UserError
    from vidtempo.config.load import load_recipe, resolve_recipe
    from vidtempo.data.video_prompt import inference_collator_settings
    from vidtempo.inference.answer import load_answerer
    from vidtempo.serving.app import Service
    from vidtempo.serving.requests import ServeLimits

    for flag in ("max_batch", "max_new_tokens", "max_tokens_limit", "max_frames"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    cfg: dict[str, Any] = OmegaConf.to_container(resolve_recipe(load_recipe(args.recipe, args.overrides)))  # type: ignore[assignment]
    settings = inference_collator_settings(cfg)  # what eval and infer read too
    check_checkpoint(args.checkpoint)
    answerer = load_answerer(args.checkpoint, settings, device=_device(args.device))
    check_audio(answerer.model, settings, args.checkpoint)
    limits = ServeLimits(default_max_tokens=args.max_new_tokens, max_tokens=args.max_tokens_limit,
                         max_frames=args.max_frames, max_video_seconds=args.max_video_seconds,
                         max_body_mb=args.max_body_mb, media_roots=tuple(args.media_root))  # fmt: skip
    return Service(answerer, model_name(args, cfg), limits, max_batch=args.max_batch,
                   max_wait_s=args.max_wait_ms / 1000)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from vidtempo.serving.app import create_app

    service = build_service(args)
    if not _is_loopback(args.host) and not args.media_root:
        log.warning("listening on %s without --media-root: any client can make the server read any video file "
                    "this user can read", args.host)  # fmt: skip
    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning"))
    print(f"vidtempo serve: {service.model_id} on http://{args.host}:{port} (checkpoint {args.checkpoint})",
          file=sys.stderr, flush=True)  # fmt: skip
    server.run(sockets=[sock])
    return 0
