"""ParseEvents as a Beam transform: every random payload is accounted for."""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamsift.config import InputConfig
from streamsift.parsing import EventParser
from streamsift.pipeline.options import make_runner
from streamsift.records import DeadLetter, Event
from streamsift.transforms.parse import ParseEvents

CFG = InputConfig(feature_fields=("cpu", "mem"), max_payload_bytes=512)

payloads = st.one_of(
    st.binary(max_size=600),
    st.fixed_dictionaries(
        {},
        optional={
            "key": st.one_of(st.text(max_size=5), st.integers(), st.none()),
            "ts": st.one_of(st.integers(), st.floats(), st.text(max_size=25)),
            "cpu": st.one_of(st.floats(), st.integers(), st.text(max_size=3)),
            "mem": st.one_of(st.floats(), st.integers(), st.none()),
        },
    ).map(lambda o: json.dumps(o).encode()),
)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads, min_size=1, max_size=150))
def test_random_payloads_all_accounted_for_in_the_pipeline(batch):
    parser = EventParser(CFG)
    expected = [parser.parse(p) for p in batch]
    n_events = sum(isinstance(x, Event) for x in expected)
    kinds = sorted(x.error_kind for x in expected if isinstance(x, DeadLetter))
    with beam.Pipeline(runner=make_runner("DirectRunner")) as p:
        out = p | beam.Create(batch, reshuffle=False) | ParseEvents(CFG)
        events = out["events"] | "CountEvents" >> beam.combiners.Count.Globally()
        dead = out["dead_letter"] | "Kinds" >> beam.Map(lambda d: d.error_kind)
        assert_that(events, equal_to([n_events]), label="events")
        assert_that(dead, equal_to(kinds), label="dead")
