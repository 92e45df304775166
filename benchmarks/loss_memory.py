"""Peak memory of the LM loss on one long sequence: full logits vs the label-position chunked head.

Usage: ``python benchmarks/loss_memory.py [--tokens 8192] [--hidden 512] [--vocab 32768] [--labelled 256 8192]``

Each case runs in a fresh subprocess: hidden states (1, L, H) that require a gradient and a Linear(H, V)
LM head are built, the peak-RSS mark is reset (``/proc/self/clear_refs`` = 5), then one forward + backward of
the mean next-token cross-entropy over ``labelled`` answer tokens (the last ones of the sequence) runs; the
figure is ``VmHWM`` growth over the RSS before the loss (covers torch's CPU allocator, which ``tracemalloc``
does not see). Cases:

* ``logits``: ``head(h)`` for all L positions, upcast to float32, ``cross_entropy`` (the path before issue 27);
* ``full``: the head only at the labelled positions, one block (``LabelHead(impl="full")``);
* ``chunked``: the head only at the labelled positions, 1,024 rows at a time, recomputed in backward
  (``LabelHead()``, the default of ``SFTModule`` / ``DPOModule``).

Ends with one ``RESULT`` line per case.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

CASES = ("logits", "full", "chunked")


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(case: str, tokens: int, hidden: int, vocab: int, labelled: int) -> dict[str, float]:
    from vidtempo.models.label_head import LabelHead, label_loss

    torch.manual_seed(0)
    head = torch.nn.Linear(hidden, vocab, bias=False)
    h = torch.randn(1, tokens, hidden, requires_grad=True)
    labels = torch.full((1, tokens), -100, dtype=torch.long)
    labels[0, tokens - labelled :] = torch.randint(0, vocab, (labelled,))
    Path("/proc/self/clear_refs").write_text("5")
    base = _kib("VmRSS")
    if case == "logits":
        logits = head(h)  # (1, L, V)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
    else:
        loss = label_loss(h, labels, head, LabelHead(impl=case))
    loss.backward()
    return {"growth_mib": (_kib("VmHWM") - base) / 1024, "loss": float(loss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--labelled", type=int, nargs="+", default=[256, 8191])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.tokens, args.hidden, args.vocab, int(args.child[1]))))
        return
    fp32 = args.tokens * args.vocab * 4 / 2**20
    print(f"L={args.tokens} H={args.hidden} V={args.vocab}: one float32 (L, V) logits copy = {fp32:.0f} MiB")
    results = []
    for labelled in args.labelled:
        for case in CASES:
            cmd = [sys.executable, __file__, "--tokens", str(args.tokens), "--hidden", str(args.hidden),
                   "--vocab", str(args.vocab), "--child", case, str(labelled)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(f"{case}: {out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append((labelled, case, r))
            print(f"  labelled {labelled:5d}  {case:<8} peak growth {r['growth_mib']:8.1f} MiB  loss {r['loss']:.6f}")
    for labelled, case, r in results:
        ref = next(x for lab, c, x in results if lab == labelled and c == "logits")
        print(f"RESULT case=loss_L{args.tokens}_V{args.vocab}_labelled{labelled} impl={case} "
              f"peak_growth_mib={r['growth_mib']:.1f} ratio_vs_logits={r['growth_mib'] / ref['growth_mib']:.3f} "
              f"loss_diff={abs(r['loss'] - ref['loss']):.2e}")


if __name__ == "__main__":
    main()
