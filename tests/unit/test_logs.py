import io
import logging

import orjson
import pytest

from bridge.domain.redaction import Redactor
from bridge.logs import configure_logging, get_logger


@pytest.fixture
def redactor() -> Redactor:
    redactor = Redactor()
    redactor.add("s3cr3t-token")
    return redactor


def test_json_lines_carry_context_and_never_a_secret(redactor: Redactor) -> None:
    out = io.StringIO()
    configure_logging(format="json", level="info", redactor=redactor, stream=out)
    log = get_logger("test", feed="console")
    log.info(
        "connecting with s3cr3t-token",
        url="wss://h/s?token=s3cr3t-token",
        headers={"Authorization": ["Bearer s3cr3t-token"]},
    )
    try:
        raise ConnectionError("server said: bad token s3cr3t-token")
    except ConnectionError:
        log.exception("failed")
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["connecting with ***", "failed"]
    assert lines[0]["feed"] == "console" and lines[0]["level"] == "info" and "timestamp" in lines[0]
    assert "s3cr3t-token" not in out.getvalue()


def test_console_lines_and_library_logging_are_redacted(redactor: Redactor) -> None:
    out = io.StringIO()
    configure_logging(format="console", level="debug", redactor=redactor, stream=out)
    get_logger("test").warning("retrying", error="password=hunter22 rejected")
    logging.getLogger("trio-websocket").warning("closing postgresql://u:pw1234@h/db and s3cr3t-token")
    text = out.getvalue()
    assert "retrying" in text and "closing postgresql://u:***@h/db" in text
    for secret in ("hunter22", "pw1234", "s3cr3t-token"):
        assert secret not in text
    configure_logging(format="console", level="debug", redactor=redactor, stream=out)
    assert sum(getattr(h, "_bridge", False) for h in logging.getLogger().handlers) == 1
