"""The README stays true: every setting the bridge reads is documented there, with its default."""

from pathlib import Path

from bridge.app.settings import known_variables

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_environment_variable_is_documented() -> None:
    missing = [name for name in known_variables() if f"`{name}`" not in README]
    assert missing == []


def test_the_two_newcomer_commands_come_first() -> None:
    head = README[: README.index("## Commands")]
    assert "bridge demo" in head and "\npytest" in head
