"""generate(): determinism, manifest, interrupt / re-run safety and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidtempo.cli import data as data_cli
from vidtempo.synth import render
from vidtempo.synth.generate import Manifest, assign_splits, generate, split_counts
from vidtempo.synth.render import is_valid_video

TINY = {"num_videos": 4, "seed": 3, "size": 32, "fps": 8, "min_duration": 6, "max_duration": 8,
        "progress": False}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", **TINY)
    generate(tmp_path / "b", **TINY, workers=2)  # rendered in two processes: the same bytes
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 4 + 3 * 8 + 1
    assert a == b  # annotations, manifest and (x264 single-threaded) mp4 bytes
    generate(tmp_path / "c", **{**TINY, "seed": 4})
    c = _files(tmp_path / "c")
    assert c["annotations/train/scripts.json"] != a["annotations/train/scripts.json"]


def test_manifest(small_set: Manifest) -> None:
    m = Manifest.load(small_set.root)
    assert m.seed == 7 and m.params["num_videos"] == 12 and m.params["size"] == 64
    assert {k: len(v) for k, v in m.splits.items()} == {"train": 10, "val": 1, "test": 1}
    ids = [v for vs in m.splits.values() for v in vs]
    assert sorted(ids) == sorted(m.scripts()) and len(set(ids)) == 12
    assert list(m.scripts("test")) == m.splits["test"]
    assert all((m.root / f).is_file() for f in m.files["videos"])
    assert all((m.root / f).is_file() for kinds in m.files["annotations"].values() for f in kinds.values())
    with pytest.raises(KeyError, match="no annotation 'nope'"):
        m.annotation_path("test", "nope")
    with pytest.raises(ValueError, match="not a TempoSynth manifest"):
        Manifest.load(m.root / "videos")


def test_rerun_keeps_finished_videos_and_repairs_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "set"
    first = generate(root, **TINY)
    assert first.stats == {"rendered": 4, "kept": 0, "removed_temp_files": 0}
    before = _files(root)
    vids = sorted((root / "videos").glob("*.mp4"))
    kept_mtime = vids[0].stat().st_mtime_ns
    vids[1].unlink()  # never finished
    vids[2].write_bytes(vids[2].read_bytes()[:500])  # half-written (e.g. copied by hand, disk full)
    vids[3].write_bytes(vids[0].read_bytes())  # a valid mp4 of another script
    leftover = root / "videos" / ".ts000001.12345.tmp.mp4"
    leftover.write_bytes(b"partial")
    second = generate(root, **TINY)
    assert second.stats == {"rendered": 3, "kept": 1, "removed_temp_files": 1}
    assert not leftover.exists() and vids[0].stat().st_mtime_ns == kept_mtime
    assert _files(root) == before
    third = generate(root, **TINY)
    assert third.stats == {"rendered": 0, "kept": 4, "removed_temp_files": 0}


def test_interrupted_run_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "set"
    real_encode = render.encode_mp4
    calls = []

    def flaky_encode(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # Ctrl-C in the middle of writing the second video
            Path(path).write_bytes(b"half a video")
            raise KeyboardInterrupt
        return real_encode(path, *args, **kwargs)

    monkeypatch.setattr(render, "encode_mp4", flaky_encode)
    with pytest.raises(KeyboardInterrupt):
        generate(root, **TINY)
    names = sorted(p.name for p in (root / "videos").iterdir())
    assert names == ["ts000000.mp4"] and not (root / "manifest.json").exists()
    assert Path(calls[1]).parent == root / "videos" and Path(calls[1]).name.startswith(".")
    monkeypatch.setattr(render, "encode_mp4", real_encode)
    m = generate(root, **TINY)
    assert m.stats["kept"] == 1 and m.stats["rendered"] == 3
    scripts = m.scripts()
    assert all(is_valid_video(m.video_path(v), s, size=32) for v, s in scripts.items())


def test_split_counts_and_assignment() -> None:
    assert split_counts(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert split_counts(3, (0.8, 0.1, 0.1)) == [1, 1, 1]
    assert split_counts(2, (0.8, 0.1, 0.1)) == [2, 0, 0]
    assert split_counts(1000, (0.8, 0.1, 0.1)) == [800, 100, 100]
    assert split_counts(7, (0.0, 0.0, 1.0)) == [0, 0, 7]
    with pytest.raises(ValueError, match="summing to 1"):
        split_counts(10, (0.5, 0.1, 0.1))
    a = assign_splits(50, 0, (0.8, 0.1, 0.1))
    assert sorted(sum(a.values(), [])) == list(range(50)) and a == assign_splits(50, 0, (0.8, 0.1, 0.1))
    assert a != assign_splits(50, 1, (0.8, 0.1, 0.1))


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_videos"):
        generate(tmp_path, **{**TINY, "num_videos": 0})
    with pytest.raises(ValueError, match="size must be an even integer"):
        generate(tmp_path, **{**TINY, "size": 30 + 1})
    with pytest.raises(ValueError, match="min_duration"):
        generate(tmp_path, **{**TINY, "min_duration": 9})


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["synth", "--out", str(out), "--num-videos", "3", "--seed", "2", "--size", "32",
            "--max-duration", "6", "--no-progress"]
    assert data_cli.main(argv) == 0
    assert "3 videos" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 2 and manifest["params"]["max_duration"] == 6.0
    assert data_cli.main([*argv[:-1], "--size", "33"]) == 2
    assert "size must be an even integer" in capsys.readouterr().err
