"""Text messages of any bytes, in any fragments: good UTF-8 arrives as sent, anything else as an escaped dead letter."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import Frame, Opcode

from bridge.adapters.feeds.websocket import _LenientMessageDecoder, frame_of
from tests.unit.fakes import T0


def fragments(raw: bytes, cuts: list[int]) -> list[Frame]:
    """``raw`` as a text message in fragments cut at ``cuts``: a TEXT frame, then CONTINUATION frames."""
    points = sorted({min(cut, len(raw)) for cut in cuts} | {0, len(raw)})
    pieces = [raw[start:end] for start, end in itertools.pairwise(points)] or [b""]
    return [
        Frame(Opcode.TEXT if n == 0 else Opcode.CONTINUATION, bytearray(piece), True, n == len(pieces) - 1)
        for n, piece in enumerate(pieces)
    ]


def receive(decoder: _LenientMessageDecoder, frames: list[Frame]) -> str:
    texts = [decoder.process_frame(frame) for frame in frames]
    assert all(text.opcode is Opcode.TEXT for text in texts)
    assert texts[-1].message_finished
    return "".join(str(text.payload) for text in texts)


utf8_or_not = st.one_of(st.text().map(str.encode), st.binary())


@given(st.lists(st.tuples(utf8_or_not, st.lists(st.integers(0, 64), max_size=4)), min_size=1, max_size=4))
def test_any_bytes_in_any_fragments(messages: list[tuple[bytes, list[int]]]) -> None:
    decoder = _LenientMessageDecoder()  # one decoder for the whole connection: no state leaks between messages
    for raw, cuts in messages:
        frame = frame_of("test", T0, receive(decoder, fragments(raw, cuts)))
        try:
            expected = raw.decode("utf-8")
        except UnicodeDecodeError:
            assert frame.problem is not None and frame.problem[0] == "invalid_utf8"
            assert frame.text == raw.decode("utf-8", errors="backslashreplace")
        else:
            assert frame.problem is None
            assert frame.text == expected
        assert decoder.message_bytes == len(raw)
        assert decoder.message_prefix == raw


def test_binary_messages_are_passed_through_untouched() -> None:
    decoder = _LenientMessageDecoder()
    result = decoder.process_frame(Frame(Opcode.BINARY, bytearray(b"\xff{}"), True, True))
    assert result.opcode is Opcode.BINARY and result.payload == b"\xff{}"
    frame = frame_of("test", T0, bytes(result.payload))  # type: ignore[arg-type]
    assert frame.text == "\\xff{}"
    assert frame.problem == (
        "invalid_utf8",
        "binary frame is not UTF-8: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
    )


def test_the_prefix_of_a_huge_message_is_bounded() -> None:
    decoder = _LenientMessageDecoder()
    chunk = bytearray(b"x" * 40_000)
    for n in range(5):
        decoder.process_frame(Frame(Opcode.TEXT if n == 0 else Opcode.CONTINUATION, chunk, n == 4, n == 4))
    assert decoder.message_bytes == 200_000
    assert decoder.message_prefix == b"x" * 64 * 1024
