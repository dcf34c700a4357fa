"""Weighted cosine kNN classification of frozen features.

Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018,
arXiv:1805.01978, Sec. 3.4: a test feature is compared by cosine similarity with every train
feature; its k most similar train clips vote for their classes, each with weight
``exp(similarity / temperature)``; the class with the largest summed weight is the prediction.
The paper uses k = 200 and temperature 0.07 on ImageNet; solo-learn's ``WeightedKNNClassifier``
defaults to k = 20, 0.07, which avssl's ``health.knn_k`` follows because its probe sets hold a few
hundred clips, not a million images.

The voting is lightly's ``knn_predict`` (``lightly.utils.benchmarking.knn``, the MoCo CIFAR demo's
code); this module adds the L2 normalisation, clamps k to the number of train clips (lightly's
``topk`` would fail) and checks its arguments.

Shapes: N train clips, M test clips, D feature dimensions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.utils.benchmarking.knn import knn_predict
from torch import Tensor


def _check(train_x: Tensor, train_y: Tensor, test_x: Tensor, k: int, temperature: float) -> None:
    if k < 1:
        raise ValueError(f"k={k}: must be >= 1 (the number of neighbours that vote, e.g. 20).")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature}: must be > 0 (typical: 0.07).")
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train features {tuple(train_x.shape)} and test features {tuple(test_x.shape)}: "
                         "need [N, D] and [M, D] with the same D.")
    if train_y.shape != (train_x.shape[0],):
        raise ValueError(f"train labels {tuple(train_y.shape)}: need one per train feature, "
                         f"shape ({train_x.shape[0]},).")
    if train_x.shape[0] == 0 or test_x.shape[0] == 0:
        raise ValueError(f"train features {tuple(train_x.shape)} and test features {tuple(test_x.shape)}: "
                         "need at least one clip in each.")


@torch.no_grad()
def knn_predict_labels(train_x: Tensor, train_y: Tensor, test_x: Tensor, k: int = 20, temperature: float = 0.07) -> Tensor:
    """The weighted kNN prediction of each test clip (see the module docstring).

    Args:
        train_x: ``[N, D]`` train features (any scale: they are L2-normalised here).
        train_y: ``[N]`` integer labels of the train features.
        test_x: ``[M, D]`` test features.
        k: neighbours that vote; clamped to N.
        temperature: a neighbour's vote is ``exp(cosine similarity / temperature)``.

    Returns:
        ``[M]`` predicted labels (long).

    Raises:
        ValueError: for k < 1, temperature <= 0, features that are not ``[N, D]`` and ``[M, D]``,
            labels that are not ``[N]``, or an empty train or test set.
    """
    _check(train_x, train_y, test_x, k, temperature)
    train_x = F.normalize(train_x.float(), dim=1)  # [N, D]
    test_x = F.normalize(test_x.float(), dim=1)  # [M, D]
    train_y = train_y.long().to(train_x.device)
    ranked = knn_predict(test_x, train_x.T, train_y, num_classes=int(train_y.max()) + 1,
                         knn_k=min(k, train_x.shape[0]), knn_t=temperature)  # [M, C], best class first
    return ranked[:, 0]


def knn_top1(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, k: int = 20, temperature: float = 0.07) -> float:
    """Top-1 accuracy of `knn_predict_labels` on the test clips, a fraction in [0, 1].

    Args:
        train_x: ``[N, D]`` train features.
        train_y: ``[N]`` integer labels.
        test_x: ``[M, D]`` test features.
        test_y: ``[M]`` integer labels.
        k: neighbours that vote; clamped to N.
        temperature: a neighbour's vote is ``exp(cosine similarity / temperature)``.

    Raises:
        ValueError: as `knn_predict_labels`, and for test labels that are not ``[M]``.

    Examples:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> knn_top1(x, torch.tensor([0, 1]), 2 * x, torch.tensor([0, 1]), k=1)
        1.0
    """
    if test_y.shape != test_x.shape[:1]:
        raise ValueError(f"test labels {tuple(test_y.shape)} and test features {tuple(test_x.shape)}: need one "
                         "label per test feature.")
    predicted = knn_predict_labels(train_x, train_y, test_x, k, temperature)
    return predicted.eq(test_y.to(predicted.device)).double().mean().item()
