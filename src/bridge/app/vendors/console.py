"""The Developer Console feed: settings, wiring, probe and simulator in one place."""

from __future__ import annotations

import functools
import secrets
from typing import TYPE_CHECKING

import attrs
import trio

from bridge.adapters.feeds.console import ConsoleFeed
from bridge.adapters.simulator.console import serve_console_simulator
from bridge.adapters.simulator.server import SentLog
from bridge.app.setting_types import WebSocketUrl, setting
from bridge.app.vendors.base import CheckResult, FeedSpec, Simulated, SimulatorOptions
from bridge.app.vendors.probes import check_websocket
from bridge.domain.normalizers.console import normalize_console
from bridge.domain.ports import Clock, Feed, Normalizer

if TYPE_CHECKING:
    from bridge.app.settings import Settings


@attrs.frozen
class ConsoleSettings:
    url: WebSocketUrl | None = setting(
        None, "Developer Console WebSocket URL (ws:// or wss://)", needed="its WebSocket URL", selects=True
    )
    token: str | None = setting(None, "Developer Console bearer token", secret=True)


def build_feed(vendor: ConsoleSettings, core: Settings, clock: Clock) -> Feed:
    assert vendor.url is not None
    return ConsoleFeed(url=vendor.url, token=vendor.token, clock=clock, max_silence_s=core.max_silence_s)


def build_normalizer(vendor: ConsoleSettings, core: Settings) -> Normalizer:
    return normalize_console


async def probe(vendor: ConsoleSettings) -> CheckResult:
    assert vendor.url is not None
    return await check_websocket("console", vendor.url, vendor.token)


async def simulate(
    options: SimulatorOptions, *, task_status: trio.TaskStatus[Simulated[ConsoleSettings]] = trio.TASK_STATUS_IGNORED
) -> None:
    token, sent = secrets.token_urlsafe(16), SentLog()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            functools.partial(
                serve_console_simulator,
                token=token,
                host=options.host,
                port=options.port,
                messages_per_second=options.rate / 2,
                batch_size=25,
                bad_frame_every=200,
                log=sent,
                seed=options.seed,
                start=options.start,
            )
        )
        task_status.started(Simulated(ConsoleSettings(url=WebSocketUrl(url), token=token), sent))


def summarize(sent: SentLog) -> str:
    tables = ", ".join(f"{count:,} {table}" for table, count in sorted(sent.messages_by_table.items()))
    return (
        f"Developer Console simulator sent {sent.frames_sent:,} frames: {tables}"
        f" and {sent.bad_frames_sent:,} malformed frame(s) (see bridge_dead_letters)."
    )


SPEC = FeedSpec(
    name="console",
    settings=ConsoleSettings,
    build_feed=build_feed,
    build_normalizer=build_normalizer,
    probe=probe,
    simulator=simulate,
    summarize_sent=summarize,
)
