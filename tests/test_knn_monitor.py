"""Weighted kNN classification and the kNN monitor of pretraining (health/knn/...)."""

import pytest
import torch
import torch.nn.functional as F

from avssl.evaluation.knn import knn_predict_labels, knn_top1


def naive_knn(train_x, train_y, test_x, k, temperature):
    """Wu et al. 2018, Sec. 3.4, one test clip at a time."""
    predictions = []
    for x in test_x:
        sims = [float(F.cosine_similarity(x, t, dim=0)) for t in train_x]
        nearest = sorted(range(len(sims)), key=lambda i: -sims[i])[: min(k, len(sims))]
        votes: dict[int, float] = {}
        for i in nearest:
            votes[int(train_y[i])] = votes.get(int(train_y[i]), 0.0) + torch.exp(torch.tensor(sims[i] / temperature)).item()
        predictions.append(max(votes, key=votes.get))
    return torch.tensor(predictions)


@pytest.mark.parametrize("n,m,dim,classes", [(10, 7, 4, 3), (40, 25, 16, 5)])
@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_knn_matches_the_naive_reference(n, m, dim, classes, k, temperature):
    torch.manual_seed(n + k)
    train_x, test_x = torch.randn(n, dim), torch.randn(m, dim)
    train_y, test_y = torch.randint(classes, (n,)), torch.randint(classes, (m,))
    expected = naive_knn(train_x, train_y, test_x, k, temperature)
    assert torch.equal(knn_predict_labels(train_x, train_y, test_x, k, temperature), expected)
    assert knn_top1(train_x, train_y, test_x, test_y, k, temperature) == pytest.approx(expected.eq(test_y).double().mean().item())


@pytest.mark.parametrize("k", [1, 3, 50])
def test_perfectly_separated_clusters_are_all_right(k):
    torch.manual_seed(0)
    centres = 10.0 * torch.eye(4)  # [C=4, D=4], orthogonal
    train_y, test_y = torch.arange(4).repeat(5), torch.arange(4).repeat(3)
    train_x = centres[train_y] + 0.1 * torch.randn(20, 4)
    test_x = centres[test_y] + 0.1 * torch.randn(12, 4)
    assert knn_top1(train_x, train_y, test_x, test_y, k=k) == 1.0


def test_k_one_is_the_nearest_neighbour_by_cosine():
    torch.manual_seed(1)
    train_x, test_x = torch.randn(30, 8), torch.randn(12, 8)
    train_y = torch.randint(6, (30,))
    nearest = (F.normalize(test_x, dim=1) @ F.normalize(train_x, dim=1).T).argmax(dim=1)
    assert torch.equal(knn_predict_labels(train_x, train_y, test_x, k=1), train_y[nearest])
    # cosine: the scale of a feature does not matter
    assert torch.equal(knn_predict_labels(3.0 * train_x, train_y, 0.5 * test_x, k=1), train_y[nearest])


def test_k_is_clamped_to_the_train_clips():
    torch.manual_seed(2)
    train_x, train_y, test_x = torch.randn(6, 4), torch.tensor([0, 0, 0, 0, 1, 1]), torch.randn(5, 4)
    assert torch.equal(knn_predict_labels(train_x, train_y, test_x, k=1000, temperature=0.5),
                       knn_predict_labels(train_x, train_y, test_x, k=6, temperature=0.5))


@pytest.mark.parametrize("kwargs,message", [
    ({"k": 0}, r"k=0: must be >= 1"),
    ({"temperature": 0.0}, r"temperature=0.0: must be > 0"),
    ({"test_x": torch.randn(3, 5)}, r"train features \(6, 4\) and test features \(3, 5\)"),
    ({"train_y": torch.zeros(5, dtype=torch.long)}, r"train labels \(5,\)"),
    ({"test_y": torch.zeros(2, dtype=torch.long)}, r"test labels \(2,\)"),
    ({"test_x": torch.randn(0, 4), "test_y": torch.zeros(0, dtype=torch.long)}, "at least one clip"),
])
def test_knn_rejects_bad_arguments(kwargs, message):
    args = {"train_x": torch.randn(6, 4), "train_y": torch.zeros(6, dtype=torch.long), "test_x": torch.randn(3, 4),
            "test_y": torch.zeros(3, dtype=torch.long), **kwargs}
    with pytest.raises(ValueError, match=message):
        knn_top1(**args)
