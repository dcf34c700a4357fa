"""What Lightning's Trainer accepts for ``trainer.precision`` and ``trainer.accelerator``.

The values come from Lightning itself (the type of ``Trainer(precision=...)`` and its accelerator
registry), so that `avssl.config.load_config` rejects a bad value before any work, with the same
list Lightning would give after the run directory exists. Lightning is imported on first use only:
`avssl.config` stays importable without it.
"""

from __future__ import annotations

from typing import Any, get_args

# accelerator names Lightning resolves itself (Trainer(accelerator="gpu") picks CUDA or MPS)
_ALIASES = ("auto", "gpu")


def precision_values() -> list[str]:
    """Every ``precision`` that ``pl.Trainer`` accepts, as written on the command line."""
    from lightning_fabric.connector import _PRECISION_INPUT  # the type of Trainer(precision=...)

    values = (str(value) for literal in get_args(_PRECISION_INPUT) for value in get_args(literal))
    return list(dict.fromkeys(values))  # 16 and "16" are both accepted: list it once


def precision_problem(value: Any) -> str | None:
    """None if Lightning accepts ``precision=value``, else what is allowed."""
    allowed = precision_values()
    return None if str(value) in allowed else f"must be one of {allowed}"


def accelerator_problem(value: Any) -> str | None:
    """None if ``accelerator=value`` is known to Lightning and present on this machine, else the fix."""
    from pytorch_lightning.accelerators import AcceleratorRegistry, CUDAAccelerator, MPSAccelerator

    names = AcceleratorRegistry.available_accelerators()
    if value not in names and value not in _ALIASES:
        return f"unknown accelerator; must be one of {sorted([*_ALIASES, *names])}"
    if value in ("gpu", "cuda") and not (CUDAAccelerator.is_available() or MPSAccelerator.is_available()):
        return "no GPU was found on this machine; use trainer.accelerator=cpu or trainer.accelerator=auto"
    if value in names and not AcceleratorRegistry[value]["accelerator"].is_available():
        return f"no {value} device was found on this machine; use trainer.accelerator=cpu or trainer.accelerator=auto"
    return None
