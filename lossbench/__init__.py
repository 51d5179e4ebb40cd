"""lossbench: benchmark and analysis suite for instance-aware segmentation losses.

The few names most users need are importable from here; everything else lives in the subpackages
(``lossbench.cc``, ``lossbench.losses``, ``lossbench.metrics``, ``lossbench.data``,
``lossbench.study``, ``lossbench.report``).
"""

from lossbench.errors import ConfigError, DataError, LossbenchError, ShapeError

__version__ = "0.1.0"

__all__ = ["__version__", "LossbenchError", "ShapeError", "ConfigError", "DataError"]
