"""Registry: aliases, dotted paths, plugins via entry points, helpful errors, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from vidtempo.registry import Registry, RegistryError, get_registry, kinds


def test_every_kind_named_in_the_issue_has_a_table():
    expected = {"vision_encoder", "audio_encoder", "compressor", "projector", "llm", "objective", "dataset",
                "decoder"}
    assert expected <= set(kinds())


def test_alias_and_dotted_path_resolve_to_the_same_class():
    from vidtempo.models.compressors.pooling import SpatialPoolCompressor

    reg = get_registry("compressor")
    assert reg.resolve("pool") is SpatialPoolCompressor
    assert reg.resolve("vidtempo.models.compressors.pooling.SpatialPoolCompressor") is SpatialPoolCompressor


def test_unknown_alias_names_kind_choices_and_close_match():
    with pytest.raises(RegistryError) as info:
        get_registry("compressor").resolve("poool")
    msg = str(info.value)
    assert "unknown compressor 'poool'" in msg and "Did you mean 'pool'" in msg and "tdc" in msg


def test_duplicate_alias_is_an_error_unless_overridden():
    reg = Registry("widget")
    reg.add("a", "json:dumps")
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("a", "json:loads")
    reg.add("a", "json:loads", override=True)
    import json

    assert reg.resolve("a") is json.loads


def test_entry_point_plugins_are_listed_and_resolved(monkeypatch):
    import vidtempo.registry as registry

    def fake_entry_points(group: str):
        if group == "vidtempo.widget":
            return [EntryPoint(name="dumper", value="json:dumps", group=group)]
        return []

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    reg = Registry("widget")
    assert "dumper" in reg.names()
    import json

    assert reg.resolve("dumper") is json.dumps


def test_importing_vidtempo_and_building_the_cli_imports_no_model_code():
    code = (
        "import sys, vidtempo, vidtempo.registry, vidtempo.models, vidtempo.data, vidtempo.cli.main;"
        "vidtempo.cli.main.build_parser();"
        "heavy = [m for m in ('torch', 'transformers', 'lightning', 'timm', 'peft') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
