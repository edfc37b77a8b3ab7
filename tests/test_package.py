"""The package itself: version, build mode, public names."""

import tomllib
from pathlib import Path

import ordonum
from ordonum import _core

ROOT = Path(__file__).resolve().parents[1]


def test_version_comes_from_cargo_toml() -> None:
    cargo = tomllib.loads((ROOT / "rust" / "Cargo.toml").read_text())
    assert ordonum.__version__ == cargo["package"]["version"]
    assert _core.__version__ == ordonum.__version__


def test_public_names_are_exported() -> None:
    for name in ordonum.__all__:
        assert getattr(ordonum, name) is not None, name
