"""``bridge simulate NAME``: one built-in simulator in the foreground, and the variables that reach it.

The variables printed are the vendor's settings that differ from the defaults (the simulator's URL,
its token, the accounts it serves), as ``export`` lines a shell can evaluate, plus ``BRIDGE_FEEDS``.
"""

from __future__ import annotations

import shlex
import signal
from typing import Any, TextIO

import attrs
import trio

from bridge.app.service import utc_now
from bridge.app.vendors.base import FeedSpec, Simulated, SimulatorOptions


def export_lines(spec: FeedSpec[Any], vendor: Any) -> list[str]:
    """``export NAME=value`` for each of ``vendor``'s settings that is not its default."""
    defaults = spec.settings()
    lines = [f"export BRIDGE_FEEDS={spec.name}"]
    for field in attrs.fields(spec.settings):
        value = getattr(vendor, field.name)
        if value == getattr(defaults, field.name) or value is None:
            continue
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        lines.append(f"export {spec.env_name(field)}={shlex.quote(text)}")
    return lines


async def serve_simulator(spec: FeedSpec[Any], *, host: str, port: int, rate: float, out: TextIO) -> None:
    """Serve ``spec``'s simulator until SIGINT/SIGTERM, after printing how to point the bridge at it."""
    options = SimulatorOptions(host=host, port=port, rate=rate, start=utc_now())
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running: Simulated[Any] = await nursery.start(spec.simulator, options)
            print(f"# the {spec.name} simulator is running; in another shell:", file=out)
            for line in export_lines(spec, running.settings):
                print(line, file=out)
            print("# then: bridge run   (Ctrl-C here stops the simulator)", file=out, flush=True)
            await anext(signals)
            nursery.cancel_scope.cancel()
