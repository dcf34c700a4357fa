"""InfoNCE variants (av_infonce, intra_infonce) against hand computations, their chance values, the
learned temperature, the intra-modal objective's independence of the other modality, and negatives
gathered over two gloo processes."""

import datetime
import math

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from avssl.backbones import AudioVisualEncoder, BackboneSpec
from avssl.config import ConfigError, load_config
from avssl.objectives import build_objective
from avssl.objectives.contrastive import MIN_TEMPERATURE, AVInfoNCE, IntraInfoNCE


def naive_direction(q, k, t, same_side_negatives):
    """Each query q_i against k_j for every j (and q_j for j != i with same-side negatives), written out."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    losses = []
    for i in range(len(q)):
        candidates = [k[j] for j in range(len(k))]  # the positive is candidate i
        if same_side_negatives:
            candidates += [q[j] for j in range(len(q)) if j != i]
        logits = torch.stack([q[i] @ c / t for c in candidates])
        losses.append(-F.log_softmax(logits, dim=0)[i])
    return torch.stack(losses).mean()


def naive_infonce(a, v, t, direction, same_side_negatives):
    terms = []
    if direction in ("both", "a2v"):
        terms.append(naive_direction(a, v, t, same_side_negatives))
    if direction in ("both", "v2a"):
        terms.append(naive_direction(v, a, t, same_side_negatives))
    return sum(terms) / len(terms)


def av(a, v):
    return {"unmasked": {"audio_embedding": a, "video_embedding": v}}


@pytest.mark.parametrize("negatives", ["all", "cross_modal"])
@pytest.mark.parametrize("direction", ["both", "a2v", "v2a"])
@pytest.mark.parametrize("batch,dim,temperature", [(2, 4, 0.05), (5, 16, 0.1), (8, 3, 0.5)])
def test_av_infonce_matches_a_hand_computation(batch, dim, temperature, direction, negatives):
    torch.manual_seed(batch + dim)
    a, v = torch.randn(batch, dim), torch.randn(batch, dim)
    loss = AVInfoNCE(temperature=temperature, gather_distributed=False, projection_dim=0, direction=direction,
                     negatives=negatives)
    result = loss(av(a, v), {})
    expected = naive_infonce(a, v, temperature, direction, negatives == "all")
    torch.testing.assert_close(result.losses["infonce"], expected)
    chance = math.log(2 * batch - 1) if negatives == "all" else math.log(batch)
    assert result.chance["infonce"] == pytest.approx(chance)


def test_the_default_is_lightlys_nt_xent_and_swapping_directions_swaps_modalities():
    torch.manual_seed(0)
    a, v = torch.randn(6, 8), torch.randn(6, 8)
    default = AVInfoNCE(temperature=0.07, gather_distributed=False, projection_dim=0)
    torch.testing.assert_close(default(av(a, v), {}).losses["infonce"], NTXentLoss(temperature=0.07)(a, v))
    a2v = AVInfoNCE(gather_distributed=False, projection_dim=0, direction="a2v", negatives="cross_modal")
    v2a = AVInfoNCE(gather_distributed=False, projection_dim=0, direction="v2a", negatives="cross_modal")
    torch.testing.assert_close(a2v(av(a, v), {}).losses["infonce"], v2a(av(v, a), {}).losses["infonce"])


def test_cav_mae_form_is_its_published_formula():
    # YuanGongND/cav-mae@68fe8c2a forward_contrastive: -mean(diag(log_softmax(a @ v.T / 0.05, dim=0)))
    torch.manual_seed(0)
    a, v = torch.randn(7, 12), torch.randn(7, 12)
    sim = F.normalize(a, dim=1) @ F.normalize(v, dim=1).T / 0.05
    expected = -torch.diag(F.log_softmax(sim, dim=0)).mean()
    cav = AVInfoNCE(temperature=0.05, gather_distributed=False, projection_dim=0, direction="v2a", negatives="cross_modal")
    torch.testing.assert_close(cav(av(a, v), {}).losses["infonce"], expected)


@pytest.mark.parametrize("negatives", ["all", "cross_modal"])
@pytest.mark.parametrize("direction", ["both", "a2v", "v2a"])
def test_one_embedding_for_every_clip_sits_at_the_chance_value(direction, negatives):
    batch = 6
    same = torch.randn(1, 5).expand(batch, 5)
    loss = AVInfoNCE(temperature=0.1, gather_distributed=False, projection_dim=0, direction=direction, negatives=negatives)
    result = loss(av(same, same), {})
    assert result.losses["infonce"].item() == pytest.approx(result.chance["infonce"], rel=1e-5)


def test_a_learned_temperature_gets_a_gradient_is_logged_and_clamped():
    torch.manual_seed(0)
    a, v = torch.randn(4, 8), torch.randn(4, 8)
    loss = AVInfoNCE(temperature=0.2, gather_distributed=False, projection_dim=0, learn_temperature=True)
    result = loss(av(a, v), {})
    assert result.health["temperature"].item() == pytest.approx(0.2)
    torch.testing.assert_close(result.losses["infonce"], naive_infonce(a, v, 0.2, "both", True))
    result.losses["infonce"].backward()
    grad = loss.temperature.log_value.grad
    assert grad is not None and torch.isfinite(grad) and grad.item() != 0.0
    with torch.no_grad():
        loss.temperature.log_value.fill_(math.log(1e-4))
    assert loss(av(a, v), {}).health["temperature"].item() == pytest.approx(MIN_TEMPERATURE)
    fixed = AVInfoNCE(gather_distributed=False, projection_dim=0)
    assert "temperature" not in fixed(av(a, v), {}).health and not list(fixed.parameters())  # old checkpoints' keys


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"temperature": 0.0}, "temperature=0.0: must be > 0"),
        ({"temperature": 0.001, "learn_temperature": True}, "learned temperature starts at >= 0.01"),
    ],
)
def test_bad_temperatures_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AVInfoNCE(projection_dim=0, **kwargs)


SPEC = BackboneSpec(
    embed_dim=32, num_heads=4, modality_specific_depth=1, shared_depth=1,
    audio_frames=32, num_mel_bins=32, num_frames=2, frame_size=32, video_patch=[2, 16, 16],
)


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("av_infonce", {"direction": "sideways"}, r"objectives.av_infonce.direction=sideways: must be one of \['both', 'a2v', 'v2a'\]"),
        ("av_infonce", {"negatives": "cross_view"}, r"objectives.av_infonce.negatives=cross_view: must be one of"),
        ("intra_infonce", {"modality": "text"}, r"objectives.intra_infonce.modality=text: must be one of"),
        ("intra_infonce", {"pass_names": ["masked", "masked"]}, r"pass_names=\['masked', 'masked'\]: needs two different passes"),
        ("intra_infonce", {"pass_names": "masked"}, r"objectives.intra_infonce.pass_names=masked: must be a list of strings"),
    ],
)
def test_bad_variant_settings_name_the_key(name, params, message):
    with pytest.raises(ConfigError, match=message):
        build_objective(name, params, AudioVisualEncoder(SPEC))


def views(first, second, modality="audio"):
    return {"masked": {f"{modality}_embedding": first}, "masked_2": {f"{modality}_embedding": second}}


@pytest.mark.parametrize("negatives", ["all", "cross_view"])
@pytest.mark.parametrize("batch,dim,temperature", [(2, 4, 0.05), (6, 16, 0.2)])
def test_intra_infonce_matches_a_hand_computation(batch, dim, temperature, negatives):
    torch.manual_seed(batch)
    x1, x2 = torch.randn(batch, dim), torch.randn(batch, dim)
    loss = IntraInfoNCE(temperature=temperature, gather_distributed=False, projection_dim=0, modality="video",
                        negatives=negatives)
    result = loss(views(x1, x2, "video"), {})
    assert set(result.losses) == {"video"}
    torch.testing.assert_close(result.losses["video"], naive_infonce(x1, x2, temperature, "both", negatives == "all"))
    chance = math.log(2 * batch - 1) if negatives == "all" else math.log(batch)
    assert result.chance["video"] == pytest.approx(chance)
    same = x1[:1].expand(batch, dim)
    assert loss(views(same, same, "video"), {}).losses["video"].item() == pytest.approx(chance, rel=1e-5)


def test_intra_infonce_sends_no_gradient_to_the_other_modality():
    torch.manual_seed(0)
    tensors = {f"{m}{i}": torch.randn(4, 8, requires_grad=True) for m in ("audio", "video") for i in (1, 2)}
    passes = {"masked": {"audio_embedding": tensors["audio1"], "video_embedding": tensors["video1"]},
              "masked_2": {"audio_embedding": tensors["audio2"], "video_embedding": tensors["video2"]}}
    both = IntraInfoNCE(backbone=AudioVisualEncoder(BackboneSpec(embed_dim=8, num_heads=2, modality_specific_depth=1,
                                                                 shared_depth=1)),
                        gather_distributed=False, projection_dim=4, projection_hidden_dim=8)
    losses = both(passes, {}).losses
    for term, other in (("audio", "video"), ("video", "audio")):
        grads = torch.autograd.grad(losses[term], [tensors[f"{other}1"], tensors[f"{other}2"], *both.heads[other].parameters()],
                                    allow_unused=True, retain_graph=True)
        assert all(g is None for g in grads), f"the {term} term reaches the {other} embeddings or head"
        own = torch.autograd.grad(losses[term], [tensors[f"{term}1"], tensors[f"{term}2"]], retain_graph=True)
        assert all(g.abs().sum() > 0 for g in own)
    audio_only = IntraInfoNCE(gather_distributed=False, projection_dim=0, modality="audio")
    audio_only(passes, {}).losses["audio"].backward()
    assert tensors["video1"].grad is None and tensors["video2"].grad is None


def test_intra_infonce_needs_the_recipe_to_define_its_second_view():
    with pytest.raises(ConfigError, match=r"reads the pass 'masked_2', which the recipe does not define .*define passes.masked_2"):
        load_config(["recipe=cav_mae_demo", "objectives.intra_infonce.weight=1"])
    config = load_config(["recipe=cav_mae_demo", "objectives.intra_infonce.weight=1",
                          "passes.masked_2.audio.ratio=0.75", "passes.masked_2.video.ratio=0.75"])
    assert config.passes["masked_2"].video.ratio == 0.75


# -- negatives gathered over two processes ------------------------------------------------------

WORLD, ROWS, DIM = 2, 3, 5  # ROWS clips per rank
GATHER_CASES = [
    ("av_infonce", {"direction": "both", "negatives": "all"}),
    ("av_infonce", {"direction": "v2a", "negatives": "cross_modal", "learn_temperature": True}),
    ("av_infonce", {"direction": "a2v", "negatives": "all"}),
    ("av_infonce", {"direction": "both", "negatives": "cross_modal"}),
    ("intra_infonce", {"modality": "audio", "negatives": "cross_view"}),
    ("intra_infonce", {"modality": "audio", "negatives": "all", "learn_temperature": True}),
]


def _case(name, kwargs, x, y, gather):
    """The objective of a case and its passes: x and y are the audio and video (or the two audio views) [B, D]."""
    if name == "av_infonce":
        objective = AVInfoNCE(temperature=0.1, gather_distributed=gather, projection_dim=0, **kwargs)
        return objective, av(x, y), "infonce"
    objective = IntraInfoNCE(temperature=0.1, gather_distributed=gather, projection_dim=0, **kwargs)
    return objective, views(x, y), "audio"


def _run_case(name, kwargs, x, y, gather):
    x, y = x.clone().requires_grad_(), y.clone().requires_grad_()
    objective, passes, term = _case(name, kwargs, x, y, gather)
    result = objective(passes, {})
    result.losses[term].backward()
    temperature = objective.temperature.log_value
    return {"loss": result.losses[term].detach(), "chance": result.chance[term], "grad_x": x.grad, "grad_y": y.grad,
            "grad_t": None if temperature is None else temperature.grad}


def _all_inputs():
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(WORLD * ROWS, DIM, generator=generator), torch.randn(WORLD * ROWS, DIM, generator=generator))
            for _ in GATHER_CASES]


def _gloo_worker(rank, init_file, out_dir):
    torch_dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                                  timeout=datetime.timedelta(seconds=60))
    try:
        rows = slice(rank * ROWS, (rank + 1) * ROWS)
        results = [_run_case(name, kwargs, x[rows], y[rows], gather=True)
                   for (name, kwargs), (x, y) in zip(GATHER_CASES, _all_inputs())]
        torch.save(results, f"{out_dir}/{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


def test_gathered_negatives_give_the_single_process_loss_and_gradients(tmp_path):
    """Each rank's loss is the mean over its own rows, so the mean over ranks is the single-process
    loss on the concatenated batch. Lightly's gather sums every rank's gradient for a rank's
    embeddings, so each rank's embedding gradient is WORLD times the single-process one (DDP's
    averaging over ranks divides it back); a learned temperature is a replica on every rank, and
    the mean of its gradients over ranks is the single-process one."""
    mp.spawn(_gloo_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(WORLD)]
    for i, ((name, kwargs), (x, y)) in enumerate(zip(GATHER_CASES, _all_inputs())):
        single = _run_case(name, kwargs, x, y, gather=False)
        case = f"{name} {kwargs}"
        torch.testing.assert_close(sum(r[i]["loss"] for r in ranks) / WORLD, single["loss"], msg=case)
        assert all(r[i]["chance"] == pytest.approx(single["chance"]) for r in ranks), case  # N = WORLD * ROWS
        for r, result in enumerate(ranks):
            rows = slice(r * ROWS, (r + 1) * ROWS)
            torch.testing.assert_close(result[i]["grad_x"], WORLD * single["grad_x"][rows], msg=case)
            torch.testing.assert_close(result[i]["grad_y"], WORLD * single["grad_y"][rows], msg=case)
        if single["grad_t"] is not None:
            torch.testing.assert_close(sum(r[i]["grad_t"] for r in ranks) / WORLD, single["grad_t"], msg=case)
