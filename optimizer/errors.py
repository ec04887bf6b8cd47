"""One error type for bad input: it names the field, the value and what is allowed.

The CLI prints it as one line, ``error: <field>: <what is wrong>; <what is allowed>``,
and exits with code 2 (CONTRACTS.md, 'Everywhere').
"""

from __future__ import annotations

import difflib
from typing import Iterable


class ClusteroptError(ValueError):
    """Bad user input. ``str(err)`` is the one-line message without the 'error: ' prefix."""

    def __init__(self, field: str, problem: str, allowed: str = ""):
        self.field = field
        self.problem = problem
        self.allowed = allowed
        msg = f"{field}: {problem}" if field else problem
        if allowed:
            msg += f"; {allowed}"
        super().__init__(msg)


def did_you_mean(name: str, known: Iterable[str], n: int = 3) -> str:
    """'did you mean 'a', 'b'?' for the closest known names (case-insensitive), or a list of a few."""
    known = list(known)
    lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.5)
    if not close:
        # substring matches help with short aliases ('h100' -> 'H100-SXM5-80GB')
        close = [k for k in lower if name.lower() in k][:n]
    if close:
        return "did you mean " + ", ".join(repr(lower[c]) for c in close) + "?"
    shown = ", ".join(sorted(known)[:12])
    more = "" if len(known) <= 12 else f", ... ({len(known)} in all)"
    return f"known: {shown}{more}"


def unknown_name(field: str, kind: str, name: str, known: Iterable[str]) -> ClusteroptError:
    return ClusteroptError(field, f"unknown {kind} {name!r}", did_you_mean(name, known))


def from_pydantic(exc, prefix: str = "") -> ClusteroptError:
    """Reword the first pydantic ValidationError entry as a ClusteroptError."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    field = ".".join(p for p in (prefix, loc) if p)
    value = err.get("input")
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    shown = repr(value) if not isinstance(value, dict) else "{...}"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ClusteroptError(field, f"{msg} (got {shown})")
