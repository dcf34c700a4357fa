"""Reading PyTorch files as data: checkpoints and released state dicts, with errors users can act on.

Everything is loaded with ``weights_only=True`` (a checkpoint is data, not code).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

DATAPARALLEL_PREFIX = "module."  # what nn.DataParallel / DDP put before every key
_EXAMPLES = 3  # keys quoted per kind of mismatch; the rest are counted


def load_torch_file(path: str | Path, what: str, example: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU.

    Args:
        path: the file.
        what: how errors name it, e.g. ``"checkpoint"`` or ``"audio checkpoint"``.
        example: what to pass instead when it is missing, e.g. ``"a .ckpt file such as last.ckpt"``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read as a PyTorch file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; pass {example}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a file that is not a checkpoint
        raise ValueError(f"{path} could not be read as a PyTorch checkpoint ({first_line(err)})") from None


def first_line(err: BaseException) -> str:
    """``"Type: first line"`` of an exception, for one-line errors (torch's messages run to several lines)."""
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"


def read_state_dict(path: str | Path, what: str, example: str) -> dict[str, Tensor]:
    """A released state dict: the file's dict of tensors, or the one under ``state_dict`` or
    ``model``, with the ``module.`` prefix of DataParallel removed where present.

    Raises:
        FileNotFoundError, ValueError: as `load_torch_file`, or the file holds no state dict.
    """
    state = load_torch_file(path, what, example)
    for entry in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(entry), dict):
            state = state[entry]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict (a dict of tensors, possibly under 'state_dict' or 'model')")
    return {k[len(DATAPARALLEL_PREFIX):] if k.startswith(DATAPARALLEL_PREFIX) else k: v for k, v in state.items()}


def weights_mismatch(expected: Mapping[str, Tensor], state: Mapping[str, Any]) -> str | None:
    """How the weights ``state`` fail to fit a module whose state dict is ``expected``, in one
    sentence (None: they fit): missing and unexpected keys, values that are not tensors, shapes."""
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    for keys, what in ((missing, "missing"), (unexpected, "unexpected")):
        if keys:
            problems.append(f"{len(keys)} {what} key{'s' if len(keys) > 1 else ''} (e.g. {', '.join(keys[:_EXAMPLES])})")
    not_tensors = [k for k in expected if k in state and not isinstance(state[k], Tensor)]
    if not_tensors:
        problems.append(f"{len(not_tensors)} value(s) that are not tensors (e.g. {', '.join(not_tensors[:_EXAMPLES])})")
    shapes = [(k, list(state[k].shape), list(v.shape)) for k, v in expected.items()
              if isinstance(state.get(k), Tensor) and state[k].shape != v.shape]
    problems += [f"shape mismatch for {k}: checkpoint {theirs} vs config {ours}" for k, theirs, ours in shapes[:_EXAMPLES]]
    if len(shapes) > _EXAMPLES:
        problems.append(f"{len(shapes) - _EXAMPLES} more shape mismatches")
    return "; ".join(problems) or None


def load_weights(module: nn.Module, state: Mapping[str, Any], path: str | Path, config: str, fix: str) -> None:
    """Loads ``state`` into ``module`` (strictly), or says in one line why the weights do not fit.

    ``module.load_state_dict`` reports a mismatch as a multi-line RuntimeError listing every key;
    this checks keys and shapes first (`weights_mismatch`), so that the user reads which file is
    wrong, how, and what to do.

    Args:
        module: built from ``config``.
        state: the weights read from ``path``.
        path: the file the weights came from, named in the error.
        config: what ``module`` was built from, e.g. ``"config.yaml"``.
        fix: what the user should do, e.g. ``"re-export it with python -m avssl.export"``.

    Raises:
        ValueError: the weights do not fit, e.g. ``"…/model.safetensors: weights do not match
            config.yaml: 3 missing keys (e.g. a.weight, …); re-export it …"``.
    """
    problems = weights_mismatch(module.state_dict(), state)
    if problems:
        raise ValueError(f"{path}: weights do not match {config}: {problems}; {fix}")
    module.load_state_dict(state)


def check_fits_before_building(build: Callable[[], nn.Module], shapes: Mapping[str, Any], path: str | Path,
                               config: str, fix: str) -> None:
    """Checks that weights of the given shapes fit the module ``build`` makes, without allocating it.

    ``build`` runs on torch's meta device (parameters without storage), so a config that asks for
    an enormous model costs nothing here; the real build comes only after the weights are known
    to fit it, and the weights file (not the config) then decides what is allocated.

    Args:
        build: makes the module from ``config`` (e.g. ``lambda: build_encoder(spec)``).
        shapes: each weight's name and a tensor of its shape (a meta tensor is enough).
        path, config, fix: as `load_weights`.

    Raises:
        ValueError: the weights do not fit, in the one line of `load_weights`.
    """
    with torch.device("meta"):
        skeleton = build()
    problems = weights_mismatch(skeleton.state_dict(), shapes)
    if problems:
        raise ValueError(f"{path}: weights do not match {config}: {problems}; {fix}")
