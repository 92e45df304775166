"""Peak host memory (RSS) to build a pretrained LLM from a saved checkpoint: the lean build vs the pre-#27 build.

Usage: ``python benchmarks/build_memory.py [--layers 2] [--write]`` (Qwen2-7B widths: hidden 3584, vocab 152064,
intermediate 18944, 28 / 4 heads; ``--layers`` decoder blocks); ``--smoke`` runs a 64-wide model (the test suite).

1. A bf16 checkpoint of that architecture is written to a temporary directory (``config.json`` +
   ``model.safetensors``, random values, streamed tensor by tensor so the writer never holds the model).
2. Each build runs in its own fresh subprocess, which imports torch / transformers / vidtempo first, notes its
   RSS (``imports``), builds the model in bf16 from the checkpoint, and reports the kernel's peak RSS
   (``VmHWM``) and the wall time:

   * ``lean``: what ``build_video_llm`` does for a part named in ``weights:`` today: the ``HFCausalLM`` built
     under ``empty_init`` (parameters on the meta device) and ``load_pretrained(dtype=torch.bfloat16)``
     (``vidtempo.models.weights``: every tensor read from the safetensors file straight into its bf16
     parameter);
   * ``before``: the build before #27 item 2, reproduced here line for line: ``HFCausalLM`` random-initialised in
     fp32, ``AutoModelForCausalLM.from_pretrained(dtype=float32)`` as a second model, ``load_state_dict`` into the
     first, then ``.to(torch.bfloat16)`` (what Lightning's ``bf16-true`` does to the module).

``--tower`` measures a pretrained vision tower instead: a SigLIP-so400m-width ``SiglipEncoder`` (hidden 1152, MLP
4304, 16 heads, 384 px, with its attention-pooling head) with ``--tower-layers`` blocks, from an **fp32** checkpoint
(the hub's SigLIP weights are fp32), built in bf16:

   * ``tower_lean``: ``SiglipEncoder`` under ``empty_init`` + ``load_pretrained(dtype=torch.bfloat16)`` (what
     ``build_video_llm`` does for a tower named under ``weights:``);
   * ``tower_before``: the build before #27 item 2 for towers: the encoder random-initialised in fp32,
     ``load_pretrained`` (``SiglipVisionModel.from_pretrained`` as a second fp32 model + ``load_state_dict``),
     then ``.to(torch.bfloat16)``.

``ratio`` = peak RSS / the model's bf16 weight bytes (the #27 bound is 1.3); ``ratio_over_imports`` leaves the
interpreter and libraries out. The last lines are ``RESULT case=... key=value`` lines. ``--write`` puts the table
in benchmarks/RESULTS.md under "## Build memory" (only that section is replaced or appended).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Build memory"
QWEN2_7B = {"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
            "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 32768,
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False}  # fmt: skip
SIGLIP_SO400M_TOWER = {"hidden_size": 1152, "intermediate_size": 4304, "num_attention_heads": 16, "image_size": 384,
                       "patch_size": 14, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}  # fmt: skip
TOWER_SECTION = "## Build memory: vision tower"
SMOKE = {**QWEN2_7B, "vocab_size": 4096, "hidden_size": 64, "intermediate_size": 224, "num_attention_heads": 4,
         "num_key_value_heads": 2}  # fmt: skip


def write_random_safetensors(shapes: dict[str, tuple[int, ...]], path: Path, dtype: str = "BF16") -> int:
    """A safetensors file of random N(0, 0.02) tensors of ``shapes`` in ``dtype`` (``BF16`` or ``F32``), written
    tensor by tensor (never the whole state in memory); returns its data bytes."""
    import torch

    torch_dtype, width = {"BF16": (torch.bfloat16, 2), "F32": (torch.float32, 4)}[dtype]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = width * int(torch.Size(shape).numel())
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    gen = torch.Generator().manual_seed(0)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for shape in shapes.values():
            tensor = (torch.randn(shape, generator=gen) * 0.02).to(torch_dtype)
            fh.write(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return offset


def write_checkpoint(config: dict[str, Any], out: Path) -> int:
    """A bf16 safetensors checkpoint of ``config`` in ``out``, written tensor by tensor; returns its bytes."""
    from vidtempo.models.llms.hf import HFCausalLM
    from vidtempo.models.weights import empty_init

    with empty_init():
        llm = HFCausalLM(config=config)
    llm.model.config.save_pretrained(out)
    shapes = {k: tuple(v.shape) for k, v in llm.model.state_dict().items()}
    return write_random_safetensors(shapes, out / "model.safetensors", "BF16")


def write_tower_checkpoint(layers: int, out: Path) -> int:
    """An fp32 safetensors checkpoint of a SigLIP-so400m-width vision tower with ``layers`` blocks in ``out``
    (``config.json`` + ``model.safetensors``, written tensor by tensor); returns its **bf16** weight bytes."""
    from vidtempo.models.encoders.hf_vision import SiglipEncoder
    from vidtempo.models.weights import empty_init

    with empty_init():
        enc = SiglipEncoder({**SIGLIP_SO400M_TOWER, "num_hidden_layers": layers})
    enc.tower.config.save_pretrained(out)
    shapes = {k: tuple(v.shape) for k, v in enc.tower.state_dict().items()}
    return write_random_safetensors(shapes, out / "model.safetensors", "F32") // 2


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def AutoModel_from_pretrained(ckpt: str) -> Any:  # noqa: N802 - the transformers call it stands for
    from transformers import SiglipVisionModel

    return SiglipVisionModel.from_pretrained(ckpt, local_files_only=True)


def child(case: str, ckpt: str) -> None:
    """Runs in the subprocess: imports, the build of ``case``, then one JSON line."""
    import torch
    import transformers.models.qwen2.modeling_qwen2  # noqa: F401 - imported before the baseline, as by any run
    import transformers.models.siglip.modeling_siglip  # noqa: F401
    from transformers import AutoModelForCausalLM

    from vidtempo.models.llms.hf import HFCausalLM
    from vidtempo.models.weights import empty_init

    torch.set_num_threads(1)
    imports = _rss_kb("VmRSS")
    start = time.perf_counter()
    if case == "lean":
        with empty_init():
            llm = HFCausalLM(ckpt)
        llm.load_pretrained(dtype=torch.bfloat16)
    elif case == "before":
        llm = HFCausalLM(ckpt)  # random init, fp32
        loaded = AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True, dtype=torch.float32)
        llm.model.load_state_dict(loaded.state_dict(), strict=False)
        del loaded
        llm = llm.to(torch.bfloat16)
    elif case in ("tower_lean", "tower_before"):
        from vidtempo.models.encoders.hf_vision import SiglipEncoder

        if case == "tower_lean":
            with empty_init():
                llm = SiglipEncoder(name_or_path=ckpt)
            llm.load_pretrained(dtype=torch.bfloat16)
        else:
            llm = SiglipEncoder(name_or_path=ckpt)  # random init, fp32
            loaded = AutoModel_from_pretrained(ckpt)  # the pre-#27 load_pretrained: a second fp32 tower
            llm.tower.load_state_dict(loaded.state_dict(), strict=True)
            del loaded
            llm = llm.to(torch.bfloat16)
    else:
        raise ValueError(case)
    seconds = time.perf_counter() - start
    params = {p.dtype for p in llm.parameters()}
    print(json.dumps({"case": case, "imports_kb": imports, "peak_kb": _rss_kb("VmHWM"), "seconds": seconds,
                      "dtypes": sorted(map(str, params)),
                      "checksum": float(sum(p.float().sum() for p in llm.parameters()))}))  # fmt: skip


def measure(case: str, ckpt: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", case, str(ckpt)], env=env, capture_output=True,
                         text=True, check=False)  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"{case} build failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(config: dict[str, Any], cases: list[str], repeats: int, tower_layers: int = 0) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp)
        weight_bytes = write_tower_checkpoint(tower_layers, ckpt) if tower_layers else write_checkpoint(config, ckpt)
        rows = []
        for case in cases:
            runs = [measure(case, ckpt) for _ in range(repeats)]
            peaks = sorted(r["peak_kb"] * 1024 for r in runs)
            imports = runs[0]["imports_kb"] * 1024
            rows.append({"case": case, "weight_bytes": weight_bytes, "peak": peaks[len(peaks) // 2],
                         "peak_min": peaks[0], "peak_max": peaks[-1], "imports": imports,
                         "seconds": sorted(r["seconds"] for r in runs)[len(runs) // 2], "dtypes": runs[0]["dtypes"],
                         "checksum": runs[0]["checksum"]})  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]], config: dict[str, Any], layers: int) -> str:
    gb = 1e9
    head = (f"{SECTION}\n\n`python benchmarks/build_memory.py --layers {layers} --write`; {platform.machine()} CPU "
            f"shared with other jobs, 1 torch thread. An `HFCausalLM` of Qwen2-7B widths (hidden "
            f"{config['hidden_size']}, vocabulary {config['vocab_size']}, MLP {config['intermediate_size']}) with "
            f"{layers} decoder blocks, built in bf16 from a bf16 safetensors checkpoint, each build in a fresh "
            "process (peak = VmHWM; median of the repeats, range in brackets). `before` = the pre-#27 build "
            "(random fp32 init + a second fp32 model from `from_pretrained` + `load_state_dict` + `.to(bf16)`); "
            "`lean` = `empty_init` + `load_pretrained(dtype=bf16)`.\n\n"
            "| build | bf16 weights GB | peak RSS GB | peak / weights | (peak - imports) / weights | seconds |\n"
            "|---|---:|---:|---:|---:|---:|\n")  # fmt: skip
    lines = [f"| {r['case']} | {r['weight_bytes'] / gb:.2f} | {r['peak'] / gb:.2f} ({r['peak_min'] / gb:.2f}-"
             f"{r['peak_max'] / gb:.2f}) | {r['peak'] / r['weight_bytes']:.2f} | "
             f"{(r['peak'] - r['imports']) / r['weight_bytes']:.2f} | {r['seconds']:.1f} |" for r in rows]  # fmt: skip
    return head + "\n".join(lines) + "\n"


def tower_table(rows: list[dict[str, Any]], layers: int) -> str:
    gb = 1e9
    head = (f"{TOWER_SECTION}\n\n`python benchmarks/build_memory.py --tower --tower-layers {layers} --write`; "
            f"{platform.machine()} CPU shared with other jobs, 1 torch thread. A `SiglipEncoder` of SigLIP-so400m "
            f"widths (hidden 1152, MLP 4304, 384 px, attention-pooling head) with {layers} blocks, built in bf16 from "
            "an fp32 safetensors checkpoint, each build in a fresh process (peak = VmHWM; median of the repeats, "
            "range in brackets). `tower_before` = the pre-#27 tower build (random fp32 init + a second fp32 tower "
            "from `from_pretrained` + `load_state_dict` + `.to(bf16)`); `tower_lean` = `empty_init` + "
            "`load_pretrained(dtype=bf16)`.\n\n"
            "| build | bf16 weights GB | peak RSS GB | peak / weights | (peak - imports) / weights | seconds |\n"
            "|---|---:|---:|---:|---:|---:|\n")  # fmt: skip
    lines = [f"| {r['case']} | {r['weight_bytes'] / gb:.3f} | {r['peak'] / gb:.3f} ({r['peak_min'] / gb:.3f}-"
             f"{r['peak_max'] / gb:.3f}) | {r['peak'] / r['weight_bytes']:.2f} | "
             f"{(r['peak'] - r['imports']) / r['weight_bytes']:.2f} | {r['seconds']:.1f} |" for r in rows]  # fmt: skip
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="a 64-wide model (seconds; the test suite)")
    parser.add_argument("--skip-before", action="store_true", help="only the lean build (needs less memory)")
    parser.add_argument("--tower", action="store_true", help="a SigLIP-so400m-width vision tower instead of the LLM")
    parser.add_argument("--tower-layers", type=int, default=4)
    parser.add_argument("--write", action="store_true", help="put the table into benchmarks/RESULTS.md")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    sys.path.insert(0, str(REPO))
    config = {**(SMOKE if args.smoke else QWEN2_7B), "num_hidden_layers": args.layers}
    cases = ["lean"] if args.skip_before else ["lean", "before"]
    if args.tower:
        cases = [f"tower_{c}" for c in cases]
        rows = run(config, cases, args.repeats, tower_layers=args.tower_layers)
        text, section, layers = tower_table(rows, args.tower_layers), TOWER_SECTION, args.tower_layers
    else:
        rows = run(config, cases, args.repeats)
        text, section, layers = table(rows, config, args.layers), SECTION, args.layers
    print(text)
    if args.write:
        from results_md import write_section  # benchmarks/ is on sys.path when run as a script

        write_section(section, text, REPO / "benchmarks" / "RESULTS.md")
    base = next((r for r in rows if r["case"].endswith("before")), None)
    hidden = SIGLIP_SO400M_TOWER["hidden_size"] if args.tower else config["hidden_size"]
    for r in rows:
        extra = f" x_before={r['peak'] / base['peak']:.3f}" if base is not None else ""
        print(f"RESULT case={r['case']} layers={layers} hidden={hidden} "
              f"weight_gb={r['weight_bytes'] / 1e9:.3f} peak_rss_gb={r['peak'] / 1e9:.3f} "
              f"ratio={r['peak'] / r['weight_bytes']:.3f} "
              f"ratio_over_imports={(r['peak'] - r['imports']) / r['weight_bytes']:.3f} "
              f"seconds={r['seconds']:.2f}{extra}")  # fmt: skip


if __name__ == "__main__":
    main()
