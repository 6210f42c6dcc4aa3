"""distillwatch benchmarks: scripts that *measure* and print numbers (never timed asserts in tests).

Entry point: ``python bench/run.py`` (see ``bench/README.md``). Modules:

* :mod:`bench.common` — the data set (simulated events as raw JSON bytes), timing helpers,
  machine facts, the result-row format and the table printer;
* :mod:`bench.validation` — cost of validating one RequestEvent on the hot path;
* :mod:`bench.core` — pure-core throughput (``LocalPipeline`` and each stage) and a cProfile;
* :mod:`bench.replay` — ``distillwatch replay --input FILE`` end to end (in process and as a
  subprocess, start-up reported apart);
* :mod:`bench.kafka` — on the real broker: produce, raw confluent-kafka consume rate (the
  ceiling) and ``distillwatch detect`` over the same topic.
"""
