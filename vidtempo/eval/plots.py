"""Pictures of grounding results (Pillow only, no plotting library): a timeline of predicted vs
ground-truth intervals for a sample of queries, and a histogram of IoU values.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [{"id": "a", "prompt": "When is the red circle visible?", "parsed": [1.0, 2.0],
    ...          "ground_truth": [1.5, 2.5], "score": {"iou": 0.33}}]
    >>> timeline_png(rows, d / "t.png").is_file(), iou_histogram_png([0.33, 0.9], d / "h.png").is_file()
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

GT_COLOUR = (46, 139, 87)  # green: ground truth
PRED_COLOUR = (230, 126, 34)  # orange: prediction
MISS_COLOUR = (192, 57, 43)  # red: unparsable prediction


def _font() -> Any:
    from PIL import ImageFont

    return ImageFont.load_default()


def timeline_png(rows: Sequence[dict[str, Any]], path: str | Path, max_rows: int = 24) -> Path:
    """One row per query: ground truth (green, top) and prediction (orange, bottom) on a 0..end axis."""
    from PIL import Image, ImageDraw

    rows = list(rows)[:max_rows]
    width, label_w, row_h, top = 900, 330, 34, 36
    img = Image.new("RGB", (width, top + row_h * max(1, len(rows)) + 20), "white")
    draw = ImageDraw.Draw(img)
    font = _font()
    draw.text((8, 4), "ground truth (green) vs prediction (orange); red = unparsable", fill="black", font=font)
    axis_w = width - label_w - 20
    end = max([float(v) for r in rows for v in (*(r.get("ground_truth") or []), *(r.get("parsed") or []))] + [1.0])
    to_x = lambda t: label_w + int(axis_w * min(max(0.0, float(t)), end) / end)  # noqa: E731
    for tick in range(0, int(end) + 1, max(1, int(end) // 8)):  # one shared time axis, in seconds
        draw.text((to_x(tick), top - 12), f"{tick}s", fill=(120, 120, 120), font=font)
    for i, row in enumerate(rows):
        y = top + i * row_h
        gt, pred = row.get("ground_truth"), row.get("parsed")
        iou = (row.get("score") or {}).get("iou")
        label = f"{row.get('id', '')[:18]} iou={iou:.2f}" if iou is not None else str(row.get("id", ""))[:24]
        draw.text((8, y + 2), label, fill="black", font=font)
        draw.text((8, y + 15), _query(row)[:52], fill=(90, 90, 90), font=font)
        draw.line([(label_w, y + row_h - 4), (label_w + axis_w, y + row_h - 4)], fill=(200, 200, 200))
        if gt:
            draw.rectangle([to_x(gt[0]), y + 3, max(to_x(gt[1]), to_x(gt[0]) + 1), y + 13], fill=GT_COLOUR)
        if pred:
            draw.rectangle([to_x(pred[0]), y + 16, max(to_x(pred[1]), to_x(pred[0]) + 1), y + 26], fill=PRED_COLOUR)
        else:
            draw.text((label_w, y + 15), "no interval parsed", fill=MISS_COLOUR, font=font)
    out = Path(path)
    img.save(out)
    return out


def _query(row: dict[str, Any]) -> str:
    prompt = str(row.get("prompt", ""))
    return " ".join(prompt.replace("<video>", " ").split())


def iou_histogram_png(ious: Sequence[float], path: str | Path, bins: int = 10) -> Path:
    """Counts of IoU values in ``bins`` equal bins over [0, 1] (an unparsable prediction counts as 0)."""
    from PIL import Image, ImageDraw

    counts = [0] * bins
    for value in ious:
        counts[min(bins - 1, int(max(0.0, min(1.0, float(value))) * bins))] += 1
    width, height, left, bottom = 640, 360, 50, 40
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = _font()
    draw.text((left, 8), f"IoU histogram ({len(ious)} queries)", fill="black", font=font)
    plot_h, bar_w = height - bottom - 40, (width - left - 20) // bins
    peak = max(counts + [1])
    for i, count in enumerate(counts):
        x0 = left + i * bar_w
        h = int(plot_h * count / peak)
        draw.rectangle([x0 + 2, height - bottom - h, x0 + bar_w - 2, height - bottom], fill=PRED_COLOUR)
        draw.text((x0 + 4, height - bottom - h - 12), str(count), fill="black", font=font)
        draw.text((x0 + 2, height - bottom + 6), f"{i / bins:.1f}", fill="black", font=font)
    draw.line([(left, height - bottom), (width - 20, height - bottom)], fill="black")
    out = Path(path)
    img.save(out)
    return out


def grounding_pictures(rows: Sequence[dict[str, Any]], out_dir: str | Path, condition: str = "normal") -> list[Path]:
    """Write ``timeline.png`` and ``iou_histogram.png`` for the grounding rows of one condition."""
    chosen = [r for r in rows if r.get("kind") == "grounding" and r.get("condition", "normal") == condition]
    if not chosen:
        return []
    out = Path(out_dir)
    ious = [float((r.get("score") or {}).get("iou") or 0.0) for r in chosen]
    return [timeline_png(chosen, out / "timeline.png"), iou_histogram_png(ious, out / "iou_histogram.png")]
