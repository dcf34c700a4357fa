"""``backbone.init_from``: a pretraining run's backbone starts from the weights of an export.

`AVPretrainModule` loads them into the backbone it has just built, before it builds any
objective, so an objective that copies the backbone in its ``__init__`` (an EMA teacher) copies
these weights, not a random initialisation. A resumed run (``run.resume``) loads them as well,
and Lightning then restores the whole module from the checkpoint, so they never replace the state
a run resumes from.
"""

from __future__ import annotations

import logging
from dataclasses import fields

from torch import nn

from avssl.backbones.spec import BackboneSpec
from avssl.errors import ConfigError
from avssl.loading import load_backbone

log = logging.getLogger(__name__)

# Fields that change no parameter: an export trained with other values still fits the recipe.
_TRAINING_ONLY_FIELDS = {"drop_path", "attention"}


def load_init_from(backbone: nn.Module, export: str) -> None:
    """Loads the weights of the export in `export` into `backbone`, after checking that the architectures match.

    Raises:
        ConfigError: the export is missing, damaged, or built with another architecture (named
            field by field, with both values).
    """
    try:
        pretrained = load_backbone(export)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"backbone.init_from={export}: {err}") from None
    ours, theirs = backbone.spec, pretrained.encoder.spec
    differ = [f"{f.name} (export: {getattr(theirs, f.name)}, recipe: {getattr(ours, f.name)})"
              for f in fields(BackboneSpec)
              if f.name not in _TRAINING_ONLY_FIELDS and getattr(theirs, f.name) != getattr(ours, f.name)]
    if differ:
        raise ConfigError(f"backbone.init_from={export}: the export's architecture differs from the recipe's in "
                          f"{'; '.join(differ)}. Set backbone.* and data.preprocessing.* to match (a converted "
                          "CAV-MAE checkpoint matches recipe=cav_mae).")
    backbone.load_state_dict(pretrained.encoder.state_dict())
    log.info("backbone initialised from %s", export)
