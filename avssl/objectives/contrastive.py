"""Contrastive InfoNCE objectives: audio-visual (inter-modal) and between two views of one modality (intra-modal).

`av_infonce` is CAV-MAE's contrastive term: Gong et al., "Contrastive Audio-Visual Masked
Autoencoder", ICLR 2023, arXiv:2210.07839; reference `YuanGongND/cav-mae@68fe8c2a
src/models/cav_mae.py` (`forward_contrastive`). Published setting: mean-pooled per-modality tokens
of the masked clips, L2-normalised, ``sim = a @ v.T / 0.05`` and ``-mean(diag(log_softmax(sim,
dim=0)))``: one direction (each video clip picks its audio among the batch's audio clips, our
``direction="v2a"``), cross-modal negatives only (``negatives="cross_modal"``), fixed temperature
0.05, loss weight 0.01; ``bidirect_contrast=True`` there averages both directions
(``direction="both"``). `recipes/cav_mae.yaml` sets that form.

`intra_infonce` is MAViL's intra-modal contrast: Huang et al., "MAViL: Masked Audio-Video
Learners", NeurIPS 2023, arXiv:2212.08071: two independently masked views of the same clip's audio
(or video) are a positive pair, the other clips of the batch are negatives, next to the
inter-modal contrast of `av_infonce`. MAViL's code was never released (`facebookresearch/MAViL`
holds only a README), so its temperatures, weights and heads are not verified here; the defaults
are the usual SimCLR-style values and are documented as such.

The loss forms, for N clips over all ranks, B on this rank, paired rows ``x_i``, ``y_i``:

- ``negatives="cross_modal"`` (``"cross_view"`` for two views): a ``[B, N]`` similarity matrix of
  the queries against the other side's N embeddings, cross-entropy on the diagonal (CLIP's and
  CAV-MAE's form); chance ln(N).
- ``negatives="all"``: as SimCLR's NT-Xent (Chen et al., arXiv:2002.05709; lightly's
  `NTXentLoss`), the other clips of the query's own side are negatives too, ``[B, 2N - 1]``
  candidates per query; chance ln(2N - 1). ``direction="both"`` with ``negatives="all"`` and a
  fixed temperature is exactly lightly's `NTXentLoss` (tested), the form of earlier versions.

Lightly's `NTXentLoss` itself is no longer called: it has neither one direction, nor cross-modal
negatives only, nor a learnable temperature. Its pieces are reused: lightly's `gather`
(all-gather that keeps gradients) and the row offset of `eye_rank`.

Distributed: with ``gather_distributed`` every rank contrasts its own B queries against the
embeddings of all ranks and averages over its own rows. Lightly's `gather` sums the gradients that
every rank's loss sends to a rank's embeddings, so the gradient a rank gets for its embeddings is
``world_size`` times that of the single-process loss on the concatenated batch; DDP's averaging
of parameter gradients over ranks divides this back, so the parameters get exactly the gradient of
the single-process loss (tests/test_infonce.py checks both with two gloo processes). All ranks must
hold the same number of clips.

Shape letters: B clips on this rank, N clips over all ranks, D embedding width, P projection width.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.utils import dist
from torch import Tensor, nn

from avssl.objectives.health import embedding_std, retrieval_top1
from avssl.objectives.registry import Objective, ObjectiveOutput, register_objective
from avssl.schema import in_range

MIN_TEMPERATURE = 0.01  # CLIP clamps its learned logit scale at 100, i.e. a temperature of 0.01
# the ranges of both InfoNCE objectives' numbers (projection_dim 0: no projection heads)
_INFONCE_RANGES = {
    "temperature": in_range(0.0, 100.0, include_low=False, hint="typical: 0.05-0.1"),
    "projection_dim": in_range(0, 65_536),
    "projection_hidden_dim": in_range(0, 65_536),
}


def _gathered(z: Tensor, gather_distributed: bool) -> Tensor:
    """``z`` ``[B, D]`` of every rank, concatenated in rank order ``[N, D]``, gradients kept (lightly's `gather`)."""
    if gather_distributed and dist.world_size() > 1:
        return torch.cat(dist.gather(z), dim=0)
    return z


def info_nce_direction(
    queries: Tensor, keys_all: Tensor, temperature: Tensor | float, queries_all: Optional[Tensor] = None
) -> Tensor:
    """InfoNCE of one direction: each query picks its own key among all keys.

    Args:
        queries: ``[B, D]`` L2-normalised embeddings of this rank's clips.
        keys_all: ``[N, D]`` L2-normalised embeddings of the other side (other modality or view),
            every rank's in rank order (``N = B`` without gathering); query ``i`` of rank ``r``
            is paired with key ``r * B + i``.
        temperature: scalar softmax temperature (> 0).
        queries_all: ``[N, D]`` the queries' side gathered as `keys_all`, or None. Given: the
            other clips of the query's own side are negatives too (NT-Xent, 2N - 1 candidates);
            None: only the keys are candidates (N candidates).

    Returns:
        The cross-entropy averaged over this rank's B queries.
    """
    batch, device = len(queries), queries.device
    gathered = len(keys_all) > batch  # only gathering over several ranks gives more keys than queries
    targets = torch.arange(batch, device=device) + (dist.rank() * batch if gathered else 0)  # (B,)
    logits = queries @ keys_all.T / temperature  # (B, N)
    if queries_all is not None:
        own = dist.eye_rank(batch) if gathered else torch.eye(batch, dtype=torch.bool)  # (B, N): each query itself
        # masked after the division: -inf / temperature would give a learned temperature a NaN gradient
        same_side = (queries @ queries_all.T / temperature).masked_fill(own.to(device), float("-inf"))  # (B, N)
        logits = torch.cat([logits, same_side], dim=1)  # (B, 2N)
    return F.cross_entropy(logits, targets)


def temperature_to_try(temperature: float) -> float:
    """The temperature to suggest when an InfoNCE stays at or above its chance value.

    Up to 0.25, twice `temperature`: a softer softmax, whose loss cannot climb as far above chance
    when the pairs start out mismatched (the old hints: 0.05 -> 0.1, 0.1 -> 0.2). Above that,
    half: cosine similarities over a temperature that high span too little to leave chance.

    Examples:
        >>> temperature_to_try(0.1), temperature_to_try(0.5)
        (0.2, 0.25)
    """
    return 2 * temperature if temperature <= 0.25 else temperature / 2


class Temperature(nn.Module):
    """A softmax temperature, fixed, or learned as a log-temperature (CLIP: Radford et al., "Learning
    Transferable Visual Models From Natural Language Supervision", 2021, arXiv:2103.00020) clamped
    at `MIN_TEMPERATURE`. A fixed one has no state, so checkpoints of fixed-temperature runs keep
    their keys. NOTE: the optimizer's weight decay reaches the learned log-temperature too (CLIP
    exempts it), pulling it towards 0, i.e. the temperature towards 1; negligible at Adam's 5e-7,
    noticeable at AdamW's 0.05 over a long run.

    Raises:
        ValueError: a temperature <= 0, or a learned one starting below `MIN_TEMPERATURE`.
    """

    def __init__(self, value: float, learn: bool):
        super().__init__()
        if value <= 0:
            raise ValueError(f"temperature={value}: must be > 0 (typical: 0.05-0.1)")
        if learn and value < MIN_TEMPERATURE:
            raise ValueError(f"temperature={value}: a learned temperature starts at >= {MIN_TEMPERATURE} (its lower "
                             "clamp, CLIP's); raise it or set learn_temperature=false")
        self.value = value
        self.log_value = nn.Parameter(torch.tensor(math.log(value))) if learn else None

    @property
    def learned(self) -> bool:
        return self.log_value is not None

    def forward(self) -> Tensor | float:
        if self.log_value is None:
            return self.value
        return self.log_value.clamp(min=math.log(MIN_TEMPERATURE)).exp()


def _projection_head(backbone: Optional[nn.Module], hidden_dim: int, out_dim: int) -> nn.Module:
    """Lightly's `SimCLRProjectionHead` (Linear-BN-ReLU-Linear-BN), or `nn.Identity` for ``out_dim=0``."""
    if not out_dim:
        return nn.Identity()
    return SimCLRProjectionHead(backbone.embed_dim, hidden_dim, out_dim)


def _check_heads(backbone: Optional[nn.Module], projection_dim: int, projection_hidden_dim: int) -> None:
    for name, value in (("projection_dim", projection_dim), ("projection_hidden_dim", projection_hidden_dim)):
        if value < 0:
            raise ValueError(f"{name}={value}: must be >= 0 (projection_dim=0: no projection heads)")
    if projection_dim and backbone is None:
        raise ValueError("projection heads need the backbone's embed_dim; pass backbone= or set projection_dim=0")


def _clips(batch: int, gather_distributed: bool) -> int:
    """N: the clips every query is contrasted with, over all ranks when gathered."""
    return batch * (dist.world_size() if gather_distributed else 1)


@register_objective("av_infonce")
class AVInfoNCE(Objective):
    """InfoNCE between the audio and video embeddings of the same clips.

    Args:
        backbone: the encoder being trained (its ``embed_dim`` sizes the heads); only needed
            with projection heads.
        temperature: softmax temperature (CAV-MAE: 0.05; typical 0.05-0.1); with
            ``learn_temperature`` the starting value.
        gather_distributed: gather embeddings from all ranks so every rank sees all negatives.
        projection_dim: output width of the per-modality projection heads; 0: no heads, the
            backbone's embeddings are contrasted directly (CAV-MAE).
        projection_hidden_dim: hidden width of the heads.
        pass_name: the encoder pass whose embeddings are contrasted (CAV-MAE: its masked pass,
            ``masked``; the default ``unmasked`` sees whole clips, see docs/objectives.md).
        direction: ``both``: the mean of audio->video and video->audio; ``a2v``: each audio clip
            picks its video; ``v2a``: each video clip picks its audio (CAV-MAE's single direction).
        negatives: ``all``: the other clips of both modalities (NT-Xent, 2N - 1 candidates);
            ``cross_modal``: only the other clips of the other modality (CAV-MAE, CLIP; N candidates).
        learn_temperature: learn a log-temperature starting at `temperature` (CLIP), clamped at
            0.01; logged as the health scalar ``temperature``.

    Returns from forward: loss ``{"infonce"}`` on the pass's ``audio_embedding`` and
    ``video_embedding`` (``[B, D]`` each), its chance value (ln(2N - 1) for ``all``, ln(N) for
    ``cross_modal``, N clips over all ranks when gathered), and health scalars: ``retrieval_a2v``
    / ``retrieval_v2a`` (in-batch top-1, chance ``retrieval_chance`` = 1/B), ``audio_z_std`` /
    ``video_z_std`` (collapse monitor of the contrasted embeddings, about 1/sqrt(D) when healthy,
    0 when collapsed), and ``temperature`` when it is learned.

    Deviations from CAV-MAE (its exact form is ``direction=v2a, negatives=cross_modal,
    temperature=0.05, projection_dim=0``; the defaults here are the earlier NT-Xent form, so
    existing recipes and checkpoints keep their meaning):

    - By default each modality's embedding goes through its own projection head, lightly's
      `SimCLRProjectionHead` (Linear-BN-ReLU-Linear-BN), before the loss; CAV-MAE has none.
      Measured on the demo clips (docs/objectives.md, "Why the contrastive term was stuck"):
      mean-pooled transformer tokens of different clips start with cosine similarities close to 1
      (a component shared by every clip: positions, LayerNorm biases), audio and video sit apart,
      so a clip's own partner is *less* similar than the same-modality negatives; the fastest way
      down is to map every clip to one point, where the loss sits at ln(2B-1) with no gradient.
      The batch normalisation in the head removes the shared component and the loss leaves its
      chance value within tens of steps. The probes read the backbone's embeddings, before the
      head, as SimCLR and AVID do.
    - With ``gather_distributed`` the negatives come from all ranks; CAV-MAE computed the loss
      per GPU sub-batch under DataParallel and summed the sub-batch losses (its issue #6).

    Raises:
        ValueError: for a temperature <= 0 (or a learned one below 0.01), a negative width, or
            heads without a backbone.

    Examples:
        >>> loss = AVInfoNCE(temperature=0.1, gather_distributed=False, projection_dim=0)
        >>> out = {"audio_embedding": torch.randn(8, 32), "video_embedding": torch.randn(8, 32)}
        >>> result = loss({"unmasked": out}, {})
        >>> sorted(result.losses), result.chance["infonce"] == math.log(15)
        (['infonce'], True)
        >>> cav_mae = AVInfoNCE(temperature=0.05, gather_distributed=False, projection_dim=0,
        ...                     direction="v2a", negatives="cross_modal")
        >>> cav_mae({"unmasked": out}, {}).chance["infonce"] == math.log(8)
        True
    """

    requires = frozenset({"audio_embedding", "video_embedding"})
    stuck_hint = (
        "the audio and video embeddings of a clip are no closer than those of other clips. Check "
        "health/av_infonce/audio_z_std and video_z_std (near 0: collapsed), keep the projection heads "
        "(objectives.av_infonce.projection_dim > 0) and check in data_report.json that the clips have audio."
    )
    parameter_ranges = _INFONCE_RANGES

    def stuck_settings(self) -> dict[str, tuple[Any, Any]]:
        return {"temperature": (self.temperature.value, temperature_to_try(self.temperature.value))}

    def __init__(
        self,
        backbone: Optional[nn.Module] = None,
        temperature: float = 0.05,
        gather_distributed: bool = True,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
        pass_name: str = "unmasked",
        direction: Literal["both", "a2v", "v2a"] = "both",
        negatives: Literal["all", "cross_modal"] = "all",
        learn_temperature: bool = False,
    ):
        super().__init__()
        self.pass_names = (pass_name,)
        self.temperature = Temperature(temperature, learn_temperature)
        _check_heads(backbone, projection_dim, projection_hidden_dim)
        self.audio_head = _projection_head(backbone, projection_hidden_dim, projection_dim)
        self.video_head = _projection_head(backbone, projection_hidden_dim, projection_dim)
        self.gather_distributed = gather_distributed
        self.direction = direction
        self.negatives = negatives

    def forward(self, passes: dict[str, dict[str, Tensor]], batch: dict[str, Any]) -> ObjectiveOutput:
        out = passes[self.pass_names[0]]
        za = self.audio_head(out["audio_embedding"])  # (B, P)
        zv = self.video_head(out["video_embedding"])  # (B, P)
        na, nv = F.normalize(za, dim=1), F.normalize(zv, dim=1)  # (B, P)
        na_all, nv_all = _gathered(na, self.gather_distributed), _gathered(nv, self.gather_distributed)  # (N, P)
        same_side = self.negatives == "all"
        t = self.temperature()
        terms = []
        if self.direction in ("both", "a2v"):
            terms.append(info_nce_direction(na, nv_all, t, na_all if same_side else None))
        if self.direction in ("both", "v2a"):
            terms.append(info_nce_direction(nv, na_all, t, nv_all if same_side else None))
        clips = _clips(len(za), self.gather_distributed)
        health = {
            "retrieval_a2v": retrieval_top1(za, zv),
            "retrieval_v2a": retrieval_top1(zv, za),
            "retrieval_chance": za.new_tensor(1.0 / len(za)),
            "audio_z_std": embedding_std(za),
            "video_z_std": embedding_std(zv),
        }
        if self.temperature.learned:
            health["temperature"] = t.detach()
        return ObjectiveOutput(
            losses={"infonce": sum(terms) / len(terms)},
            chance={"infonce": math.log(2 * clips - 1) if same_side else math.log(clips)},
            health=health,
        )


@register_objective("intra_infonce")
class IntraInfoNCE(Objective):
    """InfoNCE between two masked views of the same clips, within one modality (MAViL's intra-modal contrast).

    Each clip's audio (or video) embedding from the first pass is paired with its embedding from
    the second pass, a differently masked view of the same clip; the other clips are negatives.
    The loss of a modality reads that modality's embeddings only, so it sends no gradient to the
    other modality's embeddings. Both directions are averaged (the two views are interchangeable).

    Published setting: MAViL (Huang et al., "MAViL: Masked Audio-Video Learners", NeurIPS 2023,
    arXiv:2212.08071) adds this contrast, for audio and video, to the inter-modal one
    (`av_infonce`) and masked reconstruction, with masking as the view augmentation. Its code was
    never released (`facebookresearch/MAViL` holds only a README; issues #4-#7), so its
    temperature, weights, heads and negatives are not verified in code. The
    defaults are SimCLR's form (NT-Xent negatives, a projection head per modality, lightly's
    `SimCLRProjectionHead`, shared by the two views) with a temperature of 0.1.

    Args:
        backbone: the encoder being trained (its ``embed_dim`` sizes the heads); only needed
            with projection heads.
        temperature: softmax temperature; with ``learn_temperature`` the starting value.
        gather_distributed: gather embeddings from all ranks so every rank sees all negatives.
        projection_dim: output width of the per-modality projection head; 0: no head.
        projection_hidden_dim: hidden width of the heads.
        pass_names: the two passes whose embeddings are contrasted, two different passes of the
            recipe's ``passes`` (e.g. two independently drawn 75% random maskings: the default
            ``masked`` of the menu and a ``masked_2`` the recipe defines).
        modality: which modality's views are contrasted: ``audio``, ``video`` or ``both`` (one
            loss term each).
        negatives: ``all``: the other clips of both views (NT-Xent, 2N - 1 candidates);
            ``cross_view``: only the other clips of the other view (N candidates).
        learn_temperature: learn a log-temperature starting at `temperature` (CLIP), clamped at
            0.01; logged as the health scalar ``temperature``.

    Returns from forward: loss terms ``audio`` and/or ``video`` (per `modality`), each with its
    chance value (ln(2N - 1) for ``all``, ln(N) for ``cross_view``, N clips over all ranks when
    gathered), and health scalars ``retrieval_<modality>`` (in-batch top-1 from the first view to
    the second, chance ``retrieval_chance`` = 1/B), ``<modality>_z_std`` (collapse monitor of the
    first view) and ``temperature`` when it is learned.

    Raises:
        ValueError: for a temperature <= 0 (or a learned one below 0.01), a negative width,
            heads without a backbone, or `pass_names` that are not two different passes.

    Examples:
        >>> loss = IntraInfoNCE(gather_distributed=False, projection_dim=0, modality="audio")
        >>> views = {p: {"audio_embedding": torch.randn(8, 32)} for p in ("masked", "masked_2")}
        >>> result = loss(views, {})
        >>> sorted(result.losses), result.chance["audio"] == math.log(15)
        (['audio'], True)
    """

    requires = frozenset({"audio_embedding", "video_embedding"})
    stuck_hint = (
        "the two masked views of a clip are no closer than those of other clips. Check "
        "health/intra_infonce/<modality>_z_std (near 0: collapsed), keep the projection heads "
        "(objectives.intra_infonce.projection_dim > 0) and try a lower masking ratio in its passes."
    )
    parameter_ranges = _INFONCE_RANGES

    def stuck_settings(self) -> dict[str, tuple[Any, Any]]:
        return {"temperature": (self.temperature.value, temperature_to_try(self.temperature.value))}

    def __init__(
        self,
        backbone: Optional[nn.Module] = None,
        temperature: float = 0.1,
        gather_distributed: bool = True,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
        pass_names: list[str] = ["masked", "masked_2"],  # noqa: B006 (read, never mutated)
        modality: Literal["audio", "video", "both"] = "both",
        negatives: Literal["all", "cross_view"] = "all",
        learn_temperature: bool = False,
    ):
        super().__init__()
        if len(pass_names) != 2 or pass_names[0] == pass_names[1]:
            raise ValueError(f"pass_names={list(pass_names)}: needs two different passes, two views of the same clips "
                             "(e.g. [masked, masked_2] with passes.masked_2 defined like passes.masked)")
        self.pass_names = tuple(pass_names)
        self.temperature = Temperature(temperature, learn_temperature)
        _check_heads(backbone, projection_dim, projection_hidden_dim)
        self.modalities = ("audio", "video") if modality == "both" else (modality,)
        self.heads = nn.ModuleDict(
            {m: _projection_head(backbone, projection_hidden_dim, projection_dim) for m in self.modalities}
        )
        self.gather_distributed = gather_distributed
        self.negatives = negatives

    def forward(self, passes: dict[str, dict[str, Tensor]], batch: dict[str, Any]) -> ObjectiveOutput:
        first, second = (passes[name] for name in self.pass_names)
        same_side = self.negatives == "all"
        t = self.temperature()
        losses, health = {}, {}
        for m in self.modalities:
            z1 = self.heads[m](first[f"{m}_embedding"])  # (B, P)
            z2 = self.heads[m](second[f"{m}_embedding"])  # (B, P)
            n1, n2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)  # (B, P)
            n1_all, n2_all = _gathered(n1, self.gather_distributed), _gathered(n2, self.gather_distributed)  # (N, P)
            losses[m] = (info_nce_direction(n1, n2_all, t, n1_all if same_side else None)
                         + info_nce_direction(n2, n1_all, t, n2_all if same_side else None)) / 2
            health[f"retrieval_{m}"] = retrieval_top1(z1, z2)
            health[f"{m}_z_std"] = embedding_std(z1)
        clips = _clips(len(z1), self.gather_distributed)
        chance = math.log(2 * clips - 1) if same_side else math.log(clips)
        health["retrieval_chance"] = z1.new_tensor(1.0 / len(z1))
        if self.temperature.learned:
            health["temperature"] = t.detach()
        return ObjectiveOutput(losses=losses, chance={m: chance for m in losses}, health=health)
