from pathlib import Path

import pytest

from bridge.app.settings import SettingsError, feed_problems, load_settings, selected_feeds


def test_defaults_without_any_variable() -> None:
    settings = load_settings({})
    assert settings.database_url is None
    assert settings.home == Path(".bridge")
    assert (settings.batch_max_rows, settings.batch_max_ms) == (5000, 0.0)  # group commit: no lingering
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
    assert described["DATABASE_URL"] == "postgresql://u:***@db/x"
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


def test_each_vendor_has_its_own_prefixed_settings_and_the_documented_names_keep_working() -> None:
    from bridge.app.registry import FEEDS
    from bridge.app.vendors import polygon

    settings = load_settings(
        {
            "BRIDGE_POLYGON_API_KEY": "k-1",
            "BRIDGE_POLYGON_URL": "ws://127.0.0.1:9/options",
            "BRIDGE_POLYGON_SUBSCRIBE": "T.O:SPY251219C00650000",
            "BRIDGE_POLYGON_BACKFILL_CONTRACTS": "SPY251219C00650000, O:QQQ251219P00500000",
        }
    )
    vendor = settings.vendor(polygon.SPEC)
    assert (vendor.api_key, vendor.url, vendor.subscribe) == (
        "k-1",
        "ws://127.0.0.1:9/options",
        "T.O:SPY251219C00650000",
    )
    assert vendor.backfill_contracts == ("O:SPY251219C00650000", "O:QQQ251219P00500000")
    assert (vendor.rest_url, vendor.backfill_max_contracts) == ("https://api.massive.com", 100)
    assert selected_feeds(settings) == ["polygon"]
    for name, spec in FEEDS.items():
        assert spec.prefix == f"BRIDGE_{name.upper()}_"


def test_the_core_settings_of_the_journal_and_leases() -> None:
    import socket

    settings = load_settings({"BRIDGE_HOME": "/var/lib/bridge"})
    assert settings.effective_journal_dir == Path("/var/lib/bridge/journal")
    assert (settings.journal_max_bytes, settings.journal_fsync_ms, settings.journal_retain_s) == (2 * 1024**3, 5, 0)
    assert (settings.lease_ttl_s, settings.instance_id) == (10, socket.gethostname())
    with pytest.raises(SettingsError) as caught:
        load_settings({"BRIDGE_LEASE_TTL_S": "61"})
    assert caught.value.problems == [
        "BRIDGE_LEASE_TTL_S='61': must be at most 60 seconds (a dead replica's feeds wait this long)"
    ]


def test_a_fraction_where_a_whole_number_is_needed_says_so() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"BRIDGE_BATCH_MAX_ROWS": "1.5", "BRIDGE_POLYGON_QUOTE_LIMIT": "ten"})
    assert caught.value.problems == [
        "BRIDGE_BATCH_MAX_ROWS='1.5': must be a whole number",
        "BRIDGE_POLYGON_QUOTE_LIMIT='ten': must be a whole number",
    ]


def test_unknown_bridge_variables_are_warned_about_with_the_nearest_name() -> None:
    from bridge.app.settings import unknown_variables

    warnings = unknown_variables({"BRIDGE_POLYGON_APIKEY": "k", "BRIDGE_ZZZ": "1", "BRIDGE_HOME": "x", "HOME": "/"})
    assert warnings == [
        "BRIDGE_POLYGON_APIKEY is not a setting of this bridge and is ignored; did you mean BRIDGE_POLYGON_API_KEY?",
        "BRIDGE_ZZZ is not a setting of this bridge and is ignored",
    ]


def test_a_malformed_database_url_is_a_settings_error_that_hides_the_password() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"DATABASE_URL": "postgresql://u:s3cret-pw@db.example.com:port/x"})
    assert caught.value.problems == ["DATABASE_URL=(value hidden): has a port that is not a number"]
    with pytest.raises(SettingsError) as caught:
        load_settings({"DATABASE_URL": "mysql://u:s3cret-pw@db/x"})
    assert "s3cret-pw" not in str(caught.value)
