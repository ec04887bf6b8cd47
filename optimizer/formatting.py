"""JSON-ready values and money strings, shared by every layer that renders (report, plans).

``plain`` turns numpy/pandas scalars, arrays, dataclasses and containers into plain Python
values (NaN and infinities become None, as JSON has no such numbers); ``usd`` writes an amount
of US dollars the way every table in clusteropt shows it ($1.23M, $45.6k, $7.89).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def plain(x: Any) -> Any:
    """numpy/pandas scalars and containers -> JSON-ready Python values (NaN/inf -> None)."""
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return [plain(v) for v in x.tolist()]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "__dataclass_fields__"):
        return {k: plain(getattr(x, k)) for k in x.__dataclass_fields__}
    return x


def usd(x: float | None, significant: int | None = None, tex: bool = False) -> str:
    """'$1.23M', '$45.6k', '$7.89'; '-' for a missing amount. ``significant``: that many
    significant digits instead ('$1.2M', '$450k': axis ticks); ``tex``: the '$' escaped for
    matplotlib, which reads a pair of '$' as mathtext."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if significant is not None:
        for scale, unit in ((1e6, "M"), (1e3, "k")):
            if abs(x) >= scale:
                text = f"${x / scale:,.{significant}g}{unit}"
                break
        else:
            text = f"${x:,.{significant}g}"
    elif abs(x) >= 1e6:
        text = f"${x / 1e6:,.2f}M"
    elif abs(x) >= 1e3:
        text = f"${x / 1e3:,.1f}k"
    else:
        text = f"${x:,.2f}"
    return text.replace("$", "\\$") if tex else text
