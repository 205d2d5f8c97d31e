"""The help of every command and group, as `--help` shows it: none raises, and every bracketed
word of the help as written (`[columns]`, `[y/n]`, `[printers.NAME]`) is shown, never read as
markup and dropped."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from biobank.cli import app

BRACKETED = re.compile(r"\[[^\[\]]+\]")


def _commands() -> list[tuple[tuple[str, ...], typer.core.TyperCommand]]:
    """Every command and group the root lists, with the words that call it, walked down."""
    found = []

    def walk(command, path: tuple[str, ...]) -> None:
        found.append((path, command))
        if hasattr(command, "list_commands"):
            context = typer.Context(command, info_name=path[-1] if path else "biobank")
            for name in command.list_commands(context):
                subcommand = command.get_command(context, name)
                if subcommand is not None and not subcommand.hidden:
                    walk(subcommand, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


COMMANDS = _commands()


def _written(command) -> list[str]:
    """The help texts of `command` as its source writes them (up to a form feed, where click
    ends what it shows)."""
    texts = [command.help, command.epilog]
    texts += [param.help for param in command.params if not getattr(param, "hidden", False)]
    return [text.split("\f")[0] for text in texts if text]


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(path) or "biobank" for path, _ in COMMANDS]
)
def test_help_shows_every_bracketed_word_as_written(path, command):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert (result.exit_code, result.exception) == (0, None), result.output
    shown = " ".join(result.stdout.split())
    for text in _written(command):
        for word in BRACKETED.findall(text):
            assert " ".join(word.split()) in shown, word


def test_the_walk_reaches_the_nested_commands_and_their_brackets():
    """Not a vacuous walk: nested groups are reached, and bracketed words are there to check."""
    paths = {path for path, _ in COMMANDS}
    assert {("import", "inventory"), ("user", "token", "create"), ("scan",)} <= paths
    words = {word for _, command in COMMANDS for text in _written(command)
             for word in BRACKETED.findall(text)}  # fmt: skip
    assert "[columns]" in words
