"""``ganhpo --help`` and every command's: plain text, every action listed, every argument
explained, durations in seconds; the options every command shares work before the command too."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from ganhpo.cli import build_parser, main


def parsers(
    parser: argparse.ArgumentParser | None = None,
) -> Iterator[argparse.ArgumentParser]:
    """The top-level parser and every command's and action's, depth first."""
    parser = parser or build_parser()
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from parsers(child)


def test_the_walk_sees_every_command() -> None:
    progs = {p.prog for p in parsers()}
    assert {"ganhpo", "ganhpo study", "ganhpo study best", "ganhpo worker"} <= progs


@pytest.mark.parametrize("parser", list(parsers()), ids=lambda p: p.prog)
def test_help_is_plain_text_and_lists_every_action(parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    assert "`" not in text, text  # docstring markup is not for a terminal
    assert parser.description, f"{parser.prog} --help says nothing about what it does"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {a.dest for a in action._choices_actions}
            assert listed == set(action.choices), f"{parser.prog} --help omits an action"
            for name in action.choices:
                assert f"    {name} " in text
        else:
            what = action.option_strings or action.dest
            assert action.help, f"{parser.prog}: {what} has no help"


@pytest.mark.parametrize("parser", list(parsers()), ids=lambda p: p.prog)
def test_durations_say_their_unit(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if action.dest.endswith("timeout"):
            assert action.metavar == "SECONDS", (parser.prog, action.option_strings)


def test_worker_help_shows_the_unit_of_its_timeout() -> None:
    (worker,) = [p for p in parsers() if p.prog == "ganhpo worker"]
    text = worker.format_help()
    assert "--timeout SECONDS" in text and "--timeout TIMEOUT" not in text


def test_study_help_lists_best() -> None:
    (study,) = [p for p in parsers() if p.prog == "ganhpo study"]
    text = study.format_help()
    for action in ("create", "list", "show", "trials", "best", "delete"):
        assert f"    {action} " in text


def test_storage_before_a_command_that_opens_no_database_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--storage", "sqlite:///x.db", "train"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "ganhpo: error: --storage does not apply to 'ganhpo train' (it opens no study "
        "database); drop --storage; see 'ganhpo --help'\n"
    )


def test_ganhpo_alone_prints_its_help_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    # It printed "ganhpo: error: ganhpo: the following arguments are required: COMMAND".
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert out == build_parser().format_help() and err == ""
    assert main(["-v"]) == 0  # options, still no command
    assert capsys.readouterr().out.startswith("usage: ganhpo ")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["bogus"], "ganhpo: error: argument COMMAND: invalid choice: 'bogus'"),
        (["--bogus"], "ganhpo: error: unrecognized arguments: --bogus; see 'ganhpo --help'"),
        (["worker"], "ganhpo: error: worker: the following arguments are required: --study; "),
        (["study", "show"], "ganhpo: error: study show: the following arguments are required"),
        (["score", "x.npz", "--samples", "0"], "ganhpo: error: score: argument --samples: "),
    ],
)
def test_usage_errors_name_ganhpo_once(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    """One prefix, then the command the error is about ("ganhpo: error: ganhpo: ..." and
    "ganhpo: error: ganhpo worker: ..." before)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err
    assert "error: ganhpo" not in err
