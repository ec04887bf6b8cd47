"""Reading the files users hand us: one guarded way in for scenarios, portfolios, catalogs and models.

Every input file goes through :func:`read_text` (and YAML through :func:`load_yaml`), so that
bad files end in one ``ClusteroptError`` line instead of a hang, a crash or a silent guess:

* only regular files: a folder, a named pipe (reading one blocks forever) or a device such as
  ``/dev/zero`` (endless) is refused before it is opened;
* a size cap (``MAX_INPUT_BYTES``): the largest shipped input is a few tens of kB;
* UTF-8 only (a UTF-8 byte-order mark is accepted): a UTF-16/32 file, a Latin-1 byte or a
  binary file is named as such, with the line of the first bad byte;
* YAML: duplicate keys are an error (PyYAML silently keeps the last), the document's nesting
  depth is capped (``MAX_DEPTH``) and so is its size after alias expansion
  (``MAX_YAML_NODES``): a 512-byte 'billion laughs' file expands to ~10^9 nodes and fails here
  in microseconds, before anything renders it.

This module sits with ``errors.py`` above every other layer (the model loader uses it too).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Union

import yaml

from optimizer.errors import ClusteroptError

#: Largest input file read (bytes). Shipped scenarios, portfolios and catalog CSVs are < 64 kB;
#: a Hugging Face config.json is < 10 kB. 8 MiB leaves room for generated catalogs.
MAX_INPUT_BYTES = 8 * 2**20
#: Most YAML nodes after alias expansion (each scalar, list and mapping counts 1). The largest
#: shipped document has ~300; 10^5 admits any hand-written or generated scenario.
MAX_YAML_NODES = 100_000
#: Deepest nesting of lists/mappings in a document (the scenario schema needs 5).
MAX_DEPTH = 64

_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
         (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_text(path: Union[str, Path], field: str, what: str = "file", max_bytes: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``; ClusteroptError otherwise.

    ``field`` names the input in the error (``scenario``, ``--catalog``, ``model``); ``what``
    says what the file should be (``a YAML scenario``) in the 'allowed' part.
    """
    p = Path(path)
    shown = str(p)
    try:
        st = os.stat(p)                           # follows links: a link to a FIFO is a FIFO
    except FileNotFoundError:
        raise ClusteroptError(field, f"file not found: {shown}", f"an existing {what}") from None
    except OSError as exc:
        raise ClusteroptError(field, f"cannot read {shown} ({exc.strerror or exc})", f"a readable {what}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ClusteroptError(field, f"{shown} is {_kind_of(st.st_mode)}, not a file", f"a regular {what}")
    if st.st_size > max_bytes:
        raise ClusteroptError(field, f"{shown} is {st.st_size:,} bytes", f"a {what} of at most {max_bytes:,} bytes")
    try:
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)         # a file growing while read stops at the cap
    except OSError as exc:
        raise ClusteroptError(field, f"cannot read {shown} ({exc.strerror or exc})", f"a readable {what}") from None
    if len(data) > max_bytes:
        raise ClusteroptError(field, f"{shown} is over {max_bytes:,} bytes", f"a {what} of at most {max_bytes:,} bytes")
    return decode_utf8(data, field, shown, what)


def decode_utf8(data: bytes, field: str, shown: str, what: str = "file") -> str:
    """``data`` as UTF-8 text (a UTF-8 byte-order mark dropped); a one-line error naming the
    encoding (UTF-16/32 by their byte-order marks), a binary file, or the first bad byte."""
    allowed = f"a {what} saved as UTF-8 text"
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise ClusteroptError(field, f"{shown} is {name} encoded", allowed)
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise ClusteroptError(field, f"{shown} is binary (a NUL byte at line {line})", allowed)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ClusteroptError(field, f"{shown} is not UTF-8 (byte 0x{data[exc.start]:02x} at line {line}; "
                                     f"Latin-1 or another legacy encoding?)", allowed) from None
    return text[1:] if text.startswith("\ufeff") else text


# ----------------------------------------------------------------------------------------
# YAML
# ----------------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys in a mapping (it keeps the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    hash(key)
                except TypeError:
                    continue                      # SafeLoader reports unhashable keys itself
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _check_shape(root, field: str, shown: str) -> None:
    """Count the nodes of the composed document with aliases expanded, and its depth, without
    expanding anything (each node's size is computed once, iteratively)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        nid = id(node)
        children = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [x for kv in node.value for x in kv]
        if not done:
            if nid in size:
                continue
            if nid in on_path:                    # a recursive alias (&a [*a]): infinite
                raise ClusteroptError(field, f"{shown} has a recursive YAML alias", "a YAML document without cycles")
            on_path.add(nid)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in size)
            continue
        on_path.discard(nid)
        if any(id(c) in on_path for c in children):
            raise ClusteroptError(field, f"{shown} has a recursive YAML alias", "a YAML document without cycles")
        size[nid] = 1 + sum(size[id(c)] for c in children)
        depth[nid] = 1 + max((depth[id(c)] for c in children), default=0)
        if size[nid] > MAX_YAML_NODES:
            raise ClusteroptError(field, f"{shown} expands to over {MAX_YAML_NODES:,} YAML values "
                                         "(aliases repeat what they name)", "a smaller document; fewer nested aliases")
        if depth[nid] > MAX_DEPTH:
            raise ClusteroptError(field, f"{shown} nests deeper than {MAX_DEPTH} levels",
                                  f"at most {MAX_DEPTH} levels of lists and mappings")


def load_yaml(text: str, field: str, shown: str, what: str = "YAML document") -> Any:
    """Parse one YAML document safely: no duplicate keys, bounded size and depth."""
    allowed = f"a YAML mapping of {what} keys (check indentation, colons and quotes)"
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_shape(node, field, shown)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        why = getattr(exc, "problem", None)
        why = f" ({' '.join(str(why).split())})" if why else ""
        raise ClusteroptError(field, f"{shown} is not valid YAML{where}{why}", allowed) from None
    except RecursionError:
        raise ClusteroptError(field, f"{shown} nests too deeply",
                              f"at most {MAX_DEPTH} levels of lists and mappings") from None


def read_yaml(path: Union[str, Path], field: str, what: str) -> Any:
    """A YAML file read with :func:`read_text` and parsed with :func:`load_yaml`."""
    return load_yaml(read_text(path, field, f"YAML {what}"), field, str(path), what)


def check_depth(value: Any, field: str, limit: int = MAX_DEPTH) -> None:
    """Refuse Python data (a dict passed to the API) nested deeper than ``limit`` (iteratively,
    so that a 10^5-deep list is an error, not a RecursionError)."""
    stack = [(value, 1)]
    seen = 0
    while stack:
        v, d = stack.pop()
        seen += 1
        if d > limit:
            raise ClusteroptError(field, f"input nests deeper than {limit} levels",
                                  f"at most {limit} levels of lists and mappings")
        if seen > MAX_YAML_NODES:
            raise ClusteroptError(field, f"input has over {MAX_YAML_NODES:,} values", "a smaller document")
        if isinstance(v, dict):
            stack.extend((x, d + 1) for kv in v.items() for x in kv)
        elif isinstance(v, (list, tuple)):
            stack.extend((x, d + 1) for x in v)


def load_json(text: str, field: str, shown: str) -> Any:
    """Parse JSON with a one-line error (line and column of the problem); NaN/Infinity literals
    and nesting deeper than MAX_DEPTH are refused."""
    import json

    def no_constants(name: str):
        raise ClusteroptError(field, f"{shown} contains {name}, which is not JSON", "finite numbers")

    try:
        data = json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise ClusteroptError(field, f"{shown} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                                     f"column {exc.colno})", "a JSON object such as a Hugging Face config.json") from None
    except RecursionError:
        raise ClusteroptError(field, f"{shown} nests too deeply",
                              f"at most {MAX_DEPTH} levels of lists and objects") from None
    check_depth(data, field)
    return data


# ----------------------------------------------------------------------------------------
# Python API arguments
# ----------------------------------------------------------------------------------------

def integer(field: str, value: Any, lo: int = 1, hi: int | None = None) -> int:
    """An integer argument of the Python API: a whole number (``2.0`` is 2; ``1.5``, True,
    NaN or a string are errors, never rounded) within [lo, hi]."""
    rng = f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__index__"):
        raise ClusteroptError(field, f"{value!r} is not an integer", rng)
    if isinstance(value, float):
        if not value.is_integer():
            raise ClusteroptError(field, f"{value!r} is not a whole number", rng)
        value = int(value)
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise ClusteroptError(field, f"{value} is out of range", rng)
    return value


def number(field: str, value: Any, *, gt: float | None = None, ge: float | None = None,
           le: float | None = None, allow_inf: bool = False) -> float:
    """A real argument of the Python API: finite (or +inf where ``allow_inf`` says it means
    'no limit') and within the bounds."""
    parts = [f"> {gt:g}" if gt is not None else "", f">= {ge:g}" if ge is not None else "",
             f"<= {le:g}" if le is not None else ""]
    rng = "a number " + " and ".join(p for p in parts if p) if any(parts) else "a number"
    if allow_inf:
        rng += " (or inf: no limit)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ClusteroptError(field, f"{value!r} is not a number", rng)
    value = float(value)
    if value != value or value == -float("inf") or (value == float("inf") and not allow_inf):
        raise ClusteroptError(field, f"{value} is not a finite number", rng)
    if (gt is not None and not value > gt) or (ge is not None and not value >= ge) or \
            (le is not None and value > le and value != float("inf")):
        raise ClusteroptError(field, f"{value:g} is out of range", rng)
    return value
