from pathlib import Path

import pytest

from bridge.app.settings import SettingsError, feed_problems, load_settings, selected_feeds


def test_defaults_without_any_variable() -> None:
    settings = load_settings({})
    assert settings.database_url is None
    assert settings.home == Path(".bridge")
    assert (settings.batch_max_rows, settings.batch_max_ms) == (5000, 100.0)
    assert selected_feeds(settings) == []


def test_every_bad_variable_is_named_in_one_error() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {
                "BRIDGE_BATCH_MAX_ROWS": "-5",
                "BRIDGE_BATCH_MAX_MS": "soon",
                "BRIDGE_LOG_FORMAT": "xml",
                "BRIDGE_FEEDS": "console,carrier-pigeon",
                "BRIDGE_CONSOLE_URL": "http://example.invalid/stream",
            }
        )
    message = str(caught.value)
    assert "BRIDGE_BATCH_MAX_ROWS='-5': must be a positive whole number" in message
    assert "BRIDGE_BATCH_MAX_MS='soon': must be a number" in message
    assert "BRIDGE_LOG_FORMAT='xml': must be one of: json | console" in message
    assert (
        "unknown feed(s) carrier-pigeon; available: console, polygon, benzinga, tastytrade, tradier, schwab" in message
    )
    assert "BRIDGE_CONSOLE_URL='http://example.invalid/stream': must be a ws:// or wss:// URL" in message
    assert len(caught.value.problems) == 5


def test_secrets_are_never_echoed_and_are_masked_in_the_description() -> None:
    settings = load_settings({"DATABASE_URL": "postgresql://u:hunter2@db/x", "BRIDGE_CONSOLE_TOKEN": "tok-123456"})
    assert set(settings.secrets()) == {"hunter2", "tok-123456"}
    described = dict(settings.describe())
    assert described["DATABASE_URL"] == "***"
    assert described["BRIDGE_CONSOLE_TOKEN"] == "***"


def test_a_feed_is_selected_by_its_settings_and_its_gaps_are_named() -> None:
    settings = load_settings({"BRIDGE_CONSOLE_URL": "ws://127.0.0.1:9/stream"})
    assert selected_feeds(settings) == ["console"]
    assert feed_problems(settings, ["console"]) == []
    bare = load_settings({"BRIDGE_FEEDS": "console"})
    assert feed_problems(bare, selected_feeds(bare)) == [
        "BRIDGE_CONSOLE_URL is not set: the console feed needs its WebSocket URL"
    ]
    assert "no feed configured" in feed_problems(load_settings({}), [])[0]
