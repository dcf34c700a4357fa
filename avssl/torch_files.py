"""Reading PyTorch files as data: checkpoints and released state dicts, with errors users can act on.

Everything is loaded with ``weights_only=True`` (a checkpoint is data, not code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

DATAPARALLEL_PREFIX = "module."  # what nn.DataParallel / DDP put before every key


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
        reason = (str(err).strip().splitlines() or [""])[0]  # torch's own messages run to several lines
        raise ValueError(f"{path} could not be read as a PyTorch checkpoint ({type(err).__name__}: {reason})") from None


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
