"""Lightning callbacks: the run's checkpoint, data accounting, training health and evaluation during pretraining."""

from avssl.callbacks.data_report import DataReportCallback
from avssl.callbacks.health import ChanceMonitor
from avssl.callbacks.knn_monitor import KNNMonitor
from avssl.callbacks.last_checkpoint import AtomicCheckpointIO, LastCheckpoint
from avssl.callbacks.linear_probe import LinearProbeCallback
from avssl.callbacks.stop_signals import StopSignals

__all__ = ["AtomicCheckpointIO", "ChanceMonitor", "DataReportCallback", "KNNMonitor", "LastCheckpoint", "LinearProbeCallback",
           "StopSignals"]
