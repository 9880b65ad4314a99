"""Unit and property tests for actors.wire.protocol: framing, the decoder's bounds, errors."""

from __future__ import annotations

import json
import types
import typing
from typing import TypedDict, TypeVar, Unpack, cast

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from actors.wire import errors, messages, protocol
from actors.wire.errors import ProtocolError
from actors.wire.messages import Message

ALL_TYPES: list[type[Message]] = list(messages.TYPE_CODES)
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
MAX_U64 = 2**64 - 1

# -- strategies built from each message class's msgspec fields --------------------------

S = TypeVar("S", bound=msgspec.Struct)

_struct_cache: dict[type[msgspec.Struct], st.SearchStrategy[msgspec.Struct]] = {}


def strategy_for_type(tp: object) -> st.SearchStrategy[object]:
    """A strategy for one field type as msgspec reports it (resolved annotations)."""
    if typing.get_origin(tp) is typing.Annotated:
        base, *extras = typing.get_args(tp)
        patterns = [m.pattern for m in extras if isinstance(m, msgspec.Meta) and m.pattern]
        if base is str and patterns:
            (pattern,) = patterns
            return st.from_regex(pattern, fullmatch=True)
        lengths = [m.max_length for m in extras if isinstance(m, msgspec.Meta) and m.max_length]
        if typing.get_origin(base) is tuple and lengths and not patterns:
            (item, _) = typing.get_args(base)
            return st.lists(strategy_for_type(item), max_size=min(4, *lengths)).map(tuple)
        raise AssertionError(f"no strategy for constrained field {tp!r}")
    if tp is str:
        return st.text()  # arbitrary unicode (hypothesis leaves out lone surrogates)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(MIN_INT, MAX_INT)
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return strategy_for_struct(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(strategy_for_type(args[0]), max_size=4).map(tuple)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for_type(a) for a in args))
    if tp is type(None):
        return st.none()
    raise AssertionError(f"no strategy for field type {tp!r}: extend strategy_for_type")


def strategy_for_struct(cls: type[S]) -> st.SearchStrategy[S]:
    """Every field of ``cls`` drawn; optional fields sometimes left at their default."""
    if cls not in _struct_cache:
        required: dict[str, st.SearchStrategy[object]] = {}
        optional: dict[str, st.SearchStrategy[object]] = {}
        for field in msgspec.structs.fields(cls):
            strat = strategy_for_type(field.type)
            (required if field.required else optional)[field.name] = strat
        _struct_cache[cls] = st.fixed_dictionaries(required, optional=optional).map(
            lambda kw: cls(**kw)
        )
    # Keyed by class: the strategy cached for cls draws instances of cls.
    return cast(st.SearchStrategy[S], _struct_cache[cls])


any_message = st.sampled_from(ALL_TYPES).flatmap(strategy_for_struct)
trace_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)
call_ids = st.integers(0, MAX_U64)
deadlines = st.floats(min_value=0, max_value=4_102_444_800.0)  # up to year 2100
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Envelope(TypedDict):
    """One message with what protocol.encode puts around it."""

    message: Message
    call_id: int
    deadline: float
    trace_id: str
    response: bool


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    return {
        "message": draw(any_message),
        "call_id": draw(call_ids),
        "deadline": draw(deadlines),
        "trace_id": draw(trace_ids),
        "response": draw(st.booleans()),
    }


def frame_bytes(env: Envelope) -> bytes:
    return protocol.encode(**env)


def assert_frame_matches(frame: protocol.Frame, env: Envelope) -> None:
    assert type(frame.message) is type(env["message"])
    assert frame.message == env["message"]
    assert frame.call_id == env["call_id"]
    assert frame.trace_id == env["trace_id"]
    assert frame.is_response == env["response"]
    assert frame.is_error == isinstance(env["message"], messages.Error)
    # Deadlines travel in whole milliseconds, rounded down (never extended).
    assert abs(frame.deadline - env["deadline"]) < 0.001
    assert frame.deadline <= env["deadline"] + 1e-6


def header(
    *,
    magic: bytes = protocol.MAGIC,
    version: int = protocol.VERSION,
    flags: int = 0,
    code: int = messages.TYPE_CODES[messages.Ping],
    call_id: int = 1,
    deadline_ms: int = 2_000_000_000_000,
    trace: bytes = b"\x01" * 16,
    body_len: int = 0,
) -> bytes:
    return protocol.HEADER.pack(magic, version, flags, code, call_id, deadline_ms, trace, body_len)


class HeaderFields(TypedDict, total=False):
    """header()'s fields but the body length, which raw_frame() sets."""

    magic: bytes
    version: int
    flags: int
    code: int
    call_id: int
    deadline_ms: int
    trace: bytes


def raw_frame(body: bytes, **kw: Unpack[HeaderFields]) -> bytes:
    return header(body_len=len(body), **kw) + body


# -- the strategies really cover every message type --------------------------------------


def test_strategies_cover_every_registered_type() -> None:
    assert set(messages.TYPE_CODES) == set(messages.TYPES_BY_CODE.values())
    assert len(set(messages.TYPE_CODES.values())) == len(messages.TYPE_CODES)  # codes unique
    for cls in ALL_TYPES:
        strategy_for_struct(cls)  # raises if a field type has no strategy


def test_header_layout() -> None:
    assert protocol.HEADER_SIZE == 42
    data = protocol.encode(
        messages.Ping(), call_id=7, deadline=12.345, trace_id="ab" * 16, response=True
    )
    assert data[:2] == b"UH"
    assert data[2] == protocol.VERSION
    assert data[3] == protocol.FLAG_RESPONSE
    assert int.from_bytes(data[4:6], "big") == messages.TYPE_CODES[messages.Ping]
    assert int.from_bytes(data[6:14], "big") == 7
    assert int.from_bytes(data[14:22], "big") == 12345
    assert data[22:38] == bytes.fromhex("ab" * 16)
    assert int.from_bytes(data[38:42], "big") == len(data) - 42
    assert json.loads(data[42:]) == {}


# -- round trip -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_round_trip_every_type(cls: type[Message], data: st.DataObject) -> None:
    env: Envelope = {
        "message": data.draw(strategy_for_struct(cls)),
        "call_id": data.draw(call_ids),
        "deadline": data.draw(deadlines),
        "trace_id": data.draw(trace_ids),
        "response": data.draw(st.booleans()),
    }
    raw = frame_bytes(env)
    decoder = protocol.FrameDecoder()
    frames = decoder.feed(raw)
    assert len(frames) == 1
    assert_frame_matches(frames[0], env)
    assert decoder.buffered == 0


@settings(max_examples=200, deadline=None)
@given(env=envelopes())
def test_round_trip_any_message(env: Envelope) -> None:
    (frame,) = protocol.FrameDecoder().feed(frame_bytes(env))
    assert_frame_matches(frame, env)


def test_round_trip_whole_millisecond_deadline_is_exact() -> None:
    deadline = 1_700_000_000.123
    (frame,) = protocol.FrameDecoder().feed(
        protocol.encode(messages.Ack(), call_id=1, deadline=deadline, trace_id="00" * 16)
    )
    assert frame.deadline == deadline


def test_encode_edge_values() -> None:
    dec = protocol.FrameDecoder()
    (frame,) = dec.feed(protocol.encode(messages.Ping(), call_id=MAX_U64, deadline=-5, trace_id=""))
    assert frame.call_id == MAX_U64
    assert frame.deadline == 0  # negative deadlines clamp to 0
    assert frame.trace_id == "00" * 16  # empty trace id travels as zeros
    (frame,) = dec.feed(protocol.encode(messages.Ping(), call_id=0, deadline=1, trace_id="AB" * 16))
    assert frame.trace_id == "ab" * 16  # hex is normalised to lower case


@pytest.mark.parametrize("call_id", [-1, MAX_U64 + 1])
def test_encode_rejects_call_id_out_of_range(call_id: int) -> None:
    with pytest.raises(ProtocolError):
        protocol.encode(messages.Ping(), call_id=call_id, deadline=1, trace_id="")


@pytest.mark.parametrize("trace_id", ["zz" * 16, "ab" * 15, "ab" * 17, "abc"])
def test_encode_rejects_bad_trace_id(trace_id: str) -> None:
    with pytest.raises(ProtocolError):
        protocol.encode(messages.Ping(), call_id=1, deadline=1, trace_id=trace_id)


def test_encode_rejects_unregistered_type() -> None:
    class Stray(Message, frozen=True):
        x: int = 0

    with pytest.raises(ProtocolError):
        protocol.encode(Stray(), call_id=1, deadline=1, trace_id="")


# -- streams split anywhere -------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(envs=st.lists(envelopes(), min_size=2, max_size=5))
def test_stream_split_at_every_byte_boundary(envs: list[Envelope]) -> None:
    stream = b"".join(frame_bytes(e) for e in envs)
    assume(len(stream) < 4000)

    # one byte at a time
    decoder = protocol.FrameDecoder()
    got: list[protocol.Frame] = []
    for i in range(len(stream)):
        got.extend(decoder.feed(stream[i : i + 1]))
    assert len(got) == len(envs)
    for frame, env in zip(got, envs, strict=True):
        assert_frame_matches(frame, env)
    assert decoder.buffered == 0

    # every single split point, including the two ends
    expected = got
    for cut in range(len(stream) + 1):
        decoder = protocol.FrameDecoder()
        frames = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert frames == expected, f"split at {cut}"
        assert decoder.buffered == 0


@settings(max_examples=60, deadline=None)
@given(envs=st.lists(envelopes(), min_size=1, max_size=6), data=st.data())
def test_stream_split_into_random_chunks(envs: list[Envelope], data: st.DataObject) -> None:
    stream = b"".join(frame_bytes(e) for e in envs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    decoder = protocol.FrameDecoder()
    got: list[protocol.Frame] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        got.extend(decoder.feed(stream[prev:cut]))
        prev = cut
    assert len(got) == len(envs)
    for frame, env in zip(got, envs, strict=True):
        assert_frame_matches(frame, env)


def test_partial_frame_returns_nothing_and_keeps_buffer() -> None:
    raw = protocol.encode(messages.Login("a", "b"), call_id=1, deadline=1, trace_id="")
    decoder = protocol.FrameDecoder()
    assert decoder.feed(raw[:10]) == []
    assert decoder.feed(raw[10:-1]) == []
    (frame,) = decoder.feed(raw[-1:])
    assert frame.message == messages.Login("a", "b")
    assert decoder.feed(b"") == []


# -- arbitrary input never escapes as anything but ProtocolError ---------------------------


def feed_all(decoder: protocol.FrameDecoder, chunks: list[bytes]) -> None:
    """Feed chunks; only ProtocolError may escape, and after it the decoder refuses input."""
    for chunk in chunks:
        try:
            frames = decoder.feed(chunk)
        except ProtocolError:
            with pytest.raises(ProtocolError):
                decoder.feed(b"")
            with pytest.raises(ProtocolError):
                decoder.feed(protocol.encode(messages.Ping(), call_id=1, deadline=1, trace_id=""))
            return
        for frame in frames:
            assert type(frame.message) in messages.TYPE_CODES
        # never more than one header plus one maximum body is held
        assert decoder.buffered <= protocol.HEADER_SIZE + decoder.max_frame


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=200), max_size=10))
def test_arbitrary_bytes_only_raise_protocol_error(chunks: list[bytes]) -> None:
    feed_all(protocol.FrameDecoder(max_frame=1000), chunks)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def _jsonish_body(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def plausible_frames(draw: st.DrawFn) -> bytes:
    """A frame that is mostly well formed: usually a valid header, a body that may be
    valid, slightly corrupted, valid JSON of the wrong shape, or random bytes."""
    code = draw(st.sampled_from(sorted(messages.TYPES_BY_CODE)))
    cls = messages.TYPES_BY_CODE[code]
    body_kind = draw(st.sampled_from(["valid", "mutated", "mutated", "json", "fields", "bytes"]))
    if body_kind in ("valid", "mutated"):
        body = msgspec.json.encode(draw(strategy_for_struct(cls)))
        if body_kind == "mutated":  # a few bytes inserted or overwritten anywhere
            buf = bytearray(body)
            for _ in range(draw(st.integers(1, 3))):
                pos = draw(st.integers(0, len(buf)))
                byte = draw(st.integers(0, 255))
                if draw(st.booleans()) and pos < len(buf):
                    buf[pos] = byte
                else:
                    buf.insert(pos, byte)
            body = bytes(buf)
    elif body_kind == "fields":
        names = [f.name for f in msgspec.structs.fields(cls)]
        fields = st.fixed_dictionaries({}, optional=dict.fromkeys(names, json_values))
        body = _jsonish_body(draw(fields))
    elif body_kind == "json":
        body = _jsonish_body(draw(json_values))
    else:
        body = draw(st.binary(max_size=100))
    flags = (protocol.FLAG_ERROR if code == ERROR else 0) | draw(st.sampled_from([0, 1]))
    kw: HeaderFields = {
        "flags": flags,
        "code": code,
        "call_id": draw(call_ids),
        "deadline_ms": draw(st.integers(0, MAX_U64)),
        "trace": draw(st.binary(min_size=16, max_size=16)),
    }
    corrupt = draw(st.sampled_from([None, None, None, "magic", "version", "flags", "code"]))
    if corrupt == "magic":
        kw["magic"] = draw(st.binary(min_size=2, max_size=2))
    elif corrupt == "version":
        kw["version"] = draw(st.integers(0, 255))
    elif corrupt == "flags":
        kw["flags"] = draw(st.integers(0, 255))
    elif corrupt == "code":
        kw["code"] = draw(st.integers(0, 0xFFFF))
    return raw_frame(body, **kw)


@settings(max_examples=500, deadline=None)
@given(frames=st.lists(plausible_frames(), min_size=1, max_size=4), data=st.data())
def test_plausible_frames_only_raise_protocol_error(
    frames: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    feed_all(protocol.FrameDecoder(), chunks)


# -- the size bound ---------------------------------------------------------------------


def test_oversized_header_rejected_before_any_body_byte() -> None:
    decoder = protocol.FrameDecoder(max_frame=100)
    raw = header(body_len=101)
    assert decoder.feed(raw[:-1]) == []  # header not complete yet: nothing to judge
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.feed(raw[-1:])  # the last header byte, no body at all
    with pytest.raises(ProtocolError):
        decoder.feed(b"{}")


def test_huge_announced_body_rejected_with_default_limit() -> None:
    decoder = protocol.FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(header(body_len=0xFFFFFFFF))
    assert decoder.buffered <= protocol.HEADER_SIZE


def test_body_exactly_at_limit_is_accepted() -> None:
    msg = messages.RenewLease(lease_id="x" * 50)
    body = msgspec.json.encode(msg)
    raw = protocol.encode(msg, call_id=1, deadline=1, trace_id="", max_frame=len(body))
    (frame,) = protocol.FrameDecoder(max_frame=len(body)).feed(raw)
    assert frame.message == msg
    with pytest.raises(ProtocolError):
        protocol.FrameDecoder(max_frame=len(body) - 1).feed(raw)


def test_encode_refuses_oversized_body() -> None:
    msg = messages.RenewLease(lease_id="x" * 200)
    with pytest.raises(ProtocolError):
        protocol.encode(msg, call_id=1, deadline=1, trace_id="", max_frame=100)
    big = messages.RenewLease(lease_id="x" * (protocol.DEFAULT_MAX_FRAME + 1))
    with pytest.raises(ProtocolError):
        protocol.encode(big, call_id=1, deadline=1, trace_id="")


# -- each malformed header or body is a ProtocolError, and is final ----------------------

PING = messages.TYPE_CODES[messages.Ping]
ERROR = messages.TYPE_CODES[messages.Error]
REGISTER = messages.TYPE_CODES[messages.Register]
GOOD_ERROR_BODY = msgspec.json.encode(messages.Error(code="busy", message="m"))


class RegisterFields(TypedDict):
    """The required fields of a Register, as its JSON body carries them."""

    kind: str
    host: str
    port: int
    capacity: int
    pid: int


GOOD_REGISTER: RegisterFields = {
    "kind": "db_worker",
    "host": "h",
    "port": 1,
    "capacity": 2,
    "pid": 3,
}

UNUSED_CODE = next(c for c in range(1, 0x10000) if c not in messages.TYPES_BY_CODE)

BAD_FRAMES = {
    "bad magic": raw_frame(b"{}", magic=b"HU"),
    "bad version 0": raw_frame(b"{}", version=0),
    "bad version 2": raw_frame(b"{}", version=2),
    "unknown flag bit 2": raw_frame(b"{}", flags=0x04),
    "unknown flag bit 7": raw_frame(b"{}", flags=0x81),
    "unknown type code": raw_frame(b"{}", code=UNUSED_CODE),
    "type code 0": raw_frame(b"{}", code=0),
    "error flag on a non-error": raw_frame(b"{}", flags=protocol.FLAG_ERROR),
    "error type without error flag": raw_frame(GOOD_ERROR_BODY, code=ERROR, flags=1),
    "body not JSON": raw_frame(b"{not json"),
    "body not UTF-8": raw_frame(b"\xff\xfe{}"),
    "empty body": raw_frame(b""),
    "body is an array": raw_frame(b"[]"),
    "body has trailing bytes": raw_frame(b"{}{}"),
    "missing required field": raw_frame(b'{"kind": "db_worker"}', code=REGISTER),
    "string field given an int": raw_frame(
        json.dumps({**GOOD_REGISTER, "kind": 1}).encode(), code=REGISTER
    ),
    "int field given a string": raw_frame(
        json.dumps({**GOOD_REGISTER, "port": "1"}).encode(), code=REGISTER
    ),
    "int field given a float": raw_frame(
        json.dumps({**GOOD_REGISTER, "port": 1.5}).encode(), code=REGISTER
    ),
    "bool field given an int": raw_frame(
        json.dumps({**GOOD_REGISTER, "ready": 1}).encode(), code=REGISTER
    ),
    "nested struct wrong": raw_frame(
        json.dumps({"user": {"user_id": "x"}}).encode(), code=messages.TYPE_CODES[messages.Profile]
    ),
    "tuple of structs wrong": raw_frame(
        json.dumps({"workers": [1, 2]}).encode(), code=messages.TYPE_CODES[messages.WorkerList]
    ),
    "float out of range": raw_frame(
        b'{"ttl_s": 1e400}', code=messages.TYPE_CODES[messages.LeaseRenewed]
    ),
}


@pytest.mark.parametrize("raw", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
def test_malformed_frame_is_protocol_error_and_final(raw: bytes) -> None:
    good = protocol.encode(messages.Ack(), call_id=9, deadline=1, trace_id="")
    decoder = protocol.FrameDecoder()
    assert len(decoder.feed(good)) == 1  # a healthy stream first
    with pytest.raises(ProtocolError):
        decoder.feed(raw)
    with pytest.raises(ProtocolError):
        decoder.feed(good)
    with pytest.raises(ProtocolError):
        decoder.feed(b"")


@pytest.mark.parametrize("bad", [b"\xff", b"\xed\xa0\x80", b"\xc3"])
def test_invalid_utf8_in_string_body_is_protocol_error(bad: bytes) -> None:
    pong = messages.TYPE_CODES[messages.Pong]
    good = protocol.encode(messages.Ack(), call_id=9, deadline=1, trace_id="")
    decoder = protocol.FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(raw_frame(b'{"kind": "' + bad + b'"}', code=pong) + good)
    with pytest.raises(ProtocolError):
        decoder.feed(good)  # and the stream is dead afterwards


def test_header_errors_need_only_the_header() -> None:
    # Bad magic/version/flags/type are detected on the header alone, with no body sent.
    bad: list[HeaderFields] = [
        {"magic": b"XX"},
        {"version": 9},
        {"flags": 8},
        {"code": UNUSED_CODE},
    ]
    for kw in bad:
        decoder = protocol.FrameDecoder()
        with pytest.raises(ProtocolError):
            decoder.feed(header(body_len=10, **kw))


def test_unknown_fields_are_ignored() -> None:
    body = json.dumps({**GOOD_REGISTER, "future_field": [1, 2]}).encode()
    (frame,) = protocol.FrameDecoder().feed(raw_frame(body, code=REGISTER))
    assert frame.message == messages.Register(**GOOD_REGISTER)


def test_error_flag_set_by_encode() -> None:
    raw = protocol.encode(messages.Error(code="x", message="y"), call_id=1, deadline=1, trace_id="")
    assert raw[3] == protocol.FLAG_ERROR
    raw = protocol.encode(
        messages.Error(code="x", message="y"), call_id=1, deadline=1, trace_id="", response=True
    )
    assert raw[3] == protocol.FLAG_ERROR | protocol.FLAG_RESPONSE
    (frame,) = protocol.FrameDecoder().feed(raw)
    assert frame.is_error and frame.is_response


# -- errors on the wire -----------------------------------------------------------------


def _concrete_error_classes() -> list[type[errors.UserhubError]]:
    classes: set[type[errors.UserhubError]] = {errors.UserhubError, *errors.BY_CODE.values()}
    out = []
    for cls in classes:
        if cls is errors.Throttled:
            continue
        out.append(cls)
    return sorted(out, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _concrete_error_classes(), ids=lambda c: c.__name__)
@settings(max_examples=15, deadline=None)
@given(text=st.text(min_size=1), field=st.none() | st.text())
def test_error_round_trip(cls: type[errors.UserhubError], text: str, field: str | None) -> None:
    exc = cls(text, field=field)
    wire = protocol.error_message(exc)
    assert wire.code == cls.code and wire.retriable == cls.retriable
    # through real bytes, too
    raw = protocol.encode(wire, call_id=1, deadline=1, trace_id="", response=True)
    (frame,) = protocol.FrameDecoder().feed(raw)
    assert isinstance(frame.message, messages.Error)
    with pytest.raises(errors.UserhubError) as info:
        protocol.raise_error(frame.message)
    got = info.value
    expected_cls = errors.InternalError if cls is errors.UserhubError else cls
    assert type(got) is expected_cls
    assert got.code == exc.code
    assert got.message == exc.message == text
    assert got.retriable == exc.retriable
    assert got.field == field


@pytest.mark.parametrize("retry_after", [1, 7, 3600])
def test_throttled_keeps_retry_after(retry_after: int) -> None:
    wire = protocol.error_message(errors.Throttled("slow down", retry_after_s=retry_after))
    assert wire.code == "throttled" and wire.retry_after_s == retry_after
    with pytest.raises(errors.Throttled) as info:
        protocol.raise_error(wire)
    assert info.value.retry_after_s == retry_after
    assert info.value.message == "slow down"
    assert info.value.code == "throttled"


def test_throttled_retry_after_at_least_one() -> None:
    with pytest.raises(errors.Throttled) as info:
        protocol.raise_error(messages.Error(code="throttled", message="x", retry_after_s=0))
    assert info.value.retry_after_s == 1


def test_empty_message_becomes_code() -> None:
    wire = protocol.error_message(errors.Busy())
    assert wire.message == "busy"
    with pytest.raises(errors.Busy) as info:
        protocol.raise_error(wire)
    assert info.value.message == "busy"


@given(code=st.text().filter(lambda c: c not in errors.BY_CODE), text=st.text(min_size=1))
@settings(max_examples=50, deadline=None)
def test_unknown_error_code_becomes_internal(code: str, text: str) -> None:
    with pytest.raises(errors.UserhubError) as info:
        protocol.raise_error(messages.Error(code=code, message=text, retriable=True))
    assert type(info.value) is errors.InternalError
    assert info.value.code == "internal"
    assert info.value.message == text
    assert info.value.retriable is False


def test_every_code_maps_to_its_class() -> None:
    for code, cls in errors.BY_CODE.items():
        assert cls.code == code
    families = {"bad_request": errors.CallerError, "unavailable": errors.DependencyError}
    for code, cls in families.items():
        with pytest.raises(cls) as info:
            protocol.raise_error(messages.Error(code=code, message="m"))
        assert type(info.value) is cls


@pytest.mark.parametrize(
    "token_hash", ["ab" * 32 + "\n", "AB" * 32, "ab" * 31, "ab" * 33, "zz" * 32, ""]
)
def test_a_malformed_token_hash_does_not_decode(token_hash: str) -> None:
    frame = protocol.encode(messages.GetProfile(token_hash), call_id=1, deadline=2e9, trace_id="")
    with pytest.raises(ProtocolError, match="token_hash"):
        protocol.FrameDecoder().feed(frame)
