"""distillwatch: detect LLM distillation campaigns in a Kafka request stream."""

__version__ = "0.1.0"
