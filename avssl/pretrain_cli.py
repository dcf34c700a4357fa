"""The options of ``python -m avssl.pretrain`` besides ``key=value``: help, listings, the resolved config.

Every text here is derived from what it describes: the config sections from the `PretrainConfig`
schema, the recipes from the shipped YAML files, the backbones from their registries.
"""

from __future__ import annotations

import inspect
import textwrap
from dataclasses import fields

from avssl.backbones.registry import list_backbones, preset_spec
from avssl.backbones.sizes import BACKBONE_SIZES
from avssl.config import PretrainConfig, available_recipes, load_config, recipe_text, to_yaml
from avssl.errors import ConfigError

OPTIONS = {
    "--help": "show this help and exit (also -h)",
    "--list-recipes": "list the shipped recipes (recipe=NAME) and exit",
    "--list-presets": "list the backbone presets (backbone.preset=NAME) and sizes (backbone.size=NAME) and exit",
    "--print-config": "print the resolved, validated config of the recipe and overrides as YAML and exit",
}
_ALIASES = {"-h": "--help"}

DOCS = ("docs/getting-started.md (a first run), docs/recipes.md (every config key), docs/data.md (sources),\n"
        "  docs/backbones.md, docs/objectives.md; README.md lists them all")


def split_options(args: list[str]) -> tuple[str | None, list[str]]:
    """The option given (None: train) and the ``key=value`` arguments; ``--help`` wins over others.

    Raises:
        ConfigError: an unknown option, or two options that each exit (e.g. --list-recipes --print-config).
    """
    options, rest = [], []
    for arg in args:
        if not arg.startswith("-"):
            rest.append(arg)
            continue
        option = _ALIASES.get(arg, arg)
        if option not in OPTIONS:
            raise ConfigError(f"{arg}: unknown option; options are -h/{', '.join(OPTIONS)}, and "
                              "key=value overrides (python -m avssl.pretrain --help).")
        options.append(option)
    if "--help" in options:
        return "--help", rest
    if len(set(options)) > 1:
        raise ConfigError(f"{' and '.join(sorted(set(options)))}: give one of them at a time.")
    return (options[0] if options else None), rest


def option_output(option: str, args: list[str]) -> str:
    """What `option` prints for the ``key=value`` arguments `args` (only --print-config reads them).

    Raises:
        ConfigError: --print-config with a recipe or override the run could not start with.
    """
    if option == "--help":
        return usage()
    if option == "--list-recipes":
        return recipes_listing()
    if option == "--list-presets":
        return presets_listing()
    return to_yaml(load_config(args)).rstrip()


def _first_paragraph(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())


def section_descriptions() -> dict[str, str]:
    """Each top-level key of the config and its one-line description, from the schema."""
    # a section's class docstring; a plain field (recipe, objectives) carries a "doc" in its metadata
    return {f.name: _first_paragraph(f.metadata["doc"] if "doc" in f.metadata else inspect.getdoc(f.default_factory))
            for f in fields(PretrainConfig)}


def usage() -> str:
    width = max(len(name) for name in (*OPTIONS, *section_descriptions()))
    sections = "\n".join(f"  {name:<{width}}  {doc}" for name, doc in section_descriptions().items())
    options = "\n".join(f"  {name:<{width}}  {doc}" for name, doc in OPTIONS.items())
    return f"""usage: python -m avssl.pretrain [recipe=NAME|PATH] [section.key=value ...] [--print-config]
       python -m avssl.pretrain --list-recipes | --list-presets | --help

Self-supervised audio-visual pretraining. With no argument, the default recipe runs on the built-in
demo clips. A recipe sets the config; any key can be overridden on the command line, e.g.
  python -m avssl.pretrain recipe=cav_mae data.root=/videos trainer.devices=4 optim.lr=2e-4

config sections (--print-config shows every key and its value):
{sections}

options:
{options}

docs: {DOCS}"""


def _recipe_summary(name: str) -> str:
    """The first sentence of a recipe's header comment."""
    header = []
    for line in recipe_text(name).splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# ").rstrip())
    sentence = " ".join(header).split(". ")[0].rstrip(".")
    return textwrap.shorten(sentence, width=100, placeholder=" ...")


def recipes_listing() -> str:
    names = available_recipes()
    width = max(len(name) for name in names)
    lines = [f"  {name:<{width}}  {_recipe_summary(name)}" for name in names]
    return "\n".join(["recipes (recipe=NAME; docs/recipes.md):", *lines])


def presets_listing() -> str:
    sizes = [f"  {name:<6}  " + " ".join(f"{k}={v}" for k, v in size.items()) for name, size in BACKBONE_SIZES.items()]
    presets = []
    for name in list_backbones():
        spec = preset_spec(name)
        presets.append(f"  {name:<20}  kind={spec.kind} embed_dim={spec.embed_dim}")
    return "\n".join(["backbone sizes (backbone.size=NAME in a recipe or override; the cav_mae layout):", *sizes, "",
                      "backbone presets (backbone.preset=NAME in a recipe or override, avssl.create_backbone(NAME); "
                      "docs/backbones.md):", *presets])
