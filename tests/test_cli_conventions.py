"""Conventions users expect of a command line (issue 19): --version, -h, completion, --format on
every command with --json as its alias, fixed choices listed in the help."""

import csv
import io
import json
import re

import pytest

import optimizer
from optimizer.cli import app, main


def run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_version_and_short_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"clusteropt {optimizer.__version__}\n"
    code, out, _ = run(capsys, "solve", "-h")
    assert code == 0 and "--export" in out and "Usage: clusteropt solve" in out


def test_shell_completion_is_offered(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "--install-completion" in out and "--show-completion" in out


#: Every command with arguments that make it quick; the scenario commands use the default scenario.
COMMANDS = [["models"], ["catalog", "h100"], ["catalog"], ["estimate", "llama-3-8b"],
            ["scaling", "--compute", "1e22"], ["schema", "scenario"], ["solve", "--top", "2"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a))
def test_every_command_takes_every_format(capsys, argv):
    outs = {}
    for fmt in ("text", "json", "csv", "markdown"):
        code, out, _ = run(capsys, *argv, "--format", fmt)
        assert code == 0, (fmt, out)
        outs[fmt] = out
    json.loads(outs["json"])
    rows = list(csv.reader(io.StringIO(outs["csv"])))
    assert len(rows) >= 2 and all(len(r) == len(rows[0]) for r in rows)
    assert re.search(r"^\|.*\|$", outs["markdown"], flags=re.M)
    code, out, _ = run(capsys, *argv, "--json")
    strip = (lambda d: {k: v for k, v in d.items() if k != "stats"} if isinstance(d, dict) else d)   # timings
    assert code == 0 and strip(json.loads(out)) == strip(json.loads(outs["json"]))


@pytest.mark.parametrize("command", ["models", "catalog", "estimate", "scaling", "solve", "sweep", "plan", "schema",
                                     "export"])
def test_fixed_choices_are_listed_in_help(capsys, command):
    """Options whose values form a fixed set show the set, not <str>, in --help."""
    code, out, _ = run(capsys, command, "-h")
    assert code == 0
    fixed = ("--format", "--objective", "--to", "--law", "--executor", "--pricing", "--weights", "--kv", "--recompute",
             "--precision")
    for line in out.splitlines():
        m = re.match(r"\s+(--[\w-]+) <([^>]+)>", line)
        if m and m.group(1) in fixed:
            assert "|" in m.group(2), line
    assert re.search(r"--format <text\|json\|csv\|markdown", out) or command == "export"
