"""What every normalizer does with a frame before and after its vendor-specific part.

Decoding JSON and turning reasons into one dead letter live here, so that every feed rejects bad
input the same way and a user reads the same kind of reason whichever feed it came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final

import orjson

from bridge.domain.ids import stable_id
from bridge.domain.models import DeadLetter, Normalized, ReceivedFrame, Row
from bridge.domain.values import InvalidValue

MAX_REASONS: Final = 10
MAX_STORED_CHARS: Final = 64 * 1024
"""A dead letter keeps this much of its frame (with the full length and a hash): a flood of huge bad
frames must not become a flood of huge rows held in memory."""


class UndecodableFrame(ValueError):
    """The frame's text is not JSON."""


def decode_json(frame: ReceivedFrame) -> object:
    if frame.decoded is not None:
        return frame.decoded
    try:
        return orjson.loads(frame.text)
    except orjson.JSONDecodeError as exc:
        raise UndecodableFrame(f"invalid JSON: {exc}") from None


def dead_letter(frame: ReceivedFrame, reasons: Sequence[str], kind: str = "invalid_message") -> DeadLetter:
    """One dead letter per frame, holding its exact text and every reason (the first few, counted)."""
    shown = list(reasons[:MAX_REASONS])
    if len(reasons) > MAX_REASONS:
        shown.append(f"and {len(reasons) - MAX_REASONS} more")
    text = frame.text
    length = digest = None
    if len(text) > MAX_STORED_CHARS:
        length = len(text)
        digest = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()
        shown.append(f"the frame is stored cut to its first {MAX_STORED_CHARS:,} characters (of {length:,})")
        text = text[:MAX_STORED_CHARS]
    if "\x00" in text:
        # PostgreSQL text cannot hold NUL; keep the frame readable and say so.
        text = text.replace("\x00", "\\u0000")
        shown.append("NUL characters in the frame are shown as \\u0000")
    return DeadLetter(
        id=stable_id("dead_letter", frame.feed, frame.received_at.isoformat(), frame.text),
        feed=frame.feed,
        received_at=frame.received_at,
        reason="; ".join(shown),
        frame=text,
        kind=kind,
        frame_length=length,
        frame_sha256=digest,
    )


NORMALIZER_ERROR: Final = "normalizer_error"
"""The dead-letter kind of a message a normalizer failed on unexpectedly (a bug or an unforeseen shape)."""
MAX_ERROR_CHARS: Final = 300


def unexpected(exc: BaseException) -> str:
    """The reason for a message that raised something no normalizer expects: ``normalizer_error: Type: msg``.

    The message is cut short: some exceptions (a ``RecursionError``'s, a ``decimal`` context's)
    carry long or repeated text, and the reason is read by a person.
    """
    try:
        message = str(exc)
    except Exception:  # an exception whose __str__ fails must still become a reason
        message = "(unprintable)"
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS] + "…"
    return f"{NORMALIZER_ERROR}: {type(exc).__name__}: {message}"


def normalize_totally(normalizer: Callable[[ReceivedFrame], Normalized], frame: ReceivedFrame) -> Normalized:
    """Call a normalizer so that it cannot raise: anything it raises is that frame's dead letter.

    Normalizers guard each message themselves (so one bad message costs only itself); this is the
    last line, which keeps a bug from ever restarting a feed or stopping a replay.
    """
    try:
        return normalizer(frame)
    except Exception as exc:
        return Normalized(dead_letters=(dead_letter(frame, [unexpected(exc)], NORMALIZER_ERROR),))


def normalize_message(frame: ReceivedFrame, rows_of: Callable[[object, datetime], tuple[Row, ...]]) -> Normalized:
    """For protocols whose frame is one JSON message: decode it, build its rows, or say why not."""
    try:
        rows = rows_of(decode_json(frame), frame.received_at)
    except UndecodableFrame as exc:
        return Normalized(dead_letters=(dead_letter(frame, [str(exc)], "invalid_json"),))
    except InvalidValue as exc:
        return Normalized(dead_letters=(dead_letter(frame, [str(exc)]),))
    except Exception as exc:  # anything else is a bug or a shape nobody foresaw: this message only
        return Normalized(dead_letters=(dead_letter(frame, [unexpected(exc)], NORMALIZER_ERROR),))
    return Normalized(rows=rows)
