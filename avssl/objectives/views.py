"""Several views of each clip in one batch: regrouping the rows by view, and which rows share a video.

With ``data.views_per_video = V`` the datamodule puts the V views of each clip side by side:
rows ``[c0v0, c0v1, ..., c0v(V-1), c1v0, ...]``, every view of a clip present or none
(docs/data.md, "Views and audio offsets"). An objective that compares views (MAViL's two views,
XKD's teacher and student views, CrissCross's offset pairs) declares how many it needs
(`Objective.min_views`, checked against ``data.views_per_video`` when the config is loaded) and
regroups the rows with `by_view` instead of slicing them by hand. A contrastive loss over such a
batch uses `same_video` to keep a clip's other views (and other clips of its video) out of its
negatives.

Shape letters: R rows of the batch (B clips x V views), B clips, V views of each clip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor


def views_in(meta: Mapping[str, Any]) -> int:
    """V: how many views of each clip the batch holds, read from ``meta["view"]`` (long ``[R]``).

    An empty batch (or one without ``view``) counts as one view. Reads one number back from the
    device the batch is on.
    """
    view = meta.get("view")
    if view is None or view.numel() == 0:
        return 1
    return int(view.max()) + 1


def by_view(tensor: Tensor, views: int) -> Tensor:
    """The rows of a batch regrouped by view: ``[R, ...] -> [V, B, ...]``, ``out[v, b]`` is view v of clip b.

    Args:
        tensor: ``[R, ...]`` rows in the datamodule's order (the views of a clip consecutive, view 0 first).
        views: V, ``data.views_per_video`` (`views_in` reads it from the batch).

    Raises:
        ValueError: ``views < 1``, or R not a multiple of V (not a batch of whole clips).

    Examples:
        >>> import torch
        >>> by_view(torch.tensor([10, 11, 20, 21, 30, 31]), 2).tolist()  # clips 1-3, views 0 and 1
        [[10, 20, 30], [11, 21, 31]]
    """
    rows = tensor.shape[0]
    if views < 1 or rows % views:
        raise ValueError(f"by_view: {rows} rows cannot hold whole clips of views={views}; pass the batch's "
                         "number of views (views_in(batch['meta']), data.views_per_video), at least 1.")
    return tensor.reshape(rows // views, views, *tensor.shape[1:]).transpose(0, 1)  # (V, B, ...)


def same_video(meta: Mapping[str, Any]) -> Tensor:
    """Which rows of the batch come from the same video: bool ``[R, R]``, True on the diagonal.

    From ``meta["video_id"]`` (long ``[R]``), so it covers a clip's other views and, with
    ``data.clips_per_video > 1``, the other clips of its video in the batch. A contrastive loss
    masks these out of a row's negatives (its positive aside).

    Examples:
        >>> import torch
        >>> same_video({"video_id": torch.tensor([4, 4, 7])}).int().tolist()
        [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    """
    video_id = meta["video_id"]  # (R,)
    return video_id[:, None] == video_id[None, :]  # (R, R)
