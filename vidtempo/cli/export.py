"""``vidtempo export --checkpoint DIR --out DIR2``: a native Qwen2.5-VL checkpoint as a plain Hugging Face
directory (LoRA merged into the base weights) that ``Qwen2_5_VLForConditionalGeneration.from_pretrained`` and
``AutoProcessor.from_pretrained`` load as is, so vLLM or SGLang can serve it (docs/export.md).

The checkpoint's files are checked first (``vidtempo.cli.checkpoint_files``); a checkpoint of another model
(a composed ``VideoLLM``: encoder + compressor + LLM) is refused in one line naming what is supported. The
output appears complete or not at all (``vidtempo.utils.atomic.atomic_dir``); an existing non-empty ``--out``
is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from vidtempo.cli.main import UserError

log = logging.getLogger(__name__)

SUPPORTED = "vidtempo.models.native.qwen2_5_vl.Qwen25VLVideoModel"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a native Qwen2.5-VL stage's final/ directory (e.g. runs/NAME/0_sft/final)",
    )
    parser.add_argument("--out", required=True, help="directory to write the Hugging Face model to")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="weight dtype of the export (default: the checkpoint's own)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")  # fmt: skip


def unsupported(directory: Path, target: Any, name: str) -> UserError:
    return UserError(
        f"{directory}: model._target_ is {target} ({name}); export supports native Qwen2.5-VL checkpoints "
        f"only (model._target_: {SUPPORTED}): a composed VideoLLM has no Hugging Face architecture to load as"
    )


def check_supported(directory: Path, config: dict[str, Any]) -> None:
    """Refuse a checkpoint whose model is not a native Qwen2.5-VL (without building it). A target outside
    vidtempo and its registry is left to ``load_pretrained``'s trust check, which must not be bypassed by
    importing it here."""
    from vidtempo.config.instantiate import resolve_target
    from vidtempo.models.checkpoint import untrusted_targets
    from vidtempo.models.native.qwen2_5_vl import Qwen25VLVideoModel

    node = config["model"]
    target = node.get("_target_")
    if untrusted_targets({"_target_": target}):
        return
    cls = resolve_target(node, "model")
    if not (isinstance(cls, type) and issubclass(cls, Qwen25VLVideoModel)):
        raise unsupported(directory, target, getattr(cls, "__name__", type(cls).__name__))


def check_out(out: Path, checkpoint: Path, overwrite: bool) -> None:
    if out.resolve() == checkpoint.resolve() or checkpoint.resolve() in out.resolve().parents:
        raise UserError(f"--out {out} is inside the checkpoint {checkpoint}: choose a directory outside it")
    if out.resolve() in checkpoint.resolve().parents:
        raise UserError(
            f"--out {out} contains the checkpoint {checkpoint}: replacing it would delete the checkpoint"
        )
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out} exists and is not empty: pass --overwrite to replace it")


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, dtype: str | None = None,
                      overwrite: bool = False) -> Path:  # fmt: skip
    """Load a vidtempo checkpoint, merge its LoRA adapter and write the Hugging Face directory ``out``."""
    from vidtempo import __version__
    from vidtempo.cli.checkpoint_files import check_checkpoint
    from vidtempo.models.checkpoint import load_pretrained, read_config
    from vidtempo.models.native.export import export_hf
    from vidtempo.models.native.qwen2_5_vl import Qwen25VLVideoModel

    checkpoint, out = Path(checkpoint), Path(out)
    check_checkpoint(checkpoint)
    check_supported(checkpoint, read_config(checkpoint))
    check_out(out, checkpoint, overwrite)
    model, tokenizer, config = load_pretrained(checkpoint)
    if not isinstance(model, Qwen25VLVideoModel):
        raise unsupported(checkpoint, config["model"].get("_target_"), type(model).__name__)
    merged = model.has_lora
    info = {"source": str(checkpoint.resolve()), "vidtempo_version": __version__, "lora_merged": merged}
    export_hf(model.eval(), tokenizer, out, dtype=dtype, info=info)
    log.info("exported %s -> %s (LoRA %s)", checkpoint, out, "merged" if merged else "none")
    return out


def run(args: argparse.Namespace) -> int:
    out = export_checkpoint(args.checkpoint, args.out, dtype=args.dtype, overwrite=args.overwrite)
    print(out)
    return 0
