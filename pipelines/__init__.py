"""Inference pipelines: ONNX Runtime over readings, offload, joint inference, hot swap."""

from pipelines.service import PipelineService
from pipelines.settings import PipelinesSettings, StreamingPipelineSettings
from pipelines.streaming import StreamingPipeline

__all__ = ["PipelineService", "PipelinesSettings", "StreamingPipeline", "StreamingPipelineSettings"]
