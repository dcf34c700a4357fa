"""Training-time augmentation of the pretraining clips: per modality, configurable, reproducible.

Config ``data.augment`` (docs/data.md, "Augmentation"); every part is off by default, so a recipe
that does not set it trains on exactly the clips it did before. The transforms are the
libraries', not ours:

* video (`augment_frames`): torchvision's ``transforms.v2`` ``RandomResizedCrop`` (Szegedy et al.,
  "Going Deeper with Convolutions", CVPR 2015, arXiv:1409.4842; the crop of SimCLR, arXiv:2002.05709,
  Appendix A), ``ColorJitter`` in a ``RandomApply`` and ``RandomGrayscale``. One call transforms
  the whole clip ``[T, 3, H, W]``, so every frame gets the same crop and colours (the frames stay
  a coherent video). No horizontal flip: in video the direction of motion can be the class.
* audio: torchaudio's ``FrequencyMasking`` and ``TimeMasking`` on the normalised fbank
  (`mask_fbank`; SpecAugment: Park et al., Interspeech 2019, arXiv:1904.08779; as CAV-MAE and AST
  use them, `YuanGongND/cav-mae@68fe8c2a src/dataloader.py`: frequency then time masks, masked
  to 0 before normalisation), and ``torchaudio.functional.gain`` and ``resample`` (a speed
  change) on the waveform before the fbank (`gain_waveform`, `speed_waveform`; speed
  perturbation: Ko et al., "Audio Augmentation for Speech Recognition", Interspeech 2015).
* the temporal offset between the streams is ``data.av_offset_s`` (`datamodules.views`), not part
  of this module.

Where it runs: in the decoder process of each DataLoader worker (`datamodules.stream`), on the
view's ``torch.Generator`` (seeded from ``(run.seed, epoch, video)``), so the same video in the
same epoch gives the same augmented clip on any rank or worker and after a resume, and each view
of a clip gets its own draws. With ``data.audio_features_on=device`` the gain still runs in the
worker (on the waveform) and the fbank masks run after the fbank is computed on the device, from a
seed the worker drew (``batch["fbank_mask_seed"]``), so both settings mask the same stripes.
torchvision and torchaudio draw from torch's global CPU generator; each transform runs under
`seeded` (a fork of that generator seeded from the view's), which leaves the global state as it
was. A part that is off draws nothing: with all parts off, the crops are those of a run without
``data.augment``.

Evaluation data (labelled clips, probes, ``embed_file``) is never augmented: only `ClipStream`
receives this config.

Deviation: CAV-MAE masks the fbank before normalisation with 0; we mask the normalised fbank with
``(mask_value - audio_mean) / audio_std``, the same number for the default ``mask_value = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torchaudio
import torchvision.transforms.v2 as v2
from torch import Tensor

from avssl.limits import MAX_AUDIO_FRAMES, MAX_MEL_BINS
from avssl.schema import in_range, min_max
from datamodules.preprocessing import Preprocessing
from datamodules.video_transforms import check_frames, resize_and_crop

# natural-log mel energy per dB of gain: g dB scales the power by 10^(g/10), so ln(power) moves by
# g * ln(10) / 10; kaldi's fbank is the natural log of mel power
LOG_MEL_PER_DB = math.log(10) / 10
MAX_SPEED_GRID = 50  # the speed factor is a multiple of 1/d, d the largest divisor of the rate up to this


@dataclass
class VideoAugmentation:
    """Augmentation of a clip's frames (``data.augment.video``); the defaults turn every part off.

    Attributes:
        resized_crop_scale: ``[min, max]`` area of the crop as a fraction of the full decoded frame,
            drawn uniformly (torchvision's ``RandomResizedCrop``; SimCLR: ``[0.08, 1.0]``); the
            crop is then resized to ``frame_size`` x ``frame_size``, replacing the resize and
            ``preprocessing.crop``. ``[1, 1]``: off (resize and crop as ``preprocessing`` says).
        resized_crop_ratio: ``[min, max]`` aspect ratio (width / height) of the crop, drawn
            log-uniformly (torchvision's default ``[3/4, 4/3]``).
        brightness: colour jitter: the brightness factor is drawn from ``[max(0, 1 - b), 1 + b]``
            (torchvision's ``ColorJitter``; SimCLR: 0.8 x strength 1); 0: off.
        contrast: as ``brightness``, for contrast.
        saturation: as ``brightness``, for saturation.
        hue: the hue shift is drawn from ``[-hue, hue]``, at most 0.5; 0: off.
        color_jitter_p: probability that a clip is colour-jittered (SimCLR: 0.8).
        grayscale_p: probability that a clip is turned grey, three equal channels (SimCLR: 0.2).
    """

    resized_crop_scale: list[float] = field(default_factory=lambda: [1.0, 1.0],
                                            metadata=min_max(in_range(0.0, 1.0, include_low=False)))
    resized_crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3], metadata=min_max(in_range(0.01, 100.0)))
    brightness: float = field(default=0.0, metadata=in_range(0.0, 10.0))
    contrast: float = field(default=0.0, metadata=in_range(0.0, 10.0))
    saturation: float = field(default=0.0, metadata=in_range(0.0, 10.0))
    hue: float = field(default=0.0, metadata=in_range(0.0, 0.5))
    color_jitter_p: float = field(default=1.0, metadata=in_range(0.0, 1.0))
    grayscale_p: float = field(default=0.0, metadata=in_range(0.0, 1.0))

    @property
    def resized_crop(self) -> bool:
        """Whether the random resized crop is on."""
        return list(self.resized_crop_scale) != [1.0, 1.0]

    @property
    def color_jitter(self) -> bool:
        """Whether the colour jitter is on."""
        strengths = (self.brightness, self.contrast, self.saturation, self.hue)
        return self.color_jitter_p > 0 and any(v > 0 for v in strengths)

    @property
    def enabled(self) -> bool:
        """Whether any part is on."""
        return self.resized_crop or self.color_jitter or self.grayscale_p > 0


@dataclass
class AudioAugmentation:
    """Augmentation of a clip's audio (``data.augment.audio``); the defaults turn every part off.

    Attributes:
        time_mask_frames: widest time mask, in fbank frames (torchaudio's ``TimeMasking``
            ``time_mask_param``: each mask's width is drawn uniformly below this, its start uniformly);
            0: off. CAV-MAE pretrains without masks (``timem = freqm = 0`` in
            ``src/run_cavmae_pretrain.py``) and fine-tunes on AudioSet with 192 of 1024 frames and
            48 of 128 bins (``egs/audioset/run_cavmae_ft_full.sh``).
        time_masks: time masks per clip.
        freq_mask_bins: widest frequency mask, in mel bins (``FrequencyMasking``
            ``freq_mask_param``); 0: off.
        freq_masks: frequency masks per clip.
        mask_value: what a masked stripe holds, as a natural-log mel energy before normalisation:
            the normalised fbank gets ``(mask_value - audio_mean) / audio_std`` there. 0.0 is
            CAV-MAE's and AST's (torchaudio's 0 applied before normalisation); set it to
            ``data.preprocessing.audio_mean`` for SpecAugment's mean (0 after normalisation).
        gain_db: ``[min, max]`` gain in dB, drawn uniformly per clip and applied to the waveform
            (``torchaudio.functional.gain``); each normalised fbank value of real audio moves by
            ``gain_db * ln(10) / 10 / audio_std``. ``[0, 0]``: off.
        speed: ``[min, max]`` speed factor, drawn log-uniformly per clip and applied to the
            waveform by resampling (as ``torchaudio.functional.speed``: tempo and pitch change
            together, Ko et al. use 0.9-1.1), rounded to a multiple of 0.02 at the usual sample
            rates (an arbitrary factor makes the resampling kernel, and its memory, explode);
            the result is cut to the clip's length, or repeated from its start to fill it. It breaks cross-modal cues of rate and timing (a sound's
            events no longer fall at the rate of the motion's). ``[1, 1]``: off.
    """

    time_mask_frames: int = field(default=0, metadata=in_range(0, MAX_AUDIO_FRAMES))
    time_masks: int = field(default=1, metadata=in_range(0, 100))
    freq_mask_bins: int = field(default=0, metadata=in_range(0, MAX_MEL_BINS))
    freq_masks: int = field(default=1, metadata=in_range(0, 100))
    mask_value: float = field(default=0.0, metadata=in_range(-100.0, 100.0))  # as data.preprocessing.audio_mean
    gain_db: list[float] = field(default_factory=lambda: [0.0, 0.0], metadata=min_max(in_range(-60.0, 60.0)))
    speed: list[float] = field(default_factory=lambda: [1.0, 1.0], metadata=min_max(in_range(0.1, 10.0)))

    @property
    def masks(self) -> bool:
        """Whether any fbank mask is on."""
        return self.time_mask_frames * self.time_masks > 0 or self.freq_mask_bins * self.freq_masks > 0

    @property
    def gain(self) -> bool:
        """Whether the gain is on."""
        return list(self.gain_db) != [0.0, 0.0]

    @property
    def speed_perturbation(self) -> bool:
        """Whether the speed perturbation is on."""
        return list(self.speed) != [1.0, 1.0]


@dataclass
class Augmentation:
    """Training-time augmentation of the pretraining clips (``data.augment``); off by default."""

    video: VideoAugmentation = field(default_factory=VideoAugmentation)
    audio: AudioAugmentation = field(default_factory=AudioAugmentation)


def draw_seed(generator: torch.Generator | None) -> int:
    """A seed for `seeded`, drawn from ``generator`` (None: torch's global CPU generator)."""
    return int(torch.randint(2**62, (1,), generator=generator))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Runs a block with torch's global CPU generator seeded with ``seed``, restoring it after.

    torchvision's and torchaudio's random transforms draw from that generator. Only the CPU
    generator is touched (`torch.manual_seed` would also reseed CUDA's, which the model's own
    randomness uses); both libraries draw their parameters on the CPU.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def video_transform(aug: VideoAugmentation, size: int) -> v2.Compose:
    """The torchvision transforms of ``aug`` that are on, for a clip ``uint8 [T, 3, H, W]``.

    The random resized crop (when on) gives ``[T, 3, size, size]``; the colour parts keep the size.
    """
    parts: list[v2.Transform] = []
    if aug.resized_crop:
        parts.append(v2.RandomResizedCrop((size, size), scale=tuple(aug.resized_crop_scale),
                                          ratio=tuple(aug.resized_crop_ratio),
                                          interpolation=v2.InterpolationMode.BILINEAR, antialias=True))
    if aug.color_jitter:
        jitter = v2.ColorJitter(brightness=aug.brightness, contrast=aug.contrast, saturation=aug.saturation,
                                hue=aug.hue)
        parts.append(v2.RandomApply([jitter], p=aug.color_jitter_p))
    if aug.grayscale_p > 0:
        parts.append(v2.RandomGrayscale(p=aug.grayscale_p))
    return v2.Compose(parts)


def augment_frames(frames: Tensor, pre: Preprocessing, aug: VideoAugmentation,
                   generator: torch.Generator | None = None) -> Tensor:
    """`resize_and_crop` with the video augmentation: decoded frames to an augmented uint8 clip.

    With the random resized crop on, the crop is cut from the full decoded frame and resized to
    ``frame_size`` in one step (``preprocessing.crop`` is not used); otherwise the frames are
    resized and cropped as ``preprocessing`` says. The colour parts follow. One draw serves every
    frame of the clip. With every part off this is `resize_and_crop` and draws what it draws.

    Args:
        frames: uint8 ``[T, H, W, 3]``.
        pre: ``frame_size`` (S), ``crop``.
        aug: the video augmentation.
        generator: draws the crop position and the augmentation's seed (None: torch's global RNG).

    Returns:
        uint8 ``[3, T, S, S]``.

    Raises:
        ValueError: if ``frames`` is not uint8 ``[T, H, W, 3]``.

    Examples:
        >>> aug = VideoAugmentation(resized_crop_scale=[0.2, 1.0], brightness=0.4)
        >>> frames = torch.zeros(4, 48, 64, 3, dtype=torch.uint8)
        >>> augment_frames(frames, Preprocessing(frame_size=32), aug, torch.Generator().manual_seed(0)).shape
        torch.Size([3, 4, 32, 32])
    """
    check_frames(frames)
    if aug.resized_crop:
        video = frames.permute(0, 3, 1, 2)  # (T, 3, H, W)
    else:
        video = resize_and_crop(frames, pre, generator).permute(1, 0, 2, 3)  # (T, 3, S, S)
    if aug.enabled:
        with seeded(draw_seed(generator)):
            video = video_transform(aug, pre.frame_size)(video)  # (T, 3, S, S)
    return video.permute(1, 0, 2, 3).contiguous()  # (3, T, S, S)


def gain_waveform(waveform: Tensor, aug: AudioAugmentation, generator: torch.Generator | None = None) -> Tensor:
    """The waveform with a gain drawn uniformly from ``aug.gain_db`` (dB); unchanged when it is off.

    In the normalised fbank (`log_mel_fbank`) a gain of g dB adds ``g * LOG_MEL_PER_DB /
    audio_std`` to every value computed from real audio (mel energies above kaldi's floor);
    zero padding stays as it was.

    Args:
        waveform: float ``[..., samples]``.
        aug: ``gain_db``.
        generator: draws the gain (nothing is drawn when the range is one value).

    Returns:
        float ``[..., samples]``.
    """
    low, high = aug.gain_db
    if not aug.gain:
        return waveform
    gain_db = low if low == high else low + (high - low) * float(torch.rand(1, generator=generator))
    return torchaudio.functional.gain(waveform, gain_db)


def speed_waveform(waveform: Tensor, sample_rate: int, aug: AudioAugmentation,
                   generator: torch.Generator | None = None) -> Tensor:
    """The waveform at a speed drawn log-uniformly from ``aug.speed``; unchanged when it is off.

    Args:
        waveform: float ``[samples]``.
        sample_rate: of ``waveform``.
        aug: ``speed``.
        generator: draws the factor (nothing is drawn when the range is one value); the factor is
            then rounded to a multiple of 1/d, d the largest divisor of ``sample_rate`` up to
            `MAX_SPEED_GRID` (1/50 at 16, 22.05, 44.1 and 48 kHz).

    Returns:
        float ``[samples]``: the resampled waveform cut to the input's length (slower), or repeated
        from its start up to it (faster).
    """
    if not aug.speed_perturbation:
        return waveform
    low, high = (math.log(v) for v in aug.speed)
    factor = math.exp(low if low == high else low + (high - low) * float(torch.rand(1, generator=generator)))
    # Speed k / d: read the waveform as if recorded at rate x k / d and resample it to the rate
    # (what torchaudio.functional.speed does, with exact integers: the resampling kernel grows
    # with the ratio's terms in lowest terms, which stay at most d when d divides the rate)
    grid = max(d for d in range(1, MAX_SPEED_GRID + 1) if sample_rate % d == 0)
    source_rate = sample_rate // grid * max(1, round(factor * grid))
    changed = torchaudio.functional.resample(waveform, source_rate, sample_rate)  # (samples / factor,)
    samples = waveform.shape[-1]
    if changed.shape[-1] < samples:
        changed = changed.repeat(math.ceil(samples / max(1, changed.shape[-1])))
    return changed[:samples]


def mask_fbank(fbank: Tensor, pre: Preprocessing, aug: AudioAugmentation, seed: int) -> Tensor:
    """The normalised fbank with ``aug``'s frequency masks, then its time masks (each whole stripes).

    Args:
        fbank: normalised float ``[1, F, M]`` (time along dim 1), on any device.
        pre: ``audio_mean`` and ``audio_std``, to express ``aug.mask_value`` after normalisation.
        aug: the mask widths and counts and ``mask_value``.
        seed: draws the masks (`draw_seed` of the view's generator); the same seed gives the same
            stripes on any device.

    Returns:
        float ``[1, F, M]``.
    """
    if not aug.masks:
        return fbank
    fill = (aug.mask_value - pre.audio_mean) / pre.audio_std
    spectrogram = fbank.transpose(-1, -2)  # (1, M, F): torchaudio's (..., freq, time)
    with seeded(seed):
        if aug.freq_mask_bins > 0:
            for _ in range(aug.freq_masks):
                spectrogram = torchaudio.transforms.FrequencyMasking(aug.freq_mask_bins)(spectrogram, fill)
        if aug.time_mask_frames > 0:
            for _ in range(aug.time_masks):
                spectrogram = torchaudio.transforms.TimeMasking(aug.time_mask_frames)(spectrogram, fill)
    return spectrogram.transpose(-1, -2).contiguous()  # (1, F, M)
