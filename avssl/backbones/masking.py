"""Token masking that drops masked tokens before the encoder: random, time/frequency, tube.

Every function returns ``(visible [B, K, D], idx_keep [B, K], idx_mask [B, N - K])`` with the
same K for every sample, so the visible tokens stack into one tensor and the MAE decoder can put
them back with ``set_at_index``.

- Random (`drop_tokens`; MAE, He et al., arXiv:2111.06377, and CAV-MAE, arXiv:2210.07839): the
  per-sample argsort of uniform noise is lightly's `random_token_mask`, which draws
  ``torch.rand(B, N)`` exactly as MAE and CAV-MAE do; ``int(N * (1 - ratio))`` tokens are kept.
- Time / frequency / time-frequency (AudioMAE, Huang et al., "Masked Autoencoders that Listen",
  NeurIPS 2022, arXiv:2207.06405, which compares these "structured" masks with unstructured
  masking; its pretraining default is unstructured at 0.8, `facebookresearch/AudioMAE
  main_pretrain.py`): whole time columns and/or frequency rows of the ``grid_f x grid_t``
  spectrogram token grid are dropped. Tokens are frequency-major as `SpectrogramPatchTokenizer`
  orders them: token index ``n = f * grid_t + t``.
- Tube (VideoMAE, Tong et al., NeurIPS 2022, arXiv:2203.12602, default ratio 0.9): the same
  spatial positions are dropped in every temporal slice of the ``t x h x w`` tubelet grid;
  token index ``n = (ti * h + hi) * w + wi``.

Structured masks keep ``int(L * (1 - ratio))`` of the L lines (columns, rows or spatial
positions), the rounding `drop_tokens` uses. Their ``idx_keep`` and ``idx_mask`` are in ascending
token order; `drop_tokens` returns them in random order (as lightly does). They draw from
``generator`` when one is given (for reproducible masks), else from torch's global RNG.

Shape letters: B batch, N tokens, K visible tokens, D width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from lightly.models.utils import get_at_index, random_token_mask
from torch import Tensor

from avssl.schema import in_range, one_of


def drop_tokens(tokens: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
    """Keeps a random subset of tokens per sample.

    Args:
        tokens: ``[B, N, D]``.
        mask_ratio: fraction of tokens to drop, in [0, 1).

    Returns:
        ``(visible [B, K, D], idx_keep [B, K], idx_mask [B, N - K])``; with ``mask_ratio == 0``
        all tokens are kept in their original order.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio={mask_ratio}: must be in [0, 1)")
    b, n, _ = tokens.shape
    if mask_ratio == 0.0:
        idx_keep = torch.arange(n, device=tokens.device).expand(b, n)
        return tokens, idx_keep, idx_keep[:, :0]
    # No class token in these sequences, so every position may be masked.
    idx_keep, idx_mask = random_token_mask((b, n), mask_ratio, mask_class_token=True, device=tokens.device)
    return get_at_index(tokens, idx_keep), idx_keep, idx_mask


def _check_grid(tokens: Tensor, grid: tuple[int, ...], layout: str) -> None:
    expected = 1
    for g in grid:
        expected *= g
    if tokens.ndim != 3 or tokens.shape[1] != expected:
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)} do not match the token grid {layout}={tuple(grid)}, "
            f"which has {expected} tokens; pass the tokenizer's grid"
        )


def _keep_lines(batch: int, lines: int, mask_ratio: float, what: str, generator: torch.Generator | None,
                device: torch.device) -> Tensor:
    """Boolean ``[B, lines]`` with ``int(lines * (1 - mask_ratio))`` random True per row."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio={mask_ratio} for {what}: must be in [0, 1)")
    num_keep = int(lines * (1 - mask_ratio))
    if num_keep == 0:
        raise ValueError(
            f"mask_ratio={mask_ratio} keeps none of the {lines} {what} (int({lines} * (1 - {mask_ratio})) = 0); "
            "lower the ratio or use smaller patches"
        )
    noise = torch.rand(batch, lines, generator=generator, device=generator.device if generator is not None else device)
    idx = noise.argsort(dim=1)[:, :num_keep].to(device)  # (B, num_keep)
    return torch.zeros(batch, lines, dtype=torch.bool, device=device).scatter_(1, idx, True)


def _split(tokens: Tensor, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gathers the tokens where ``keep [B, N]`` is True (same count in every row)."""
    num_keep = int(keep[0].sum())
    assert bool((keep.sum(dim=1) == num_keep).all()), "structured masks keep the same count per sample"
    # A stable sort of 0 (keep) / 1 (mask) lists kept positions first, both parts ascending.
    order = torch.argsort((~keep).long(), dim=1, stable=True)  # (B, N)
    idx_keep, idx_mask = order[:, :num_keep], order[:, num_keep:]
    return get_at_index(tokens, idx_keep), idx_keep, idx_mask


def drop_time_frequency(
    tokens: Tensor,
    grid: tuple[int, int],
    time_ratio: float,
    frequency_ratio: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Drops whole time columns and whole frequency rows of a spectrogram token grid.

    A token is kept when both its time column and its frequency row are kept, so
    ``K = int(grid_t * (1 - time_ratio)) * int(grid_f * (1 - frequency_ratio))``.

    Args:
        tokens: ``[B, N, D]`` in frequency-major order, ``N = grid_f * grid_t``.
        grid: ``(grid_f, grid_t)``, e.g. ``SpectrogramPatchTokenizer.grid``.
        time_ratio: fraction of time columns dropped, in [0, 1).
        frequency_ratio: fraction of frequency rows dropped, in [0, 1).
        generator: source of randomness; torch's global RNG when None.

    Returns:
        ``(visible [B, K, D], idx_keep [B, K], idx_mask [B, N - K])``, indices ascending.

    Raises:
        ValueError: ``N != grid_f * grid_t``, a ratio outside [0, 1), or a ratio that keeps no line.
    """
    _check_grid(tokens, grid, "(grid_f, grid_t)")
    grid_f, grid_t = grid
    b = tokens.shape[0]
    keep_t = _keep_lines(b, grid_t, time_ratio, "time columns", generator, tokens.device)  # (B, grid_t)
    keep_f = _keep_lines(b, grid_f, frequency_ratio, "frequency rows", generator, tokens.device)  # (B, grid_f)
    keep = (keep_f[:, :, None] & keep_t[:, None, :]).reshape(b, grid_f * grid_t)  # n = f * grid_t + t
    return _split(tokens, keep)


def drop_time(
    tokens: Tensor, grid: tuple[int, int], mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Drops whole time columns (all frequencies of a time step); see `drop_time_frequency`."""
    return drop_time_frequency(tokens, grid, mask_ratio, 0.0, generator)


def drop_frequency(
    tokens: Tensor, grid: tuple[int, int], mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Drops whole frequency rows (all time steps of a band); see `drop_time_frequency`."""
    return drop_time_frequency(tokens, grid, 0.0, mask_ratio, generator)


def drop_tubes(
    tokens: Tensor, grid: tuple[int, int, int], mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Tube masking (VideoMAE): the same spatial positions are dropped in every temporal slice.

    Args:
        tokens: ``[B, N, D]`` with ``N = t * h * w`` and token index ``(ti * h + hi) * w + wi``.
        grid: ``(t, h, w)`` tubelet grid.
        mask_ratio: fraction of spatial positions (hence of tokens) dropped, in [0, 1).
        generator: source of randomness; torch's global RNG when None.

    Returns:
        ``(visible [B, K, D], idx_keep [B, K], idx_mask [B, N - K])`` with
        ``K = t * int(h * w * (1 - mask_ratio))``, indices ascending.

    Raises:
        ValueError: ``N != t * h * w``, a ratio outside [0, 1), or a ratio that keeps no position.
    """
    _check_grid(tokens, grid, "(t, h, w)")
    t, h, w = grid
    b = tokens.shape[0]
    keep_s = _keep_lines(b, h * w, mask_ratio, "spatial positions", generator, tokens.device)  # (B, h * w)
    keep = keep_s[:, None, :].expand(b, t, h * w).reshape(b, t * h * w)  # n = ti * h * w + s
    return _split(tokens, keep)


# Which strategies fit which token grid: spectrogram patches (grid_f, grid_t) or tubelets (t, h, w).
AUDIO_STRATEGIES = ("random", "time", "frequency", "time_frequency")
VIDEO_STRATEGIES = ("random", "tube")
MASKING_STRATEGIES = ("random", "time", "frequency", "time_frequency", "tube")


def mask_tokens(
    strategy: str,
    tokens: Tensor,
    mask_ratio: float,
    grid: tuple[int, ...] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Applies a masking strategy by name (the names recipes use).

    Args:
        strategy: one of `MASKING_STRATEGIES`. ``time_frequency`` drops the fraction
            ``1 - sqrt(1 - mask_ratio)`` of time columns and of frequency rows, so that about
            ``mask_ratio`` of the tokens are dropped in all.
        tokens: ``[B, N, D]``.
        mask_ratio: fraction of tokens dropped, in [0, 1).
        grid: token grid, ``(grid_f, grid_t)`` for audio strategies and ``(t, h, w)`` for ``tube``;
            unused by ``random``.
        generator: for the structured strategies; ``random`` uses lightly's `random_token_mask`,
            which draws from the global RNG (seed it with ``torch.manual_seed``).

    Returns:
        ``(visible [B, K, D], idx_keep [B, K], idx_mask [B, N - K])``.

    Raises:
        ValueError: an unknown strategy, a missing grid or one of the other modality (``tube`` on a
            spectrogram grid), or a generator passed to ``random``.
    """
    if strategy not in MASKING_STRATEGIES:
        raise ValueError(f"masking strategy {strategy!r} is unknown; choose one of {list(MASKING_STRATEGIES)}")
    if strategy == "random":
        if generator is not None:
            raise ValueError(
                "masking strategy 'random' uses lightly's random_token_mask, which takes no generator; "
                "seed it with torch.manual_seed instead"
            )
        return drop_tokens(tokens, mask_ratio)
    if grid is None:
        raise ValueError(f"masking strategy {strategy!r} needs the token grid; pass grid=tokenizer.grid")
    axes = 3 if strategy == "tube" else 2
    if len(grid) != axes:
        tokens_of = "video tubelets, grid (t, h, w)" if axes == 3 else "audio spectrogram patches, grid (grid_f, grid_t)"
        raise ValueError(f"masking strategy {strategy!r} is for {tokens_of}, got the grid {tuple(grid)}; "
                         f"audio strategies: {list(AUDIO_STRATEGIES)}, video strategies: {list(VIDEO_STRATEGIES)}")
    if strategy == "tube":
        return drop_tubes(tokens, grid, mask_ratio, generator)
    if strategy == "time":
        return drop_time(tokens, grid, mask_ratio, generator)
    if strategy == "frequency":
        return drop_frequency(tokens, grid, mask_ratio, generator)
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio={mask_ratio}: must be in [0, 1)")
    per_axis = 1.0 - (1.0 - mask_ratio) ** 0.5
    return drop_time_frequency(tokens, grid, per_axis, per_axis, generator)


@dataclass
class MaskSpec:
    """How one modality's tokens are masked in an encoder pass.

    A recipe's ``passes.<name>.audio`` and ``.video`` are the narrower `AudioMaskSpec` and
    `VideoMaskSpec`, so a strategy of the other modality is refused when the config is loaded.

    Attributes:
        strategy: one of `MASKING_STRATEGIES` (`AUDIO_STRATEGIES` for audio, `VIDEO_STRATEGIES` for video).
        ratio: fraction of tokens dropped before the encoder, in [0, 1); 0 keeps every token.
    """

    strategy: str = field(default="random", metadata=one_of(MASKING_STRATEGIES))
    ratio: float = field(default=0.0, metadata=in_range(0.0, 1.0, include_high=False))

    def apply(self, tokens: Tensor, grid: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
        """`mask_tokens` with this spec: ``(visible [B, K, D], idx_keep [B, K], idx_mask [B, N - K])``.

        Ratio 0 keeps every token in its order (no random permutation, no RNG draw).
        """
        if self.ratio == 0.0:
            b, n = tokens.shape[:2]
            keep = torch.arange(n, device=tokens.device).expand(b, n)
            return tokens, keep, keep[:, :0]
        return mask_tokens(self.strategy, tokens, self.ratio, grid)


@dataclass
class AudioMaskSpec(MaskSpec):
    """`MaskSpec` of a pass's audio tokens (spectrogram patches): one of `AUDIO_STRATEGIES`."""

    strategy: str = field(default="random", metadata=one_of(AUDIO_STRATEGIES, hint="tube is for video"))


@dataclass
class VideoMaskSpec(MaskSpec):
    """`MaskSpec` of a pass's video tokens (tubelets): one of `VIDEO_STRATEGIES`."""

    strategy: str = field(default="random", metadata=one_of(
        VIDEO_STRATEGIES, hint="time, frequency and time_frequency are for audio"))


NO_MASK = MaskSpec()
