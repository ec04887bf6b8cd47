"""Regenerate README.md's example blocks from real output.

Every ```text block of README.md whose first line is `$ clusteropt ARGS` is re-run in-process
(typer's CliRunner, so the installed or checked-out package answers) and its body replaced by the
command's stdout. A block that stops before the Pareto front in the README keeps stopping there
(tests/test_cli.py compares the part before "\\n\\nPareto"). Run: `python benchmarks/readme_examples.py`
(rewrites README.md) or `--check` (exit 1 when a block differs).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

from typer.testing import CliRunner

from optimizer.cli import app

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```text\n\$ clusteropt (?P<args>[^\n]*)\n(?P<body>.*?)```", re.S)


def rendered(args: str, old_body: str) -> str:
    """The command's stdout, cut before the Pareto section when the README's block is."""
    result = CliRunner().invoke(app, shlex.split(args), catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"error: README example 'clusteropt {args}' exited {result.exit_code}")
    out = result.stdout
    if "\n\nPareto" not in old_body:
        out = out.split("\n\nPareto")[0]
    return out.strip() + "\n"


def main(argv: list[str]) -> int:
    os.chdir(ROOT)  # the README's paths are relative to the repository root
    path = ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    new = BLOCK.sub(lambda m: f"```text\n$ clusteropt {m['args']}\n{rendered(m['args'], m['body'])}```", text)
    if "--check" in argv:
        return 0 if new == text else 1
    path.write_text(new, encoding="utf-8")
    print(f"README.md: {len(BLOCK.findall(text))} example block(s) regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
