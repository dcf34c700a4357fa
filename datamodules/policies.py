"""What to do with files that cannot give a normal clip: one documented choice per case.

Each policy is a config value (``data.policies.*``); docs/data.md explains them and their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from avssl.schema import in_range, one_of


@dataclass
class DataPolicies:
    """How bad or unusual files are handled.

    Attributes:
        no_audio: a file without an audio stream is skipped (``skip``) or used with silent audio
            (``silence``: a zero waveform, whose fbank is a finite constant).
        short: a file shorter than a clip is padded (``pad``: frames spread over the seconds that
            exist, audio zero-padded at the end) or skipped (``skip``).
        min_clip_fraction: with ``short=pad``, a file (and its audio track) must still cover at
            least this fraction of a clip; shorter ones are skipped as ``too_short``.
        corrupt: a file whose data breaks part-way gives the clips that decode (``readable``), or
            none at all (``skip``: the first failing clip rejects the whole file).
        file_timeout_s: wall-clock limit for decoding one file (all its clips); past it the decoder
            is killed and the file is skipped as ``timeout``.
    """

    no_audio: str = field(default="skip", metadata=one_of(["skip", "silence"]))
    short: str = field(default="pad", metadata=one_of(["pad", "skip"]))
    min_clip_fraction: float = field(default=0.5, metadata=in_range(0.0, 1.0, include_low=False))
    corrupt: str = field(default="readable", metadata=one_of(["readable", "skip"]))
    file_timeout_s: float = field(default=60.0, metadata=in_range(0.0, 86_400.0, include_low=False))  # at most a day
