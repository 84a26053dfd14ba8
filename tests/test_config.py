"""Stage configs <-> CLI flags and YAML."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from genrec.config import add_config_args, config_from_args, from_dict, load_yaml, to_dict


@dataclass
class Inner:
    width: int = 7        # how wide
    name: str | None = None  # optional name


@dataclass
class Outer:
    ratio: float = 0.5          # a ratio
    flag: bool = False          # a switch
    sizes: tuple[int, ...] = (5, 7)  # per level
    inner: Inner = field(default_factory=Inner)
    items: tuple[Inner, ...] = ()   # YAML only


def _parse(argv, yaml_path=None):
    p = argparse.ArgumentParser()
    add_config_args(p, Outer)
    return config_from_args(Outer, p.parse_args(argv), yaml_path)


def test_flags_override_defaults_and_nest():
    cfg = _parse(["--ratio", "0.25", "--flag", "true", "--sizes", "3,11",
                  "--inner.width", "13", "--inner.name", "none"])
    assert cfg == Outer(ratio=0.25, flag=True, sizes=(3, 11), inner=Inner(width=13, name=None))


@pytest.mark.parametrize("text, want", [("3,11", (3, 11)), ("[3, 11]", (3, 11)), ("[3]", (3,)), ("[]", ())])
def test_list_flags_take_commas_or_a_yaml_list(text, want):
    assert _parse(["--sizes", text]).sizes == want


def test_a_list_flag_that_is_not_a_list_is_refused(capsys):
    with pytest.raises(SystemExit):
        _parse(["--sizes", "[3, 11"])
    assert "--sizes" in capsys.readouterr().err


def test_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ratio: 0.1\ninner: {width: 3}\nitems: [{width: 1}, {width: 2, name: b}]\n")
    cfg = _parse(["--inner.width", "4"], path)
    assert cfg.ratio == 0.1 and cfg.inner.width == 4 and cfg.items == (Inner(1), Inner(2, "b"))
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_unknown_field_and_bad_yaml_are_explained(tmp_path):
    with pytest.raises(ValueError, match="unknown field.*ratoi.*valid fields"):
        from_dict(Outer, {"ratoi": 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml:"):
        load_yaml(bad)


def test_help_text_comes_from_field_comments():
    p = argparse.ArgumentParser()
    add_config_args(p, Outer)
    text = p.format_help()
    assert "how wide" in text and "--inner.width" in text and "--items" not in text
