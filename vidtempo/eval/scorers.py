"""Benchmark scorers: every official policy as a named option, always next to vidtempo's strict one.

A *policy* fixes how an answer is read and what the denominator is:

* ``strict``: :func:`parse_choice`; an unparsed answer is wrong and stays in the denominator (vidtempo).
* ``videomme_official``: first capital A-D after prefix stripping; an unparsed answer is *dropped* from
  the denominator (BradyFU/Video-MME ``evaluation/eval_your_results.py``).
* ``lmms_eval_videomme``: the same regex, unparsed = wrong (lmms-eval ``tasks/videomme/utils.py``).
* ``mvbench_official``: first-token substring check, unparsed = wrong (Ask-Anything
  ``video_chat2/mvbench.ipynb``); the benchmark headline is the mean of per-task accuracies.
* ``egoschema_lmms_eval``: exact match to an option or bare letter, else wrong (lmms-eval
  ``tasks/egoschema/utils.py``).

Grounding policies (:data:`GROUNDING_POLICIES`): ``strict`` (vidtempo), ``timechat`` (TimeChat
``metrics/tvg/eval_tvg.py``) and ``vtimellm`` (VTimeLLM ``eval/eval.py`` + ``metric.py``). Retrieval:
``strict`` = pessimistic ties, ``official`` = CLIP4Clip ``metrics.py::compute_metrics`` (ties expand rows).

Every ``*_report`` function returns ``{"strict": ..., "official": ..., "official_policy": name, ...}``.
Numbers in reports are percentages (the metric functions in :mod:`vidtempo.eval.metrics` return
grounding fractions; the reports scale them so every report reads the same way).

Example:
    >>> recs = [MCRecord("Answer: C. Jade.", "C"), MCRecord("I am not sure at all, sorry", "A")]
    >>> rep = multiple_choice_report(recs, "videomme")
    >>> rep["strict"]["accuracy"], rep["official"]["accuracy"], rep["official"]["denominator"]
    (50.0, 0.0, 1)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidtempo.data.errors import AnnotationError
from vidtempo.eval.metrics import (
    IOU_ATOL,
    as_similarity_matrix,
    rank_summary,
    retrieval_metrics,
    retrieval_metrics_multi,
    summarize_ious,
    temporal_iou,
)
from vidtempo.eval.parsing import (
    LETTERS,
    egoschema_lmms_exact_match,
    mvbench_official_correct,
    parse_choice,
    parse_interval,
    videomme_official_extract,
)

# ----------------------------------------------------------------------------------------------------
# Multiple choice
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MCPolicy:
    """How one scorer reads an answer and counts it.

    Attributes:
        name: policy name used in reports.
        extractor: ``"vidtempo"``, ``"videomme_regex"``, ``"mvbench_first_token"`` or ``"egoschema_exact"``.
        drop_unparsed: True = an answer with no extractable letter leaves the denominator.
        source: the reference scorer this reproduces.
    """

    name: str
    extractor: str
    drop_unparsed: bool
    source: str


MC_POLICIES: dict[str, MCPolicy] = {
    p.name: p
    for p in (
        MCPolicy("strict", "vidtempo", False, "vidtempo.eval.parsing.parse_choice; unparsed = wrong"),
        MCPolicy(
            "videomme_official", "videomme_regex", True, "BradyFU/Video-MME evaluation/eval_your_results.py"
        ),
        MCPolicy(
            "lmms_eval_videomme", "videomme_regex", False, "lmms-eval tasks/videomme/utils.py (06965734)"
        ),
        MCPolicy(
            "mvbench_official",
            "mvbench_first_token",
            False,
            "OpenGVLab/Ask-Anything video_chat2/mvbench.ipynb",
        ),
        MCPolicy(
            "egoschema_lmms_eval", "egoschema_exact", False, "lmms-eval tasks/egoschema/utils.py (generation)"
        ),
    )
}

# benchmark -> (official policy, extra policies reported alongside, headline average)
MC_BENCHMARKS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "videomme": ("videomme_official", ("lmms_eval_videomme",), "micro"),
    "mvbench": ("mvbench_official", (), "task_mean"),
    "egoschema": ("strict", ("egoschema_lmms_eval",), "micro"),
    "mlvu": ("strict", (), "task_mean"),
}


@dataclass(frozen=True)
class MCRecord:
    """One multiple-choice item to score.

    Attributes:
        prediction: the raw generated text (``None`` = no generation, scored as unparsable).
        answer: ground-truth letter.
        options: option strings (``"A. ..."``), used by option-text matching and for the option count.
        task: task type (MVBench task, Video-MME ``task_type``); per-task breakdown and task mean.
        duration: Video-MME duration class (``short``/``medium``/``long``).
        category: Video-MME domain.
        id: item id, echoed in the per-item rows.
    """

    prediction: str | None
    answer: str
    options: tuple[str, ...] | None = None
    task: str = ""
    duration: str = ""
    category: str = ""
    id: str = ""


@dataclass(frozen=True)
class MCJudgement:
    """How one item was scored: the letter read (``None`` = unparsable), correctness, whether it counts."""

    id: str
    parsed: str | None
    correct: bool
    counted: bool


def judge_choice(record: MCRecord, policy: MCPolicy, num_options: int | None = None) -> MCJudgement:
    """Score one item under one policy."""
    gt = record.answer.strip().upper()
    n = len(record.options) if record.options else (num_options or 4)
    if policy.extractor == "vidtempo":
        parsed = parse_choice(record.prediction, record.options, num_options=n)
        correct = parsed == gt
    elif policy.extractor == "videomme_regex":
        parsed = videomme_official_extract(record.prediction) or None
        correct = parsed == gt
    elif policy.extractor == "mvbench_first_token":
        token = (record.prediction or "").lower().split(" ")[0]
        parsed = token or None
        correct = mvbench_official_correct(record.prediction, gt)
    elif policy.extractor == "egoschema_exact":
        options = record.options or tuple(LETTERS[:n])
        index = egoschema_lmms_exact_match(record.prediction, options)
        parsed = LETTERS[index] if index >= 0 else None
        correct = parsed == gt
    else:  # pragma: no cover - MC_POLICIES is closed
        raise ValueError(f"unknown extractor {policy.extractor!r}")
    counted = not (policy.drop_unparsed and parsed is None)
    return MCJudgement(record.id, parsed, bool(correct and counted), counted)


@dataclass
class _Tally:
    correct: int = 0
    answered: int = 0
    total: int = 0
    denominator: int = 0

    def add(self, j: MCJudgement) -> None:
        self.total += 1
        self.answered += j.parsed is not None
        self.denominator += j.counted
        self.correct += j.correct

    def as_dict(self) -> dict[str, float | int]:
        acc = 100.0 * self.correct / self.denominator if self.denominator else 0.0
        return {
            "accuracy": acc,
            "correct": self.correct,
            "answered": self.answered,
            "unparsed": self.total - self.answered,
            "total": self.total,
            "denominator": self.denominator,
        }


def _get_policy(policy: str | MCPolicy) -> MCPolicy:
    if isinstance(policy, MCPolicy):
        return policy
    if policy not in MC_POLICIES:
        raise ValueError(f"unknown multiple-choice policy {policy!r}; valid: {', '.join(MC_POLICIES)}")
    return MC_POLICIES[policy]


def score_multiple_choice(
    records: Iterable[MCRecord],
    policy: str | MCPolicy = "strict",
    *,
    average: str = "micro",
    num_options: int | None = None,
) -> dict[str, Any]:
    """Accuracy of multiple-choice answers under one policy, with per-task/duration/category breakdowns.

    Args:
        records: the items.
        policy: a name from :data:`MC_POLICIES` (or an :class:`MCPolicy`).
        average: headline ``"accuracy"``: ``"micro"`` (over items) or ``"task_mean"`` (mean of per-task
            accuracies, MVBench / MLVU M-Avg).
        num_options: option count for records without ``options`` (default 4).

    Returns:
        ``{"policy", "source", "average", "accuracy", "micro_accuracy", "task_mean_accuracy", "correct",
        "answered", "unparsed", "total", "denominator", "per_task", "per_duration", "per_category",
        "items"}``; accuracies in percent, ``items`` a list of per-item :class:`MCJudgement` dicts.

    Example:
        >>> recs = [MCRecord("B", "B", task="t1"), MCRecord("C", "B", task="t2")]
        >>> recs.append(MCRecord("A", "A", task="t2"))
        >>> score_multiple_choice(recs, average="task_mean")["accuracy"]
        75.0
    """
    pol = _get_policy(policy)
    if average not in ("micro", "task_mean"):
        raise ValueError(f"average must be 'micro' or 'task_mean', got {average!r}")
    records = list(records)
    if not records:
        raise ValueError("multiple choice: no records to score")
    overall = _Tally()
    groups: dict[str, dict[str, _Tally]] = {"per_task": {}, "per_duration": {}, "per_category": {}}
    items = []
    for i, rec in enumerate(records):
        if not isinstance(rec, MCRecord):
            raise TypeError(f"multiple choice: records[{i}] must be an MCRecord, got {type(rec).__name__}")
        gt = rec.answer.strip() if isinstance(rec.answer, str) else ""
        if len(gt) != 1 or gt.upper() not in LETTERS:
            raise ValueError(
                f"multiple choice: records[{i}] ({rec.id!r}): answer must be a letter, got {rec.answer!r}"
            )
        j = judge_choice(rec, pol, num_options)
        overall.add(j)
        for key, label in (
            ("per_task", rec.task),
            ("per_duration", rec.duration),
            ("per_category", rec.category),
        ):
            if label:
                groups[key].setdefault(label, _Tally()).add(j)
        items.append({"id": j.id, "parsed": j.parsed, "correct": j.correct, "counted": j.counted})
    out: dict[str, Any] = {"policy": pol.name, "source": pol.source, "average": average}
    out.update(overall.as_dict())
    out["micro_accuracy"] = out.pop("accuracy")
    per_task = {k: t.as_dict() for k, t in groups["per_task"].items()}
    out["task_mean_accuracy"] = (
        float(np.mean([t["accuracy"] for t in per_task.values()])) if per_task else None
    )
    if average == "task_mean" and out["task_mean_accuracy"] is None:
        raise ValueError("multiple choice: average='task_mean' needs a task on every record")
    out["accuracy"] = out["task_mean_accuracy"] if average == "task_mean" else out["micro_accuracy"]
    out["per_task"] = per_task
    out["per_duration"] = {k: t.as_dict() for k, t in groups["per_duration"].items()}
    out["per_category"] = {k: t.as_dict() for k, t in groups["per_category"].items()}
    out["items"] = items
    return out


def multiple_choice_report(
    records: Iterable[MCRecord], benchmark: str, *, num_options: int | None = None
) -> dict[str, Any]:
    """Strict and official scores (plus the benchmark's other named policies) for one benchmark.

    Args:
        records: the items.
        benchmark: a key of :data:`MC_BENCHMARKS` (``videomme``, ``mvbench``, ``egoschema``, ``mlvu``).
        num_options: option count for records without ``options``.

    Returns:
        ``{"benchmark", "official_policy", "strict", "official", "other": {name: score}, "notes"}``.
    """
    if benchmark not in MC_BENCHMARKS:
        raise ValueError(
            f"unknown multiple-choice benchmark {benchmark!r}; valid: {', '.join(MC_BENCHMARKS)}"
        )
    official, extras, average = MC_BENCHMARKS[benchmark]
    records = list(records)
    kw = {"average": average, "num_options": num_options}
    report: dict[str, Any] = {
        "benchmark": benchmark,
        "official_policy": official,
        "strict": score_multiple_choice(records, "strict", **kw),
        "official": score_multiple_choice(records, official, **kw),
        "other": {name: score_multiple_choice(records, name, **kw) for name in extras},
        "notes": [],
    }
    if benchmark == "videomme":
        report["notes"] += _videomme_coverage_notes(records)
    return report


def _videomme_coverage_notes(records: Sequence[MCRecord]) -> list[str]:
    """The official script asserts 300 videos (900 questions) per duration class; say when we differ."""
    notes = []
    for duration in sorted({r.duration for r in records if r.duration}):
        n = sum(r.duration == duration for r in records)
        if n != 900:
            notes.append(
                f"duration '{duration}' has {n} questions; the official script expects 900 (300 videos)"
            )
    return notes


def _loads_lenient_json(text: str) -> Any:
    """JSON that tolerates trailing commas (the official Video-MME template has them)."""
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", text))


def load_videomme_results(path: str | Path, *, response_key: str = "response") -> list[MCRecord]:
    """Read a Video-MME results file in the official template layout into :class:`MCRecord` items.

    Layout: ``[{"video_id", "duration", "domain", "sub_category", "questions": [{"question_id",
    "task_type", "question", "options", "answer", response_key}]}]``; trailing commas are accepted.

    Raises:
        AnnotationError: unreadable JSON or a missing key (names the file, the entry and the key).
    """
    path = Path(path)
    try:
        data = _loads_lenient_json(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read Video-MME results JSON: {err}") from err
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a list of videos, got {type(data).__name__}")
    records = []
    for vi, video in enumerate(data):
        try:
            for qi, q in enumerate(video["questions"]):
                where = f"{path}: video {vi} ({video.get('video_id')}) question {qi}"
                for key in ("question_id", "task_type", "options", "answer", response_key):
                    if key not in q:
                        raise AnnotationError(f"{where}: missing key '{key}'")
                records.append(
                    MCRecord(
                        prediction=q[response_key],
                        answer=q["answer"],
                        options=tuple(q["options"]),
                        task=q["task_type"],
                        duration=video["duration"],
                        category=video["domain"],
                        id=q["question_id"],
                    )
                )
        except (KeyError, TypeError) as err:
            raise AnnotationError(f"{path}: video entry {vi}: missing or malformed key {err}") from err
    return records


# ----------------------------------------------------------------------------------------------------
# EgoSchema (public 500-question subset)
# ----------------------------------------------------------------------------------------------------


def load_egoschema_answers(path: str | Path) -> dict[str, int]:
    """``subset_answers.json``: ``{"q_uid": answer_index 0-4}`` for the 500 public questions.

    Raises:
        AnnotationError: unreadable file, not an object, or an index outside 0-4.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read EgoSchema answers JSON: {err}") from err
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected an object {{q_uid: index}}, got {type(data).__name__}")
    for q_uid, idx in data.items():
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx <= 4:
            raise AnnotationError(f"{path}: answer of '{q_uid}' must be an integer 0-4, got {idx!r}")
    return data


def egoschema_subset_report(
    predictions: Mapping[str, str | int | None],
    answers: Mapping[str, int] | str | Path,
    *,
    options: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Score EgoSchema predictions on the public subset (5 options, A-E = 0-4).

    The official protocol scores integer answers (the Kaggle server for the full 5,031 questions, the
    public ``subset_answers.json`` for 500), so "official" here = every subset question in the
    denominator, a missing or unparsable prediction wrong; letters are read with :func:`parse_choice`,
    which makes it equal to "strict". ``other["egoschema_lmms_eval"]`` applies lmms-eval's exact-match rule.
    Predictions outside the subset are ignored and counted in ``"ignored"``.

    Args:
        predictions: ``{q_uid: generated text | answer index}``.
        answers: the subset answers or the path of ``subset_answers.json``.
        options: ``{q_uid: option strings}`` when available (option-text matching, lmms-eval rule).
    """
    gold = load_egoschema_answers(answers) if isinstance(answers, str | Path) else dict(answers)
    records = []
    for q_uid, idx in gold.items():
        pred = predictions.get(q_uid)
        if isinstance(pred, int) and not isinstance(pred, bool):
            pred = LETTERS[pred] if 0 <= pred <= 4 else None
        opts = tuple(options[q_uid]) if options and q_uid in options else None
        records.append(MCRecord(pred, LETTERS[idx], options=opts, id=q_uid))
    report = multiple_choice_report(records, "egoschema", num_options=5)
    report["subset_size"] = len(gold)
    report["missing"] = sum(q not in predictions for q in gold)
    report["ignored"] = sum(q not in gold for q in predictions)
    report["notes"].append(
        "public 500-question subset, generation + letter parsing (not MC-PPL, not full set)"
    )
    return report


# ----------------------------------------------------------------------------------------------------
# Temporal grounding
# ----------------------------------------------------------------------------------------------------

GROUNDING_POLICIES: dict[str, str] = {
    "strict": "vidtempo: first interval, parse_interval for text (time tokens '<t_i> to <t_j>', 100 bins, "
    "read as bin centres when the query has a duration), no swap/clip of given intervals, "
    "unparsable = IoU 0 kept, R1@.3/.5/.7 + mIoU",
    "timechat": "RenShuhuai-Andy/TimeChat metrics/tvg/eval_tvg.py: first predicted interval, empty = miss "
    "kept in the denominator, exact iou >= m, R1@.3/.5/.7 only",
    "vtimellm": "huangb23/VTimeLLM eval/eval.py + metric.py: 'NN to NN' relative indices / 100 vs GT / "
    "duration, IoU rounded to 2 decimals, R1@.3/.5/.7 + mIoU",
}
GROUNDING_BENCHMARKS = {"charades_sta": "timechat", "activitynet_grounding": "timechat"}


@dataclass(frozen=True)
class GroundingRecord:
    """One grounding query to score.

    Attributes:
        gt: ground-truth ``(start, end)`` in seconds.
        prediction: raw text, one ``(start, end)``, a list of intervals (first used) or ``None``.
        duration: video length in seconds (needed by ``vtimellm``).
        id: query id.
    """

    gt: tuple[float, float]
    prediction: Any = None
    duration: float | None = None
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


def first_interval(pred: Any) -> tuple[float, float] | None:
    """The top-1 interval of a prediction: text -> :func:`parse_interval`; ``[[s, e], ...]`` -> first;
    ``[s, e]`` -> itself; ``None`` / ``[]`` -> ``None``. Given intervals are not reordered."""
    if pred is None:
        return None
    if isinstance(pred, str):
        return parse_interval(pred)
    if isinstance(pred, Sequence | np.ndarray) and len(pred) == 0:
        return None
    head = pred[0]
    if isinstance(head, Sequence | np.ndarray) and not isinstance(head, str):
        return (float(head[0]), float(head[1])) if len(head) == 2 else None
    if len(pred) != 2:
        raise ValueError(f"grounding: cannot read an interval from {pred!r}")
    return float(pred[0]), float(pred[1])


def time_token_interval(rec: GroundingRecord, num_bins: int = 100) -> tuple[float, float] | None:
    """A text prediction in time tokens (``"from <t_5> to <t_23>"``, ``answer_time_format: time_tokens`` with
    ``num_bins`` bins) in seconds, using the query's duration; ``None`` without tokens or duration."""
    text = rec.prediction if isinstance(rec.prediction, str) else ""
    if "<t_" not in text or rec.duration is None or not rec.duration > 0:
        return None
    return parse_interval(text, time_tokens=num_bins, duration=rec.duration)


def _vtimellm_iou(rec: GroundingRecord) -> tuple[tuple[float, float] | None, float]:
    if rec.duration is None or not rec.duration > 0:
        raise ValueError(f"grounding (vtimellm): query '{rec.id}' needs a duration > 0")
    text = rec.prediction if isinstance(rec.prediction, str) else None
    pred = parse_interval(text, relative_indices=True) if text else None
    if pred is None:
        return None, 0.0
    gt = (rec.gt[0] / rec.duration, rec.gt[1] / rec.duration)
    return pred, round(temporal_iou(pred, gt), 2)


def score_grounding(records: Iterable[GroundingRecord], policy: str = "strict") -> dict[str, Any]:
    """R1@{0.3,0.5,0.7} (and mIoU where the policy reports it) in percent, with per-item IoUs.

    Args:
        records: the queries.
        policy: a key of :data:`GROUNDING_POLICIES`.

    Returns:
        ``{"policy", "source", "R1@0.3", "R1@0.5", "R1@0.7", ["mIoU"], "n", "unparsed", "items"}``.

    Example:
        >>> recs = [GroundingRecord((0, 10), "from 0 to 5 seconds"), GroundingRecord((0, 10), "no idea")]
        >>> score_grounding(recs)["R1@0.5"], score_grounding(recs)["unparsed"]
        (50.0, 1)
    """
    if policy not in GROUNDING_POLICIES:
        raise ValueError(f"unknown grounding policy {policy!r}; valid: {', '.join(GROUNDING_POLICIES)}")
    records = list(records)
    ious, items = [], []
    for rec in records:
        if policy == "vtimellm":
            pred, iou = _vtimellm_iou(rec)
        else:
            pred = (time_token_interval(rec) if policy == "strict" else None) or first_interval(rec.prediction)
            iou = temporal_iou(pred, rec.gt)
        ious.append(iou)
        items.append({"id": rec.id, "parsed": list(pred) if pred else None, "iou": iou})
    summary = summarize_ious(ious, (0.3, 0.5, 0.7), atol=0.0 if policy != "strict" else IOU_ATOL)
    out: dict[str, Any] = {"policy": policy, "source": GROUNDING_POLICIES[policy]}
    out.update({k: 100.0 * v for k, v in summary.items()})
    if policy == "timechat":
        del out["mIoU"]  # TimeChat's scorer prints R@1 only
    out["n"] = len(records)
    out["unparsed"] = sum(item["parsed"] is None for item in items)
    out["items"] = items
    return out


def grounding_report(records: Iterable[GroundingRecord], benchmark: str = "charades_sta") -> dict[str, Any]:
    """Strict and official grounding scores for ``charades_sta`` or ``activitynet_grounding``."""
    if benchmark not in GROUNDING_BENCHMARKS:
        raise ValueError(
            f"unknown grounding benchmark {benchmark!r}; valid: {', '.join(GROUNDING_BENCHMARKS)}"
        )
    records = list(records)
    official = GROUNDING_BENCHMARKS[benchmark]
    return {
        "benchmark": benchmark,
        "official_policy": official,
        "strict": score_grounding(records, "strict"),
        "official": score_grounding(records, official),
    }


def load_timechat_example(
    pred_path: str | Path, gt_path: str | Path, *, sample: bool = True
) -> list[GroundingRecord]:
    """TimeChat's example files -> records, as ``eval_tvg.py`` pairs them.

    ``gt_path``: ``{"annotations": [{"id", "timestamp": [s, e], "image_id", "caption"}]}``.
    ``pred_path``: ``{"qid": {"timestamp": [[s, e], ...] or [], "query", "vid"}}``. With ``sample=True``
    (``--sample``) only the predicted query ids are scored; otherwise every GT query must have a prediction.

    Raises:
        AnnotationError: unreadable files, missing keys, a predicted id absent from the GT, or (without
            ``sample``) GT ids without predictions.
    """
    gt_path, pred_path = Path(gt_path), Path(pred_path)
    try:
        gt_data = json.loads(gt_path.read_text(encoding="utf-8"))
        pred_data = json.loads(pred_path.read_text(encoding="utf-8"))
        gts = {
            int(a["id"]): (float(a["timestamp"][0]), float(a["timestamp"][1])) for a in gt_data["annotations"]
        }
        preds = {int(q): v["timestamp"] for q, v in pred_data.items()}
    except (OSError, json.JSONDecodeError) as err:
        raise AnnotationError(f"{gt_path} / {pred_path}: cannot read TimeChat files: {err}") from err
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise AnnotationError(f"{gt_path} / {pred_path}: missing or malformed key: {err!r}") from err
    unknown = sorted(set(preds) - set(gts))
    if unknown:
        raise AnnotationError(f"{pred_path}: query ids {unknown[:5]} are not in {gt_path}")
    ids = sorted(preds) if sample else sorted(gts)
    if not sample and len(preds) != len(gts):
        raise AnnotationError(
            f"{pred_path}: {len(preds)} predictions for {len(gts)} GT queries (use sample=True)"
        )
    return [GroundingRecord(gts[i], preds[i], id=str(i)) for i in ids]


# ----------------------------------------------------------------------------------------------------
# Retrieval
# ----------------------------------------------------------------------------------------------------


def clip4clip_metrics(sim: Any) -> dict[str, float]:
    """CLIP4Clip ``metrics.py::compute_metrics`` on a (Q, N) matrix, its tie behaviour included.

    The reference sorts each row, then finds *every* position whose score equals the diagonal one; a row
    with ``k`` tied scores therefore contributes ``k`` ranks ``p, p+1, ..., p+k-1`` (``p`` = number of
    strictly better items) and all R@K, MedianR and MeanR are taken over that longer list. Without ties
    it equals :func:`retrieval_metrics` (either tie policy).
    """
    arr = as_similarity_matrix(sim)
    q = arr.shape[0]
    diag = arr[np.arange(q), np.arange(q)]  # (Q,)
    better = (arr > diag[:, None]).sum(axis=1)
    tied = (arr == diag[:, None]).sum(axis=1)
    ranks0 = np.concatenate([np.arange(b, b + t) for b, t in zip(better, tied)])  # 0-based, >= Q entries
    return rank_summary(ranks0 + 1)


def retrieval_report(sim: Any, text_to_video: Sequence[int] | None = None) -> dict[str, Any]:
    """Strict (pessimistic ties) and official retrieval numbers, both directions.

    One caption per video (``text_to_video=None``, square ``sim``): official = :func:`clip4clip_metrics`.
    Several captions per video: official = optimistic ties (CLIP4Clip's multi-caption path ranks with
    ``argsort``, whose tie order is unspecified; optimistic is its upper bound).

    Returns:
        ``{"strict": {"t2v", "v2t"}, "official": {"t2v", "v2t"}, "official_policy", "optimistic"}``.
    """
    if text_to_video is None:
        arr = as_similarity_matrix(sim)
        if arr.shape[0] != arr.shape[1]:
            raise ValueError(f"retrieval: one caption per video needs a square matrix, got {arr.shape}")
        strict = {d: retrieval_metrics(m, tie="pessimistic") for d, m in (("t2v", arr), ("v2t", arr.T))}
        optimistic = {d: retrieval_metrics(m, tie="optimistic") for d, m in (("t2v", arr), ("v2t", arr.T))}
        official = {d: clip4clip_metrics(m) for d, m in (("t2v", arr), ("v2t", arr.T))}
        policy = "clip4clip_compute_metrics"
    else:
        strict = retrieval_metrics_multi(sim, text_to_video, tie="pessimistic")
        optimistic = retrieval_metrics_multi(sim, text_to_video, tie="optimistic")
        official, policy = optimistic, "optimistic_ties"
    return {"official_policy": policy, "strict": strict, "official": official, "optimistic": optimistic}
