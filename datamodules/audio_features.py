"""Log-mel filterbank features, as CAV-MAE computes them.

CAV-MAE (Gong et al., "Contrastive Audio-Visual Masked Autoencoder", ICLR 2023,
arXiv:2210.07839; `YuanGongND/cav-mae@68fe8c2a src/dataloader.py`) removes the waveform's mean,
takes a kaldi fbank (HTK-compatible, Hanning window, no energy, no dither), pads with zeros or
crops to a fixed number of frames and normalises with dataset statistics. The window, hop, bins,
frame count and statistics come from `Preprocessing`; its defaults are CAV-MAE's
(``(fbank - mean) / std``, without AST's extra factor 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor

from datamodules.preprocessing import Preprocessing


def log_mel_fbank(waveform: Tensor, pre: Preprocessing) -> Tensor:
    """Turns a mono waveform into a normalised log-mel spectrogram.

    Silence is safe: kaldi's fbank floors the mel energies at float epsilon before the log, so an
    all-zero waveform gives a finite constant (log(1.19e-7) = -15.9 before normalisation).

    Args:
        waveform: float ``[samples]`` at ``pre.sample_rate``.
        pre: sample rate, window, hop, mel bins, frame count and normalisation statistics.

    Returns:
        float32 ``[1, pre.audio_frames, pre.num_mel_bins]``: time along dim 1, zero-padded
        (before normalisation, as in CAV-MAE) or cropped at the end.

    Raises:
        ValueError: if ``waveform`` is not 1-D.

    Examples:
        >>> pre = Preprocessing(audio_frames=100, num_mel_bins=64)
        >>> log_mel_fbank(torch.zeros(16000), pre).shape
        torch.Size([1, 100, 64])
    """
    if waveform.ndim != 1:
        raise ValueError(f"waveform must be 1-D [samples], got shape {tuple(waveform.shape)}")
    waveform = waveform.float()
    frame_samples = round(pre.frame_length_ms * pre.sample_rate / 1000)
    if waveform.numel() < frame_samples:  # kaldi's fbank cannot frame it; all padding then
        fbank = waveform.new_zeros(0, pre.num_mel_bins)
    else:
        fbank = torchaudio.compliance.kaldi.fbank(
            (waveform - waveform.mean())[None],  # (1, samples)
            htk_compat=True,
            sample_frequency=pre.sample_rate,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=pre.num_mel_bins,
            dither=0.0,
            frame_length=pre.frame_length_ms,
            frame_shift=pre.frame_shift_ms,
        )  # (frames, mels)
    missing = pre.audio_frames - fbank.shape[0]
    fbank = F.pad(fbank, (0, 0, 0, missing)) if missing > 0 else fbank[: pre.audio_frames]
    return ((fbank - pre.audio_mean) / pre.audio_std)[None]  # (1, audio_frames, mels)


def real_audio_frames(audio_real: Tensor, pre: Preprocessing) -> Tensor:
    """Which frames of `log_mel_fbank` are computed from real audio samples only.

    A frame whose window holds a single padded sample (zeros before a delayed track, after a
    short one, or the frames added to reach ``audio_frames``) is not real.

    Args:
        audio_real: bool ``[samples]``, which waveform samples came from the file (`DecodedClip`).
        pre: sample rate, window, hop and frame count.

    Returns:
        bool ``[pre.audio_frames]``.
    """
    window = round(pre.frame_length_ms * pre.sample_rate / 1000)
    shift = round(pre.frame_shift_ms * pre.sample_rate / 1000)
    if audio_real.numel() < window:
        return audio_real.new_zeros(pre.audio_frames, dtype=torch.bool)
    frames = audio_real.unfold(0, window, shift).all(dim=1)  # (kaldi frames,) as snip_edges frames them
    missing = pre.audio_frames - frames.shape[0]
    return F.pad(frames, (0, missing)) if missing > 0 else frames[: pre.audio_frames]


def log_mel_fbank_batch(waveforms: Tensor, pre: Preprocessing) -> Tensor:
    """`log_mel_fbank` of every waveform of a batch, on the batch's device (e.g. the GPU).

    Used with ``data.audio_features_on=device``: the workers then send waveforms and the features
    are computed after the batch is moved to the accelerator.

    Args:
        waveforms: float ``[B, samples]``.
        pre: as for `log_mel_fbank`.

    Returns:
        float32 ``[B, 1, pre.audio_frames, pre.num_mel_bins]``.
    """
    if waveforms.shape[0] == 0:
        return waveforms.new_zeros(0, 1, pre.audio_frames, pre.num_mel_bins)
    return torch.stack([log_mel_fbank(waveform, pre) for waveform in waveforms])
