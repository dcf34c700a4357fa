"""Token masking: random, time / frequency / time-frequency (audio grid) and tube (video grid)."""

import pytest
import torch

from avssl.backbones.masking import (
    AUDIO_STRATEGIES,
    MASKING_STRATEGIES,
    VIDEO_STRATEGIES,
    drop_frequency,
    drop_time,
    drop_time_frequency,
    drop_tokens,
    drop_tubes,
    mask_tokens,
)
from avssl.backbones.tokenizers import spectrogram_patches, tubelet_patches

AUDIO_GRID = (4, 6)  # (grid_f, grid_t)
VIDEO_GRID = (3, 2, 4)  # (t, h, w)


def numbered(batch: int, n: int) -> torch.Tensor:
    """``[B, N, 2]`` tokens whose features are (sample, position), so gathers can be checked."""
    pos = torch.arange(n, dtype=torch.float).expand(batch, n)
    sample = torch.arange(batch, dtype=torch.float)[:, None].expand(batch, n)
    return torch.stack([sample, pos], dim=-1)


def check_split(tokens, visible, keep, mask):
    b, n, _ = tokens.shape
    assert visible.shape == (b, keep.shape[1], tokens.shape[2])
    assert keep.shape[1] + mask.shape[1] == n
    for i in range(b):
        assert sorted(keep[i].tolist() + mask[i].tolist()) == list(range(n))  # disjoint and complete
        assert torch.equal(visible[i], tokens[i, keep[i]])


@pytest.mark.parametrize("ratio, kept_cols", [(0.0, 6), (0.5, 3), (0.7, 1)])
def test_time_masking_drops_whole_time_columns(ratio, kept_cols):
    gf, gt = AUDIO_GRID
    tokens = numbered(3, gf * gt)
    visible, keep, mask = drop_time(tokens, AUDIO_GRID, ratio)
    check_split(tokens, visible, keep, mask)
    assert keep.shape[1] == gf * kept_cols
    for i in range(3):
        kept = set(keep[i].tolist())
        cols = {n % gt for n in kept}
        assert len(cols) == kept_cols
        assert kept == {f * gt + t for f in range(gf) for t in cols}  # every frequency of a kept column


@pytest.mark.parametrize("ratio, kept_rows", [(0.0, 4), (0.5, 2), (0.75, 1)])
def test_frequency_masking_drops_whole_frequency_rows(ratio, kept_rows):
    gf, gt = AUDIO_GRID
    tokens = numbered(3, gf * gt)
    visible, keep, mask = drop_frequency(tokens, AUDIO_GRID, ratio)
    check_split(tokens, visible, keep, mask)
    assert keep.shape[1] == kept_rows * gt
    for i in range(3):
        kept = set(keep[i].tolist())
        rows = {n // gt for n in kept}
        assert len(rows) == kept_rows
        assert kept == {f * gt + t for f in rows for t in range(gt)}


def test_time_frequency_masking_keeps_a_product_of_rows_and_columns():
    gf, gt = AUDIO_GRID
    tokens = numbered(4, gf * gt)
    visible, keep, mask = drop_time_frequency(tokens, AUDIO_GRID, time_ratio=0.5, frequency_ratio=0.5)
    check_split(tokens, visible, keep, mask)
    assert keep.shape[1] == 3 * 2
    for i in range(4):
        kept = set(keep[i].tolist())
        rows, cols = {n // gt for n in kept}, {n % gt for n in kept}
        assert kept == {f * gt + t for f in rows for t in cols}


def test_structured_indices_are_ascending():
    tokens = numbered(2, 24)
    for _, keep, mask in (drop_time(tokens, AUDIO_GRID, 0.5), drop_tubes(tokens, VIDEO_GRID, 0.5)):
        assert torch.equal(keep, keep.sort(dim=1).values)
        assert torch.equal(mask, mask.sort(dim=1).values)


def test_time_masking_follows_the_tokenizer_order():
    # Fill the fbank with its frame index: a token of time column t then holds frames of that column only.
    frames, mels, patch = 48, 32, (8, 8)
    audio = torch.arange(frames, dtype=torch.float)[None, None, :, None].expand(2, 1, frames, mels)
    patches = spectrogram_patches(audio, patch)  # (B, N, 64), frequency-major
    grid = (mels // patch[0], frames // patch[1])
    visible, keep, _ = drop_time(patches, grid, 0.5)
    for i in range(2):
        kept_frames = set(visible[i].flatten().long().tolist())
        assert len(kept_frames) == 3 * patch[1]  # three whole time columns of 8 frames each
        assert {f // patch[1] for f in kept_frames} == {n % grid[1] for n in keep[i].tolist()}


@pytest.mark.parametrize("ratio, kept_positions", [(0.0, 8), (0.5, 4), (0.8, 1)])
def test_tube_masking_is_identical_across_time(ratio, kept_positions):
    t, h, w = VIDEO_GRID
    tokens = numbered(3, t * h * w)
    visible, keep, mask = drop_tubes(tokens, VIDEO_GRID, ratio)
    check_split(tokens, visible, keep, mask)
    assert keep.shape[1] == t * kept_positions
    for i in range(3):
        per_slice = [{n % (h * w) for n in keep[i].tolist() if n // (h * w) == ti} for ti in range(t)]
        assert all(s == per_slice[0] for s in per_slice) and len(per_slice[0]) == kept_positions


def test_tube_masking_follows_the_tokenizer_order():
    # Fill the video with its frame index: each kept spatial position must appear once per tubelet slice.
    num_frames, size, patch = 4, 32, (2, 16, 16)
    video = torch.arange(num_frames, dtype=torch.float)[None, None, :, None, None].expand(2, 3, num_frames, size, size)
    patches = tubelet_patches(video, patch)  # (B, 8, 2 * 16 * 16 * 3)
    visible, keep, _ = drop_tubes(patches, (2, 2, 2), 0.5)
    for i in range(2):
        slices = visible[i].amin(dim=1) // patch[0]  # temporal slice of each kept token
        assert slices.tolist() == [0, 0, 1, 1]
        assert torch.equal(keep[i, :2] + 4, keep[i, 2:])


@pytest.mark.parametrize("strategy, grid", [
    ("time", AUDIO_GRID), ("frequency", AUDIO_GRID), ("time_frequency", AUDIO_GRID), ("tube", VIDEO_GRID),
])
def test_structured_masks_are_reproducible_with_a_generator(strategy, grid):
    tokens = numbered(4, 24)
    runs = [mask_tokens(strategy, tokens, 0.5, grid, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs[0][1], runs[1][1])
    other = mask_tokens(strategy, tokens, 0.5, grid, generator=torch.Generator().manual_seed(8))
    samples = [set(k.tolist()) for k in torch.cat([runs[0][1], other[1]])]
    assert len({frozenset(s) for s in samples}) > 1  # the mask does depend on the draw


def test_every_strategy_is_for_audio_or_video():
    assert set(AUDIO_STRATEGIES) | set(VIDEO_STRATEGIES) == set(MASKING_STRATEGIES)


@pytest.mark.parametrize("strategy, grid", [(s, AUDIO_GRID) for s in AUDIO_STRATEGIES] +
                                           [(s, VIDEO_GRID) for s in VIDEO_STRATEGIES])
def test_all_strategies_are_reproducible_with_manual_seed(strategy, grid):
    tokens = numbered(2, 24)
    torch.manual_seed(0)
    first = mask_tokens(strategy, tokens, 0.5, grid)
    torch.manual_seed(0)
    second = mask_tokens(strategy, tokens, 0.5, grid)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    check_split(tokens, *first)


def test_time_frequency_strategy_splits_the_ratio_between_axes():
    tokens = numbered(2, 16)
    _, keep, _ = mask_tokens("time_frequency", tokens, 0.75, (4, 4))
    assert keep.shape[1] == 2 * 2  # half the rows and half the columns -> 3/4 of the tokens dropped


def test_random_strategy_is_drop_tokens():
    tokens = numbered(2, 20)
    torch.manual_seed(1)
    expected = drop_tokens(tokens, 0.6)
    torch.manual_seed(1)
    got = mask_tokens("random", tokens, 0.6)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)


def test_errors_name_the_problem():
    tokens = numbered(1, 24)
    with pytest.raises(ValueError, match="'checkerboard' is unknown"):
        mask_tokens("checkerboard", tokens, 0.5, AUDIO_GRID)
    with pytest.raises(ValueError, match="needs the token grid"):
        mask_tokens("time", tokens, 0.5)
    with pytest.raises(ValueError, match="takes no generator"):
        mask_tokens("random", tokens, 0.5, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"grid \(grid_f, grid_t\)=\(4, 5\), which has 20 tokens"):
        drop_time(tokens, (4, 5), 0.5)
    with pytest.raises(ValueError, match="mask_ratio=1.0"):
        drop_tubes(tokens, VIDEO_GRID, 1.0)
    with pytest.raises(ValueError, match="keeps none of the 6 time columns"):
        drop_time(tokens, AUDIO_GRID, 0.9)


@pytest.mark.parametrize("strategy, grid, message", [
    ("tube", AUDIO_GRID, r"'tube' is for video tubelets, grid \(t, h, w\), got the grid \(4, 6\)"),
    ("time", VIDEO_GRID, r"'time' is for audio spectrogram patches, grid \(grid_f, grid_t\), got the grid \(3, 2, 4\)"),
])
def test_a_strategy_on_the_other_modalitys_grid_says_so(strategy, grid, message):
    with pytest.raises(ValueError, match=message):  # both grids hold 24 tokens: only the axes differ
        mask_tokens(strategy, numbered(1, 24), 0.5, grid)
