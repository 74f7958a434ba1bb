"""Broker I/O: Kafka and Pub/Sub sources and sinks.

- :mod:`streamsift.io.watermark`: pure watermark / commit-ledger logic.
- :mod:`streamsift.io.clients`: confluent-kafka and Pub/Sub pull clients.
- :mod:`streamsift.io.direct`: the unbounded source for streamsift's DirectRunner.
- :mod:`streamsift.io.sinks`: ``file://``, ``kafka://`` and ``pubsub://`` destinations.
- :mod:`streamsift.io.run`: running the pipeline on a broker source.
"""
