"""Reading model files (config.json, architecture YAML) safely: regular files only, a size
cap, UTF-8 text, one-line errors. No network."""

from __future__ import annotations

import json
import stat as _stat
from pathlib import Path
from typing import Any

from optimizer.errors import ClusteroptError

def decode_utf8(raw: bytes, path: Path, field: str, allowed: str) -> str:
    """File bytes as UTF-8 text (a BOM is dropped); binary or other encodings are one error."""
    if b"\x00" in raw:
        raise ClusteroptError(field, f"{str(path)!r} is not UTF-8 text (binary: it holds NUL bytes; "
                              "UTF-16 files do too)", allowed)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ClusteroptError(field, f"{str(path)!r} is not UTF-8 text (byte {exc.start}: "
                              f"0x{raw[exc.start]:02x})", allowed) from None


#: Largest model file read (a config.json is a few kB; the biggest nested ones ~20 kB).
MAX_MODEL_FILE_BYTES = 4 * 2**20


def read_model_bytes(path: Path, field: str = "model") -> bytes:
    """The bytes of a model file: a regular file (not a pipe or device, which could block or
    never end) of at most MAX_MODEL_FILE_BYTES. One-line errors otherwise."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ClusteroptError(field, f"no such file {str(path)!r}",
                              "a preset name (clusteropt models), a config.json or an architecture YAML") from None
    except OSError as exc:
        raise ClusteroptError(field, f"cannot read {str(path)!r} ({exc.strerror or exc})") from None
    if not _stat.S_ISREG(st.st_mode):
        raise ClusteroptError(field, f"{str(path)!r} is not a regular file", "a config.json or YAML file")
    if st.st_size > MAX_MODEL_FILE_BYTES:
        raise ClusteroptError(field, f"{str(path)!r} has {st.st_size:,} bytes",
                              f"a model file of at most {MAX_MODEL_FILE_BYTES:,} bytes")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ClusteroptError(field, f"cannot read {str(path)!r} ({exc.strerror or exc})") from None


def read_json_file(path: Path, field: str = "model") -> Any:
    """A JSON file read as UTF-8 (clear one-line errors for missing, unreadable, non-regular,
    oversized, non-UTF-8 or malformed files; never a traceback)."""
    raw = read_model_bytes(path, field)
    text = decode_utf8(raw, path, field, "a UTF-8 JSON file")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClusteroptError(field, f"cannot read {str(path)!r} as JSON ({first})", "a JSON object") from None
