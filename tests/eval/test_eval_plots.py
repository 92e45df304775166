"""Grounding pictures: timeline and IoU histogram PNGs are written and show what they claim."""

from __future__ import annotations

from PIL import Image

from vidtempo.eval.plots import GT_COLOUR, PRED_COLOUR, grounding_pictures, iou_histogram_png


def rows() -> list[dict]:
    return [
        {"id": "a", "kind": "grounding", "condition": "normal", "prompt": "<video>\nWhen is the red circle visible?",
         "parsed": [1.0, 3.0], "ground_truth": [2.0, 3.0], "score": {"iou": 0.5}},
        {"id": "b", "kind": "grounding", "condition": "normal", "prompt": "When?", "parsed": None,
         "ground_truth": [4.0, 5.0], "score": {"iou": 0.0}},
        {"id": "c", "kind": "grounding", "condition": "time", "parsed": [0.0, 1.0], "ground_truth": [0.0, 1.0],
         "score": {"iou": 1.0}},
        {"id": "d", "kind": "mcq", "condition": "normal", "parsed": "A"},
    ]


def test_grounding_pictures_for_one_condition(tmp_path):
    paths = grounding_pictures(rows(), tmp_path)
    assert [p.name for p in paths] == ["timeline.png", "iou_histogram.png"]
    timeline = Image.open(paths[0]).convert("RGB")
    colours = {c for _, c in timeline.getcolors(maxcolors=1 << 16)}
    assert GT_COLOUR in colours and PRED_COLOUR in colours
    assert timeline.size[1] == 36 + 34 * 2 + 20  # two grounding rows of the normal condition


def test_histogram_counts_land_in_their_bins(tmp_path):
    img = Image.open(iou_histogram_png([0.05, 0.05, 0.95], tmp_path / "h.png")).convert("RGB")
    width, height = img.size
    column = lambda x: sum(img.getpixel((x, y)) == PRED_COLOUR for y in range(height))  # noqa: E731
    bar_w = (width - 50 - 20) // 10
    first, last, middle = column(50 + bar_w // 2), column(50 + 9 * bar_w + bar_w // 2), column(50 + 5 * bar_w + bar_w // 2)
    assert first > last > 0 and middle == 0  # two values in [0, 0.1), one in [0.9, 1], none in between


def test_no_grounding_rows_no_pictures(tmp_path):
    assert grounding_pictures([r for r in rows() if r["kind"] == "mcq"], tmp_path) == []
