"""Coverage-guided fuzzing of the frame decoder (atheris, i.e. libFuzzer for Python).

The one property: whatever bytes arrive, however they are split, and whatever the
frame size limit, ``FrameDecoder.feed`` returns decoded frames or raises
``ProtocolError``; nothing else ever escapes it. Once it has raised, every later
``feed`` raises ``ProtocolError`` too (the connection is closed, never resynchronised).
Every frame it returns has sane envelope fields and re-encodes to a frame that decodes
to the same message.

The first bytes of each input choose the frame size limit and where the stream is cut
into reads (see ``split_input``); the seeds start with a zero byte: the default limit,
one read. Run it with libFuzzer's flags, e.g. a bounded run::

    .venv/bin/python fuzz/fuzz_frames.py -runs=20000

It always starts from seeds it writes to var/fuzz/frames-seeds (a valid frame of every
message type, and a few broken ones), so mutations begin close to the format; a corpus
directory given first on the command line keeps what a run finds for the next one.
``make fuzz`` runs it for a few minutes; ``make test`` runs a short bounded pass
(tests/unit/wire/test_fuzz_frames.py).
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

import atheris
import msgspec

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["actors"]):
    from actors.wire import messages, protocol
    from actors.wire.errors import ProtocolError

_MAX_U64 = (1 << 64) - 1
_LIMITS = (protocol.DEFAULT_MAX_FRAME, 0, 1, 16, 64, 512, 4096)


def seeds() -> list[bytes]:
    """A valid frame of every message type, with defaults filled in where fields are required."""
    samples: dict[str, object] = {"str": "x", "int": 7, "float": 1.5, "bool": True}
    out: list[bytes] = []
    for cls in messages.TYPE_CODES:
        kwargs: dict[str, object] = {}
        for field in msgspec.structs.fields(cls):
            if field.required:
                kwargs[field.name] = _sample(field.type, samples)
        try:
            message = cls(**kwargs)
        except TypeError:
            continue
        for response in (False, True):
            out.append(
                protocol.encode(
                    message,
                    call_id=42,
                    deadline=1_900_000_000.0,
                    trace_id="ab" * 16,
                    response=response,
                )
            )
    out.append(b"".join(out[:4]))  # several frames in one read
    out.append(out[0][: protocol.HEADER_SIZE + 2])  # a frame cut in its body
    out.append(b"UH\x02" + out[0][3:])  # unsupported version
    return out


def _sample(tp: object, samples: dict[str, object]) -> object:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        fields = msgspec.structs.fields(tp)
        return tp(**{f.name: _sample(f.type, samples) for f in fields if f.required})
    if isinstance(tp, type) and tp.__name__ in samples:
        return samples[tp.__name__]
    origin = typing.get_origin(tp)
    if origin is tuple:
        return ()
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args:
        return _sample(args[0], samples)
    return None


def check_frame(frame: protocol.Frame, max_frame: int) -> None:
    assert isinstance(frame, protocol.Frame), type(frame)
    assert isinstance(frame.message, messages.Message), type(frame.message)
    assert 0 <= frame.call_id <= _MAX_U64
    assert len(frame.trace_id) == 32 and int(frame.trace_id, 16) >= 0
    assert frame.deadline >= 0
    assert frame.is_error == isinstance(frame.message, messages.Error)
    try:
        again = protocol.encode(
            frame.message,
            call_id=frame.call_id,
            deadline=frame.deadline,
            trace_id=frame.trace_id,
            response=frame.is_response,
            max_frame=max_frame,
        )
    except ProtocolError:
        return  # re-encoded JSON may be longer than the original body; a refusal is fine
    (back,) = protocol.FrameDecoder(max_frame).feed(again)
    assert back.message == frame.message, (frame.message, back.message)
    assert back.call_id == frame.call_id and back.trace_id == frame.trace_id
    assert back.is_response == frame.is_response


def split_input(data: bytes) -> tuple[int, list[bytes]]:
    """The fuzzer's bytes as (frame size limit, the reads the stream arrives in).

    Byte 0 picks the limit (low bits) and how many cuts (high bits); each cut is the
    next two bytes, an offset into the stream; the rest is the stream itself.
    """
    if not data:
        return protocol.DEFAULT_MAX_FRAME, [b""]
    max_frame = _LIMITS[data[0] % len(_LIMITS)]
    n_cuts = (data[0] >> 4) % 7
    raw_cuts, stream = data[1 : 1 + 2 * n_cuts], data[1 + 2 * n_cuts :]
    cuts = sorted(int.from_bytes(raw_cuts[i : i + 2], "big") for i in range(0, len(raw_cuts), 2))
    chunks, start = [], 0
    for cut in cuts:
        end = min(max(start, cut), len(stream))
        chunks.append(stream[start:end])
        start = end
    chunks.append(stream[start:])
    return max_frame, chunks


def test_one_input(data: bytes) -> None:
    max_frame, chunks = split_input(data)
    decoder = protocol.FrameDecoder(max_frame)
    failed = False
    for chunk in chunks:
        try:
            frames = decoder.feed(chunk)
        except ProtocolError:
            failed = True
            continue
        assert not failed, "the decoder accepted bytes after it had failed"
        assert isinstance(frames, list)
        for frame in frames:
            check_frame(frame, max_frame)
        assert decoder.buffered <= protocol.HEADER_SIZE + max_frame


def main(argv: list[str]) -> None:
    seed_dir = ROOT / "var" / "fuzz" / "frames-seeds"
    seed_dir.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds()):
        (seed_dir / f"seed-{i:03d}").write_bytes(b"\0" + seed)
    # libFuzzer adds what it finds to the first corpus directory and only reads the
    # others: the seeds go last, after any corpus directory given on the command line.
    atheris.Setup([*argv, str(seed_dir)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
