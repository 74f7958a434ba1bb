import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamsift.config import InputConfig
from streamsift.parsing import ERROR_KINDS, EventParser, parse_time
from streamsift.records import DeadLetter, Event

CFG = InputConfig(feature_fields=("cpu", "mem"), max_payload_bytes=2048, label_field="label")
P = EventParser(CFG)


def _ok(**kw):
    obj = {"key": "h1", "ts": "2026-01-01T00:00:00Z", "cpu": 1.5, "mem": 2}
    obj.update(kw)
    return json.dumps(obj).encode()


def test_valid_event():
    e = P.parse(_ok(label="spike"), ingest=5.0)
    assert e == Event("h1", 1767225600.0, (1.5, 2.0), "spike", 5.0)


@pytest.mark.parametrize(
    "ts, expected",
    [
        ("2026-01-01T00:00:00Z", 1767225600.0),
        ("2026-01-01T01:00:00+01:00", 1767225600.0),
        ("2026-01-01 00:00:00.250", 1767225600.25),
        (1767225600, 1767225600.0),
        (1767225600.5, 1767225600.5),
        (1767225600123, 1767225600.123),
        ("1767225600123", 1767225600.123),
    ],
)
def test_time_formats(ts, expected):
    assert P.parse(_ok(ts=ts)).ts == pytest.approx(expected)


def test_explicit_time_formats():
    assert parse_time(1767225600, "epoch_s") == 1767225600.0
    assert parse_time(1767225600000, "epoch_ms") == 1767225600.0
    with pytest.raises(ValueError, match="must be an ISO 8601 string"):
        parse_time(1767225600, "iso8601")


@pytest.mark.parametrize(
    "payload, kind",
    [
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (b"\xff\xfe", "bad_encoding"),
        (json.dumps({"ts": 1767225600, "cpu": 1, "mem": 1}).encode(), "missing_key"),
        (_ok(key=None), "bad_key"),
        (_ok(key=""), "bad_key"),
        (_ok(key=["a"]), "bad_key"),
        (json.dumps({"key": "a", "cpu": 1, "mem": 1}).encode(), "missing_time"),
        (_ok(ts="yesterday"), "bad_time"),
        (_ok(ts=True), "bad_time"),
        (_ok(ts=1.0), "bad_time"),  # 1970-01-01: out of range
        (json.dumps({"key": "a", "ts": 1767225600, "cpu": 1}).encode(), "missing_feature"),
        (_ok(cpu="high"), "bad_feature"),
        (_ok(cpu=None), "bad_feature"),
        (_ok(cpu=True), "bad_feature"),
        (b'{"key": "a", "ts": 1767225600, "cpu": NaN, "mem": 1}', "bad_feature"),
        (b'{"key": "a", "ts": 1767225600, "cpu": Infinity, "mem": 1}', "bad_feature"),
        (b'{"key": "a", "ts": 1767225600, "cpu": 1e400, "mem": 1}', "bad_feature"),
        (_ok(pad="x" * 5000), "oversize"),
    ],
)
def test_dead_letters_name_the_problem(payload, kind):
    d = P.parse(payload)
    assert isinstance(d, DeadLetter)
    assert d.error_kind == kind
    assert d.error_kind in ERROR_KINDS
    assert d.message
    assert d.payload == payload.decode("utf-8", "replace")


def test_messages_name_the_field():
    assert "'cpu'" in P.parse(_ok(cpu="x")).message
    assert "'ts'" in P.parse(_ok(ts="x")).message
    assert "2048" in P.parse(_ok(pad="x" * 5000)).message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _objects():
    field_values = st.one_of(
        json_values, st.floats(allow_nan=True, allow_infinity=True), st.integers()
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "key": st.one_of(st.text(max_size=300), st.integers(), json_values),
            "ts": st.one_of(
                st.integers(min_value=-(10**15), max_value=10**15),
                st.floats(),
                st.text(max_size=30),
                st.datetimes().map(lambda d: d.isoformat()),
            ),
            "cpu": field_values,
            "mem": field_values,
        },
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=3000),
        _objects().map(lambda o: json.dumps(o, allow_nan=True).encode()),
        json_values.map(lambda o: json.dumps(o, allow_nan=True).encode()),
    )
)
def test_property_every_payload_accounted_for(payload):
    out = P.parse(payload)
    assert isinstance(out, (Event, DeadLetter))
    if isinstance(out, Event):
        assert all(math.isfinite(v) for v in out.values)
        assert len(out.values) == 2
        assert math.isfinite(out.ts)
        assert out.key
    else:
        assert out.error_kind in ERROR_KINDS
        assert out.error_kind != "internal_error", out.message


_PAYLOADS = st.one_of(
    st.binary(max_size=3000),
    _objects().map(lambda o: json.dumps(o, allow_nan=True).encode()),
    _objects().map(lambda o: json.dumps(o, allow_nan=True, ensure_ascii=False).encode()),
    json_values.map(lambda o: json.dumps(o, allow_nan=True).encode()),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PAYLOADS, max_size=8))
def test_property_chunk_parser_equals_event_parser(payloads):
    # the batched engine's parser (orjson fast path) gives exactly the
    # per-element parser's events and dead letters, in input order
    from streamsift.models.batch import ChunkParser

    events, dead = ChunkParser(CFG).parse_many(payloads, ingest=3.0)
    ref = [P.parse(p, 3.0) for p in payloads]
    assert events == [r for r in ref if isinstance(r, Event)]
    assert dead == [r for r in ref if isinstance(r, DeadLetter)]


_NUMBER_TEXTS = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?\Z"),
    st.integers(min_value=300, max_value=400).map(lambda n: "9" * n),
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_PAYLOADS, _NUMBER_TEXTS.map(str.encode)))
def test_property_json_loads_is_the_standard_parser(raw):
    from streamsift.parsing import json_loads

    try:
        expected = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        with pytest.raises(type(exc)):
            json_loads(raw)
        return
    got = json_loads(raw)
    # integers beyond 64 bits come back as their float where orjson parsed the
    # text, as json's int where json did (see json_loads)
    assert json.dumps(got, allow_nan=True) in (
        json.dumps(expected, allow_nan=True),
        json.dumps(_wide_ints_as_floats(expected), allow_nan=True),
    )


def _wide_ints_as_floats(obj):
    if type(obj) is int and not -(2**63) <= obj < 2**64:
        try:
            return float(obj)
        except OverflowError:  # orjson refuses it: json.loads's int stands
            return obj
    if isinstance(obj, list):
        return [_wide_ints_as_floats(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _wide_ints_as_floats(v) for k, v in obj.items()}
    return obj
