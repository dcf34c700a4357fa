"""The objective contract, over every pair of registered objective and backbone kind.

A pair that fits (the kind gives every key the objective reads, and can mask as its passes ask)
trains two steps: finite losses, the declared keys present, and a gradient for every parameter of
the objective and for every backbone parameter that feeds the keys it declares. A pair that does
not fit is refused when the config is loaded.
"""

import copy

import pytest
import torch
from torch import nn

import avssl

from avssl.backbones.registry import ENCODER_KINDS, build_encoder
from avssl.backbones.spec import BackboneSpec
from avssl.config import ConfigError, PretrainConfig, load_config
from avssl.export import export_encoder
from avssl.module import AVPretrainModule
from avssl.objectives import OBJECTIVES, Objective, ObjectiveOutput, build_objective, register_objective
from avssl.pretrain import main as pretrain_main
from datamodules.demo import render_demo_clips

TINY_KWARGS = {
    "masked_reconstruction": {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2},
    "av_infonce": {"gather_distributed": False, "projection_dim": 16, "projection_hidden_dim": 32},
    # two views from the default menu (its default second view, masked_2, is the recipe's to define)
    "intra_infonce": {"gather_distributed": False, "projection_dim": 16, "projection_hidden_dim": 32,
                      "pass_names": ["masked", "unmasked"]},
}
TINY_SPECS = {
    "cav_mae": {},
    "shared": {},
    "bottleneck": {"num_bottlenecks": 2},
    "cnn": {"video_tower": "strided_conv", "audio_tower": "strided_conv", "tower_width": 8},
}
PASSES = PretrainConfig().passes  # the default menu: "unmasked" and CAV-MAE's 75% "masked"


def _spec(kind: str) -> BackboneSpec:
    return BackboneSpec(kind=kind, embed_dim=32, num_heads=2, modality_specific_depth=1, shared_depth=1,
                        audio_frames=32, num_mel_bins=32, audio_patch=[16, 16], num_frames=2, frame_size=32,
                        video_patch=[1, 16, 16], **TINY_SPECS[kind])


def _fits(objective: str, kind: str) -> bool:
    """The kind gives every key the objective reads, and can mask as the passes it reads here ask
    (those of the objective built on torch's meta device, as the config check builds it)."""
    encoder = ENCODER_KINDS[kind]
    if not OBJECTIVES[objective].requires <= encoder.OUTPUT_KEYS:
        return False
    with torch.device("meta"):
        built, _ = build_objective(objective, TINY_KWARGS[objective], build_encoder(_spec(kind)))
    masks = any(PASSES[p].audio.ratio or PASSES[p].video.ratio for p in built.pass_names)
    return encoder.MASKABLE or not masks


def test_every_registered_objective_and_kind_is_covered():
    assert set(TINY_KWARGS) == set(OBJECTIVES)
    assert set(TINY_SPECS) == set(ENCODER_KINDS)


PAIRS = [(o, k) for o in sorted(OBJECTIVES) for k in sorted(ENCODER_KINDS)]


@pytest.mark.parametrize("objective_name,kind", [p for p in PAIRS if _fits(*p)])
def test_a_supported_pair_trains_two_steps_with_gradients_everywhere_it_reads(objective_name, kind):
    torch.manual_seed(0)
    backbone = build_encoder(_spec(kind))
    objective, _ = build_objective(objective_name, TINY_KWARGS[objective_name], backbone)
    batch = {"audio": torch.randn(4, 1, 32, 32), "video": torch.randn(4, 3, 2, 32, 32)}
    optimizer = torch.optim.AdamW([*backbone.parameters(), *objective.parameters()], lr=1e-3)

    def encode() -> dict:
        return {name: backbone.forward_features(batch["audio"], batch["video"], PASSES[name].audio, PASSES[name].video)
                for name in objective.pass_names}

    passes = encode()
    for name, out in passes.items():
        assert objective.requires <= set(out), f"pass {name} lacks {objective.requires - set(out)}"
    feeds = [out[k] for out in passes.values() for k in objective.requires if out[k].is_floating_point()]
    reachable = torch.autograd.grad(sum(t.float().sum() for t in feeds), list(backbone.parameters()),
                                    allow_unused=True, retain_graph=True)
    fed = [name for (name, _), g in zip(backbone.named_parameters(), reachable) if g is not None]
    assert fed, "the declared keys depend on no backbone parameter"

    for step in range(2):
        optimizer.zero_grad()
        losses = objective(passes if step == 0 else encode(), batch).losses
        assert losses and all(torch.isfinite(v) for v in losses.values()), losses
        sum(losses.values()).backward()
        params = dict(backbone.named_parameters())
        missing = [n for n in fed if params[n].grad is None]
        missing += [f"objective.{n}" for n, p in objective.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"no gradient for {missing[:5]}"
        optimizer.step()


@pytest.mark.parametrize("objective_name,kind", [p for p in PAIRS if not _fits(*p)])
def test_an_unsupported_pair_is_refused_at_config_time(objective_name, kind):
    args = ["recipe=default", f"backbone.kind={kind}", f"objectives.{objective_name}.weight=1"]
    with pytest.raises(ConfigError, match=rf"objectives.{objective_name} reads .*backbone.kind={kind}"):
        load_config(args)


def test_a_pass_that_masks_on_a_cnn_backbone_is_refused():
    with pytest.raises(ConfigError, match=r"reads the pass 'masked', which drops tokens .* backbone.kind=cnn"):
        load_config(["recipe=default", "objectives.av_infonce.pass_name=masked"])


def test_an_objective_reading_an_undefined_pass_is_refused():
    with pytest.raises(ConfigError, match=r"^objectives.av_infonce reads the pass 'clean', which the recipe does not "
                                          r"define \(passes: unmasked, masked\)"):
        load_config(["recipe=default", "objectives.av_infonce.pass_name=clean"])


def test_masked_reconstruction_on_a_pass_without_masking_is_refused():
    with pytest.raises(ConfigError, match=r"reconstructs masked tokens, but its pass 'unmasked' masks"):
        load_config(["recipe=cav_mae_demo", "objectives.masked_reconstruction.pass_name=unmasked"])


def test_a_recipe_can_define_its_own_passes_with_structured_masks():
    config = load_config(["recipe=cav_mae_demo", "passes.tube.video.strategy=tube", "passes.tube.video.ratio=0.5",
                          "passes.tube.audio.strategy=time", "passes.tube.audio.ratio=0.5",
                          "objectives.masked_reconstruction.pass_name=tube"])
    assert config.passes["tube"].video.strategy == "tube" and config.passes["masked"].audio.ratio == 0.75


class ReadsViews(Objective):
    """Pulls each clip's audio and video embeddings together in every pass it reads, which an
    argument named neither ``pass_name`` nor ``pass_names`` chooses."""

    requires = frozenset({"audio_embedding", "video_embedding"})

    def __init__(self, views: list[str] = ["unmasked"]):  # noqa: B006 (read, never mutated)
        super().__init__()
        self.pass_names = tuple(views)

    def forward(self, passes: dict, batch: dict) -> ObjectiveOutput:
        gaps = [(passes[v]["audio_embedding"] - passes[v]["video_embedding"]).pow(2).mean() for v in self.pass_names]
        return ObjectiveOutput({"gap": torch.stack(gaps).mean()})


class ReconstructsViews(ReadsViews):
    """`ReadsViews`, declaring that its passes must mask both modalities."""

    requires_masking = True


@pytest.fixture()
def registry():
    """`register_objective` for test-only objectives; the registry is as before once the test ends."""
    before = dict(OBJECTIVES)
    yield register_objective
    OBJECTIVES.clear()
    OBJECTIVES.update(before)


def test_the_passes_checked_are_those_the_built_objective_reads_whatever_its_argument_is_called(registry):
    registry("reads_views")(ReadsViews)
    with pytest.raises(ConfigError, match=r"^objectives.reads_views reads the pass 'elsewhere', which the recipe does "
                                          r"not define \(passes: unmasked, masked\)"):
        load_config(["recipe=default", "objectives.reads_views.weight=1", "objectives.reads_views.views=[unmasked,elsewhere]"])
    config = load_config(["recipe=default", "objectives.reads_views.weight=1", "passes.elsewhere.audio.ratio=0",
                          "objectives.reads_views.views=[unmasked,elsewhere]"])
    assert AVPretrainModule(config).passes_read == {"unmasked", "elsewhere"}


def test_a_masked_objective_is_refused_a_pass_without_masking_whatever_its_argument_is_called(registry):
    registry("reconstructs_views")(ReconstructsViews)
    with pytest.raises(ConfigError, match=r"^objectives.reconstructs_views reconstructs masked tokens, but its pass "
                                          r"'unmasked' masks audio.ratio=0.0, video.ratio=0.0"):
        load_config(["recipe=cav_mae_demo", "objectives.reconstructs_views.weight=1"])


class CopiesTheBackbone(Objective):
    """Keeps a frozen copy of the backbone made in ``__init__``, as an EMA teacher starts (XKD,
    MAViL stage 2), and pulls the embeddings of the backbone towards the copy's."""

    requires = frozenset({"audio_embedding", "video_embedding"})

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.pass_names = ("unmasked",)
        self.teacher = copy.deepcopy(backbone)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.teacher]

    def forward(self, passes: dict, batch: dict) -> ObjectiveOutput:
        with torch.no_grad():
            target = self.teacher.forward_features(batch["audio"], batch["video"])
        out = passes["unmasked"]
        return ObjectiveOutput({m: (out[f"{m}_embedding"] - target[f"{m}_embedding"]).pow(2).mean()
                                for m in ("audio", "video")})


TINY_RUN = ["recipe=default", "backbone.tower_width=4", "backbone.embed_dim=16", "data.preprocessing.clip_seconds=1.0",
            "data.preprocessing.num_mel_bins=16", "data.preprocessing.audio_frames=32",
            "data.preprocessing.frame_size=16", "data.preprocessing.num_frames=2", "data.num_workers=0",
            "data.batch_size=4", "objectives.av_infonce.projection_dim=8", "objectives.av_infonce.projection_hidden_dim=16",
            "objectives.av_infonce.gather_distributed=false", "probe.enabled=false", "health.knn_every_n_epochs=0",
            "trainer.enable_progress_bar=false", "trainer.max_steps=1"]


def test_an_objective_copying_the_backbone_copies_the_weights_of_backbone_init_from(registry, tmp_path):
    registry("copies_the_backbone")(CopiesTheBackbone)
    config = load_config(TINY_RUN)
    torch.manual_seed(1)  # not the run's seed (0): the export's weights are not the run's random initialisation
    export = export_encoder(build_encoder(config.backbone.resolve(config.data.preprocessing)),
                            config.data.preprocessing, tmp_path / "export")
    videos = render_demo_clips(tmp_path / "clips", num_unlabeled=4, clips_per_class=0, seed=3, size=32, seconds=1.0)
    run_dir = tmp_path / "run"
    assert pretrain_main([*TINY_RUN, f"data.root={videos.unlabeled}", f"run.dir={run_dir}", f"backbone.init_from={export}",
                          "objectives.copies_the_backbone.weight=1"]) == 0

    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    prefix = "objectives.copies_the_backbone.teacher."
    teacher = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    exported = avssl.load_backbone(export).encoder.state_dict()
    assert teacher.keys() == exported.keys()
    differ = [k for k in exported if not torch.equal(teacher[k], exported[k])]
    assert not differ, f"the copy made in __init__ is not the export's: {differ[:3]}"
