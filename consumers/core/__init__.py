"""The pure core: features, models, campaign logic and flag policy. Knows nothing of Kafka.

Driven only by event time and seeded randomness, so file replay, live consumption and
historical replay give the same flags. See :mod:`consumers.core.stage` for the interface that
the Kafka layer (:mod:`consumers.kafka`) and file replay (:mod:`consumers.replay`) both drive.
"""
