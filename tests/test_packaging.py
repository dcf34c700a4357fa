"""Packaging: every package folder ships, and recipes are found from the installed package."""

import tomllib
from pathlib import Path

from avssl.config import available_recipes

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_folder():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("avssl", "datamodules")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found | {"avssl.recipes"} == listed


def test_every_recipe_file_is_reachable_by_name():
    on_disk = {p.stem for p in (ROOT / "recipes").glob("*.yaml")}
    assert on_disk == set(available_recipes())
