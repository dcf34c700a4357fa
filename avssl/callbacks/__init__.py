"""Lightning callbacks: data accounting and evaluation during pretraining."""

from avssl.callbacks.data_report import DataReportCallback
from avssl.callbacks.linear_probe import LinearProbeCallback

__all__ = ["DataReportCallback", "LinearProbeCallback"]
