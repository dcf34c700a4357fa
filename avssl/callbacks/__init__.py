"""Lightning callbacks: data accounting, training health and evaluation during pretraining."""

from avssl.callbacks.data_report import DataReportCallback
from avssl.callbacks.health import ChanceMonitor
from avssl.callbacks.linear_probe import LinearProbeCallback

__all__ = ["ChanceMonitor", "DataReportCallback", "LinearProbeCallback"]
