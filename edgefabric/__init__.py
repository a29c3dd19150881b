"""edgefabric's composition root: configs, the edge and cloud runtimes, the CLI and the demo."""

from edgefabric.cloud import Cloud
from edgefabric.config import CloudConfig, EdgeConfig, load_config
from edgefabric.edge import Edge

__all__ = ["Cloud", "CloudConfig", "Edge", "EdgeConfig", "load_config"]
