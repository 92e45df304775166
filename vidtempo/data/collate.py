"""Collation: decode each sample's frames (and audio), tokenise its conversation, pad into a batch.

Runs inside DataLoader workers, so decoding happens in parallel with the model. A sample whose video
cannot be decoded is skipped and recorded in ``batch.skipped`` (path and reason); nothing is substituted.
The skip tracker of the objective logs each skip (the collator does not). The collator also reports what
would otherwise pass silently: clips without an audio track in an audio recipe (``batch.no_audio``, warned
about once per process), intervals past the end of the video (``batch.past_end``, logged once per record),
and over-long samples (``data.overlong``: ``vidtempo.data.overlong``).

Example:
    >>> from vidtempo.models.tokenizers import tiny_tokenizer
    >>> collate = VideoCollator(tiny_tokenizer(), num_frames=4, frame_size=32)
    >>> collate.frame_size
    (32, 32)
"""

from __future__ import annotations

import copy
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from vidtempo.data.chat import IGNORE_INDEX, ChatEncoder, first_user_text
from vidtempo.data.errors import VideoDecodeError
from vidtempo.data.inputs import VideoInputs
from vidtempo.data.overlong import LengthLimit
from vidtempo.data.samples import ConversationSample
from vidtempo.data.targets import TargetBuilder

log = logging.getLogger(__name__)


@dataclass
class SkipRecord:
    """A sample left out of a batch, and why."""

    id: str
    path: str
    reason: str


@dataclass
class VideoTextBatch:
    """A padded batch. B samples, L text tokens, T frames, S audio samples.

    Attributes:
        input_ids: (B, L) long; the video placeholder is ``VIDEO_TOKEN_INDEX``; right-padded.
        attention_mask: (B, L) long.
        labels: (B, L) long, ``IGNORE_INDEX`` except assistant turns.
        frames: (B, T, 3, H, W) uint8 0-255, normalised by the model's encoders on the device
            (``vidtempo.data.inputs.unit_pixels``); padded frames are zeros. With ``clip_index``: (U, T, 3, H, W),
            one per distinct clip of the batch.
        frame_mask: (B, T) bool, True = real frame (always one row per sample).
        timestamps: (B, T) float32 seconds of each frame.
        audio: (B, S) float32 mono waveform (or (B, n_mels, F) log-mel) or None; (U, ...) with ``clip_index``.
        audio_lengths: (B,) long valid samples per row (0 = no audio track) or None; (U,) with ``clip_index``.
        clip_index: (B,) long, row b's clip in ``frames`` / ``audio`` / ``features``, only with
            ``VideoCollator(share_clips=True)`` (several questions about one clip in a batch); None = one
            clip per row.
        queries: first user turn of each sample (for query-aware compressors).
        ids: sample ids. skipped: samples left out of this batch.
        no_audio: how many rows of an audio batch (``VideoCollator(audio=True)``) have a video without an audio
            track (their audio is silence); 0 when the collator reads no audio.
        past_end: ids of the rows whose clip bounds or ``meta["timestamps"]`` end after their video does.
        features: (B, T, P, D) cached encoder features (then ``frames`` is None) and their patch ``grid``.
        targets: per-frame training targets by name, each (B, T, C) float (1.0 / 0.0, NaN = unknown), from
            the collator's target builders (``VideoCollator(targets={...})``, ``vidtempo.data.targets``).
        packing: with ``data.packing``, the most tokens per packed LLM row (``vidtempo.data.packing``); passed to
            the model by :meth:`model_inputs`. None = padded rows.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    frames: torch.Tensor | None
    frame_mask: torch.Tensor | None
    timestamps: torch.Tensor | None
    audio: torch.Tensor | None = None
    audio_lengths: torch.Tensor | None = None
    queries: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    skipped: list[SkipRecord] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)
    features: torch.Tensor | None = None
    grid: tuple[int, int] | None = None
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    clip_index: torch.Tensor | None = None
    no_audio: int = 0
    past_end: list[str] = field(default_factory=list)
    packing: int | None = None

    # never cast by a ``bf16-true`` precision plugin (vidtempo.training.precision): spacing of bf16 at long-video
    # magnitudes is seconds, and audio / targets are read in fp32
    fp32_fields: ClassVar[tuple[str, ...]] = ("timestamps", "audio", "targets")

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def video_inputs(self) -> VideoInputs | None:
        """The video side of the batch as one object (None for a text-only batch)."""
        if self.frames is None and self.features is None:
            return None
        return VideoInputs(
            frames=self.frames if self.features is None else None, frame_mask=self.frame_mask,
            timestamps=self.timestamps, features=self.features, grid=self.grid, audio=self.audio,
            audio_lengths=self.audio_lengths, queries=self.queries, clip_index=self.clip_index,
        )  # fmt: skip

    def model_inputs(self, with_labels: bool = True) -> dict[str, Any]:
        """Keyword arguments for ``VideoModel.forward`` / ``generate``: the text tensors and ``video``."""
        out: dict[str, Any] = {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                               "video": self.video_inputs()}  # fmt: skip
        if with_labels:
            out["labels"] = self.labels
        if self.packing is not None and with_labels:  # training forwards only (generate has no packing)
            out["packing"] = self.packing
        return out

    def to(self, device: torch.device | str) -> VideoTextBatch:
        """A copy on ``device``: every tensor field, every target, and any tensor attribute a custom collator
        added (e.g. ``batch.answer_tokens``) moves; other values are shared."""
        moved = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(moved, name, value.to(device, non_blocking=value.is_pinned()))
        moved.targets = {k: v.to(device, non_blocking=v.is_pinned()) for k, v in self.targets.items()}
        return moved

    def pin_memory(self) -> VideoTextBatch:
        """A copy in page-locked memory (``DataLoader(pin_memory=True)`` calls it): the copy to the GPU is then
        asynchronous (``to`` passes ``non_blocking``)."""
        pinned = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(pinned, name, value.pin_memory())
        pinned.targets = {k: v.pin_memory() for k, v in self.targets.items()}
        return pinned


@dataclass
class DecodedVideo:
    frames: torch.Tensor  # (T, 3, H, W) uint8 0-255 (float (T, P, D) features from the feature cache)
    timestamps: torch.Tensor  # (T,)
    audio: torch.Tensor | None  # (S,) waveform, or (n_mels, F) log-mel when the collator's audio_mel is set
    audio_length: int | None = None  # waveform samples behind a log-mel (a waveform's own length is len(audio))
    duration: float | None = None  # seconds of the whole video file (None: unknown, e.g. cached features)

    def audio_samples(self) -> int:
        """Valid audio samples (0 without an audio track)."""
        if self.audio is None:
            return 0
        return self.audio_length if self.audio_length is not None else int(self.audio.shape[-1])


class VideoCollator:
    """Decode + tokenise + pad.

    Args:
        tokenizer: transformers tokenizer with a chat template.
        num_frames / fps / max_frames: frame sampling (see ``vidtempo.data.video.load_clip``).
        frame_size: every frame is resized to this (H, W) (int = square) so frames stack.
        backend: video decoder alias.
        audio: also decode the audio track (16 kHz mono; a file without audio gives length 0).
        audio_mel: when set, turn each clip's audio into Whisper's log-mel with this many bins here, once per
            clip (cached with the frames, computed in the DataLoader worker), and hand the model
            ``batch.audio`` (B, audio_mel, F) instead of the waveform. For audio encoders that accept log-mel
            input (``mel_cnn`` with the same ``n_mels``); on a 2-core CPU it takes the STFT off the training
            step (docs/data.md, "Audio").
        system_prompt: system turn added when a conversation has none.
        max_text_tokens: text longer than this is over-long (``overlong`` decides: by default an error naming the
            record).
        overlong: ``error``, ``skip`` or ``truncate`` a sample longer than ``max_length`` (recipe key
            ``data.overlong``, injected by the trainer; ``vidtempo.data.overlong``).
        max_length / video_tokens: the model's context and its video tokens per clip (an upper bound),
            injected by the trainer; None = the length is not checked here (the model still checks).
        generation: render prompts for generation (drop the final assistant turn, add the generation
            prompt) instead of teacher forcing.
        cache_decoded: keep up to this many decoded clips in memory (per worker process), keyed by file,
            modification time, clip bounds and sampling settings; 0 = off. For small data sets re-read
            every epoch (several questions per video, tiny recipes).
        clip_store: folder of decoded clips shared by processes (``vidtempo.data.clip_store``): a clip is
            decoded once by whichever process needs it first and read back by the others (DDP ranks and their
            workers, a resumed run); None = off. Under ``cache_decoded``, each process reads a clip once.
        feature_cache: folder written by ``vidtempo cache``; when every sample of a batch has an entry for
            this encoder (``encoder_id``, injected by the trainer), the batch carries features, not frames.
        video_position: ``keep`` the ``<video>`` placeholder where the data puts it, or move it ``after_text``
            of its turn (question first, so the video tokens can attend to it).
        targets: per-frame target builders by name (``TargetBuilder`` objects or recipe nodes
            ``{_target_: event_tags, ...}``, registry kind ``target_builder``); each fills
            ``batch.targets[name]`` (B, T, C), read by auxiliary losses (``vidtempo.training.auxiliary``).
        share_clips: decode and stack each distinct clip of a batch once (``batch.frames`` (U, ...) and
            ``batch.clip_index``); for batches of several questions per clip
            (``vidtempo.data.grouping.VideoGroupedBatchSampler``, recipe key ``data.group_by_video``).
        share_by: with ``share_clips``, which rows share a clip: ``clip`` (every row of it) or ``sample``
            (only rows that also have the same sample id: a multiple-choice item's options, whose clip the
            eval's time control permutes per item).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        num_frames: int | None = 8,
        fps: float | None = None,
        max_frames: int | None = None,
        frame_size: int | tuple[int, int] = 224,
        backend: str = "pyav",
        audio: bool = False,
        audio_mel: int | None = None,
        sample_rate: int = 16000,
        system_prompt: str | None = None,
        max_text_tokens: int | None = None,
        overlong: str = "error",
        max_length: int | None = None,
        video_tokens: int | None = None,
        generation: bool = False,
        cache_decoded: int = 0,
        clip_store: str | None = None,
        feature_cache: str | None = None,
        encoder_id: str | None = None,
        video_position: str = "keep",
        targets: dict[str, Any] | None = None,
        share_clips: bool = False,
        share_by: str = "clip",
    ) -> None:
        self.tokenizer = tokenizer
        self.chat = ChatEncoder(tokenizer, system_prompt=system_prompt, video_position=video_position)
        self.limit = LengthLimit(overlong, max_length, max_text_tokens, int(video_tokens or 0))
        self._reported: set[tuple[str, str]] = set()  # (what, record) already logged by this process
        self.num_frames, self.fps, self.max_frames = num_frames, fps, max_frames
        self.frame_size = (frame_size, frame_size) if isinstance(frame_size, int) else tuple(frame_size)
        self.backend = backend
        self.audio = audio
        self.audio_mel = int(audio_mel) if audio_mel else None
        if self.audio_mel and not audio:
            raise ValueError("audio_mel needs audio: true (there is no audio track to turn into log-mel)")
        self.sample_rate = sample_rate
        self.generation = generation
        self.cache_decoded = cache_decoded
        self._cache: OrderedDict[tuple, DecodedVideo] = OrderedDict()
        self.clip_store = str(clip_store) if clip_store else None
        self.feature_cache = feature_cache
        self.encoder_id = encoder_id
        self.targets = build_targets(targets)
        self.share_clips = share_clips
        if share_by not in ("clip", "sample"):
            raise ValueError(f"share_by must be 'clip' or 'sample', got {share_by!r}")
        self.share_by = share_by
        if feature_cache and not encoder_id:
            raise ValueError("feature_cache needs the encoder_id of the frozen vision encoder")

    def sampling_settings(self) -> dict[str, Any]:
        """What decides which pixels a clip has (part of every feature-cache key)."""
        return {"num_frames": self.num_frames, "fps": self.fps, "max_frames": self.max_frames,
                "frame_size": list(self.frame_size), "backend": self.backend}  # fmt: skip

    def cache_key(self, sample: ConversationSample) -> str:
        from vidtempo.data.feature_cache import FeatureCache

        assert sample.video is not None and self.feature_cache and self.encoder_id
        return FeatureCache(self.feature_cache).key(video=sample.video, settings=self.sampling_settings(),
                                                    encoder_id=self.encoder_id, start=sample.start, end=sample.end)

    def _cached_features(self, samples: list[ConversationSample]) -> list[Any] | None:
        """Every sample's cached features, or None when any is missing (then the batch decodes pixels)."""
        if not self.feature_cache or not samples or any(s.video is None for s in samples):
            return None
        from vidtempo.data.feature_cache import FeatureCache

        cache = FeatureCache(self.feature_cache)
        entries = [cache.get(self.cache_key(s)) for s in samples]
        if any(e is None for e in entries):
            log.info("feature cache miss in a batch: decoding pixels (run `vidtempo cache` to fill it)")
            return None
        return entries

    # ------------------------------------------------------------------ decoding
    def decode(self, sample: ConversationSample) -> DecodedVideo:
        """Decoded frames (and audio) of one sample, through the in-memory cache when enabled."""
        if not self.cache_decoded:
            return self._decode(sample)
        assert sample.video is not None
        key = (sample.video, os.path.getmtime(sample.video) if os.path.exists(sample.video) else None,
               sample.audio, sample.start, sample.end)  # fmt: skip
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        video = self._decode(sample)
        self._cache[key] = video
        if len(self._cache) > self.cache_decoded:
            self._cache.popitem(last=False)
        return video

    def _decode(self, sample: ConversationSample) -> DecodedVideo:
        """Decode one clip, or read it from the clip store (``clip_store``) when another process decoded it."""
        assert sample.video is not None
        if self.clip_store is None:
            return as_decoded(self._decode_raw(sample))
        from vidtempo.data.clip_store import ClipStore

        store = ClipStore(self.clip_store)
        settings = {**self.sampling_settings(), "audio": self.audio, "sample_rate": self.sample_rate,
                    "audio_mel": self.audio_mel}  # fmt: skip
        key = store.key(video=sample.video, audio=sample.audio, start=sample.start, end=sample.end, settings=settings)
        stored = store.get(key)
        if stored is None:
            stored = self._decode_raw(sample)
            store.put(key, stored)
        return as_decoded(stored)

    def _decode_raw(self, sample: ConversationSample) -> Any:
        """The clip as decoded (``vidtempo.data.clip_store.StoredClip``: uint8 frames)."""
        from vidtempo.data.clip_store import StoredClip
        from vidtempo.data.video import load_clip

        assert sample.video is not None
        clip = load_clip(
            sample.video, num_frames=self.num_frames, fps=self.fps, max_frames=self.max_frames,
            start=sample.start, end=sample.end, size=self.frame_size, backend=self.backend,
        )  # fmt: skip
        audio, length = self._audio_of(sample) if self.audio else (None, None)
        return StoredClip(clip.frames, torch.as_tensor(clip.timestamps, dtype=torch.float32), audio, length,
                          float(clip.video_duration))  # fmt: skip

    def _decode_audio(self, sample: ConversationSample) -> torch.Tensor:
        from vidtempo.data.audio import load_audio

        wave, _ = load_audio(sample.audio or sample.video, sr=self.sample_rate, start=sample.start, end=sample.end)
        return torch.from_numpy(wave)

    def _audio_of(self, sample: ConversationSample) -> tuple[torch.Tensor, int | None]:
        """The clip's audio as the batch carries it, and (log-mel only) the samples behind it."""
        wave = self._decode_audio(sample)  # (S,)
        if not self.audio_mel:
            return wave, None  # the waveform's length is its own
        from vidtempo.data.log_mel import MIN_SAMPLES, log_mel_spectrogram

        padded = torch.nn.functional.pad(wave, (0, max(0, MIN_SAMPLES - len(wave))))  # silence, for the STFT
        return log_mel_spectrogram(padded[None], self.audio_mel)[0], len(wave)  # (n_mels, F)

    # ------------------------------------------------------------------ batching
    def __call__(self, samples: list[Any]) -> VideoTextBatch:
        kept: list[tuple[ConversationSample, DecodedVideo | None, list[int], list[int]]] = []
        skipped: list[SkipRecord] = []
        convs = [as_conversation(raw) for raw in samples]
        cached = self._cached_features(convs)
        seen: dict[tuple, DecodedVideo] = {}  # one decode per clip of the batch
        for i, sample in enumerate(convs):
            try:
                if cached is not None:
                    video = DecodedVideo(cached[i].feats, cached[i].timestamps, None)
                elif sample.video:
                    key = (sample.video, sample.audio, sample.start, sample.end)
                    if key not in seen:
                        seen[key] = self.decode(sample)
                    video = seen[key]
                else:
                    video = None
            except VideoDecodeError as err:  # logged once by the objective's skip tracker
                skipped.append(SkipRecord(sample.id, err.path, err.reason))
                continue
            fitted = self._encode(sample, has_video=video is not None)
            if fitted.reason is not None:
                skipped.append(SkipRecord(sample.id, sample.video or "", f"over-long: {fitted.reason}"))
                continue
            kept.append((sample, video, fitted.ids, fitted.labels))
        batch = self._pad(kept, skipped)
        if cached is not None:  # frames slots hold (T, P, D) features: move them to `features`
            batch.features, batch.frames, batch.grid = batch.frames, None, cached[0].grid
        batch.no_audio = self._count_no_audio(kept)
        batch.past_end = [k[0].id for k in kept if k[1] is not None and self._past_end(k[0], k[1])]
        return batch

    def _encode(self, sample: ConversationSample, has_video: bool) -> Any:
        """The sample's tokens after the length check (``vidtempo.data.overlong.Fitted``)."""
        messages = sample.messages
        if self.generation and messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        ids, labels = self.chat.encode(messages, generation_prompt=self.generation, sample_id=sample.id)
        fitted = self.limit.fit(ids, labels, has_video=has_video, record=record_name(sample))
        if fitted.truncated and self._first_time("truncated", sample.id):
            log.warning("%s: over-long, answer cut to %d tokens (data.overlong: truncate)", record_name(sample),
                        len(fitted.ids))  # fmt: skip
        return fitted

    def _first_time(self, what: str, record: str) -> bool:
        """True once per (what, record) in this process: each problem is logged once, not every epoch."""
        if (what, record) in self._reported:
            return False
        self._reported.add((what, record))
        return True

    def _count_no_audio(self, kept: list[Any]) -> int:
        """Rows with a video but no audio track in an audio batch; the first one is warned about."""
        if not self.audio:
            return 0
        silent = [k[0] for k in kept if k[1] is not None and k[1].audio is not None and k[1].audio_samples() == 0]
        if silent and self._first_time("no_audio", ""):
            log.warning("%s has no audio track: its audio is silence (data.collator.audio is true; counted as "
                        "train/no_audio, warned once)", record_name(silent[0]))  # fmt: skip
        return len(silent)

    def _past_end(self, sample: ConversationSample, video: DecodedVideo) -> bool:
        """Whether the clip bounds or ``meta["timestamps"]`` end after the video (logged once per record)."""
        if video.duration is None:
            return False
        ends = [sample.end or 0.0, *_numbers(sample.meta.get("timestamps"))]
        last = max(ends)
        if last <= video.duration + PAST_END_TOLERANCE:
            return False
        if self._first_time("past_end", sample.id):
            log.warning("%s: an interval ends at %.2f s, after the video's end (%.2f s)", record_name(sample), last,
                        video.duration)  # fmt: skip
        return True

    def _pad(self, kept: list[Any], skipped: list[SkipRecord]) -> VideoTextBatch:
        b = len(kept)
        longest = max((len(k[2]) for k in kept), default=0)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((b, longest), pad_id, dtype=torch.long)
        attention = torch.zeros((b, longest), dtype=torch.long)
        labels = torch.full((b, longest), IGNORE_INDEX, dtype=torch.long)
        for i, (_, _, ids, lab) in enumerate(kept):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            labels[i, : len(lab)] = torch.tensor(lab)
        videos, clip_index = [k[1] for k in kept], None
        if self.share_clips:
            videos, clip_index = distinct_clips(videos, [k[0].id for k in kept] if self.share_by == "sample" else None)
        frames, frame_mask, times = self._pad_frames(videos)
        audio, audio_len = self._pad_audio(videos) if self.audio else (None, None)
        if clip_index is not None and frame_mask is not None:
            frame_mask, times = frame_mask[clip_index], times[clip_index]  # (B, T): per row again
        targets = {}
        if times is not None:
            targets = {name: build([k[0] for k in kept], times, frame_mask) for name, build in self.targets.items()}
        return VideoTextBatch(
            input_ids=input_ids, attention_mask=attention, labels=labels, frames=frames,
            frame_mask=frame_mask, timestamps=times, audio=audio, audio_lengths=audio_len,
            queries=[first_user_text(k[0].messages) for k in kept], ids=[k[0].id for k in kept],
            skipped=skipped, meta=[k[0].meta for k in kept], targets=targets,
            clip_index=clip_index if frames is not None else None,
        )  # fmt: skip

    def _pad_frames(self, videos: list[DecodedVideo | None]) -> tuple[Any, Any, Any]:
        if not any(v is not None for v in videos):
            return None, None, None
        present = [v for v in videos if v is not None]
        t = max(v.frames.shape[0] for v in present)
        frames = present[0].frames.new_zeros(len(videos), t, *present[0].frames.shape[1:])
        mask = torch.zeros(len(videos), t, dtype=torch.bool)
        times = torch.zeros(len(videos), t)
        for i, v in enumerate(videos):
            if v is None:
                continue
            n = v.frames.shape[0]
            frames[i, :n], mask[i, :n], times[i, :n] = v.frames, True, v.timestamps
        return frames, mask, times

    def _pad_audio(self, videos: list[DecodedVideo | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) waveforms padded with silence, or (B, n_mels, F) log-mel padded with each row's floor."""
        empty = torch.zeros(self.audio_mel, 0) if self.audio_mel else torch.zeros(0)
        tracks = [v.audio if v is not None and v.audio is not None else empty for v in videos]
        lengths = torch.tensor([v.audio_samples() if v is not None else 0 for v in videos], dtype=torch.long)
        width = max([t.shape[-1] for t in tracks] + [1])
        out = torch.zeros(len(tracks), *empty.shape[:-1], width)
        for i, t in enumerate(tracks):
            if self.audio_mel and t.numel():
                out[i] = t.amin()  # the clamp floor: what silence gives after Whisper's normalisation
            out[i, ..., : t.shape[-1]] = t
        return out, lengths


def as_decoded(clip: Any) -> DecodedVideo:
    """A decoded clip (``StoredClip``: (T, H, W, 3) uint8 frames) as the batch carries it: (T, 3, H, W) uint8."""
    frames = clip.frames.permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W) uint8: normalised on the device
    return DecodedVideo(frames, clip.timestamps, clip.audio, clip.audio_length, duration=clip.duration)


PAST_END_TOLERANCE = 0.25  # seconds: container durations and annotations disagree by a frame or two


def record_name(sample: ConversationSample) -> str:
    """``record 'ID' of FILE`` (the annotation file from ``meta["source"]`` when it names one, else the video).

    Example:
        >>> record_name(ConversationSample(video="v.mp4", messages=[], id="7", meta={"source": "train.json"}))
        "record '7' of train.json"
    """
    source = sample.meta.get("source") if isinstance(sample.meta, dict) else None
    where = source if source and ("/" in str(source) or "." in str(source)) else sample.video
    return f"record '{sample.id}'" + (f" of {where}" if where else "")


def _numbers(value: Any) -> list[float]:
    """Every number in a (nested) list of numbers; [] for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    return []


def build_targets(nodes: dict[str, Any] | None) -> dict[str, TargetBuilder]:
    """Target builders by name from built objects or recipe nodes (``data.collator.targets``)."""
    from vidtempo.config.instantiate import instantiate

    out = {}
    for name, node in (nodes or {}).items():
        builder = instantiate(node, key=f"data.collator.targets.{name}") if isinstance(node, dict) else node
        if not isinstance(builder, TargetBuilder):
            raise ValueError(f"data.collator.targets.{name}: expected a TargetBuilder (vidtempo.data.targets), "
                             f"got {type(builder).__name__}")  # fmt: skip
        out[name] = builder
    return out


def distinct_clips(videos: list[DecodedVideo | None], groups: list[str] | None = None
                   ) -> tuple[list[DecodedVideo | None], torch.Tensor]:  # fmt: skip
    """The distinct decoded clips of a batch (the same object = the same clip; each ``None`` is its own) and
    (B,) the index of each row's clip among them. ``groups`` (one per row): rows share a clip only within
    one group."""
    order: dict[tuple[int, str | None], int] = {}
    unique: list[DecodedVideo | None] = []
    index = []
    for i, video in enumerate(videos):
        key = (id(video) if video is not None else -1 - i, groups[i] if groups is not None else None)
        if key not in order:
            order[key] = len(unique)
            unique.append(video)
        index.append(order[key])
    return unique, torch.tensor(index, dtype=torch.long)


def as_conversation(sample: Any) -> ConversationSample:
    """Accept a ConversationSample or anything with a ``to_conversation()`` method."""
    if isinstance(sample, ConversationSample):
        return sample
    convert = getattr(sample, "to_conversation", None)
    if convert is None:
        raise TypeError(f"cannot collate a {type(sample).__name__}: expected ConversationSample")
    return convert()
