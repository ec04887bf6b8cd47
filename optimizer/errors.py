"""One error type for bad input: it names the field, the value and what is allowed.

The CLI prints it as one line, ``error: <field>: <what is wrong>; <what is allowed>``,
and exits with code 2 (CONTRACTS.md, 'Everywhere').
"""

from __future__ import annotations

import difflib
import re
import sys
import types
import typing
from typing import Annotated, Any, ForwardRef, Iterable, Literal, Optional, Union


class ClusteroptError(ValueError):
    """Bad user input. ``str(err)`` is the one-line message without the 'error: ' prefix."""

    def __init__(self, field: str, problem: str, allowed: str = ""):
        self.field = field
        self.problem = problem
        self.allowed = allowed
        # the contract's line always says what is allowed; a caller that has nothing more
        # specific points at the documentation of the inputs
        allowed = allowed or "see 'clusteropt schema scenario' and 'clusteropt COMMAND --help'"
        self.allowed = allowed
        field = field or "input"
        self.field = field
        super().__init__(f"{field}: {problem}; {allowed}")


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


# ----------------------------------------------------------------------------------------
# pydantic ValidationError -> ClusteroptError
#
# A pydantic error location mixes field names with internal tags: a union's branch
# ('constrained-float', "literal['none','n+1']", 'int', 'function-after[_order(), TokenRange]'),
# a dict key's '[key]'. Walking the location through the model's own annotations tells which
# entries are fields (shown: 'train.tokens'), list indices (shown: 'search.zero[0]') or mapping
# keys (shown: 'constraints.available.H100'), and which are tags (dropped). The annotation at
# the field also says what is allowed ('a number > 0', "'none', 'n+1' or an integer"), and the
# model at an unknown key gives its field names for 'did you mean'.
# ----------------------------------------------------------------------------------------

#: Error types meaning 'not one of the allowed kinds or choices' (a union reports one per branch);
#: others (greater_than, value_error, too_short, ...) mean 'the right kind, a wrong value'.
_KIND_ERRORS = {"literal_error", "enum", "int_from_float", "is_instance_of", "is_subclass_of", "model_type",
                "model_attributes_type", "union_tag_invalid", "union_tag_not_found", "none_required"}
_TYPE_TAGS = {"float", "int", "str", "bool", "dict", "list", "none", "tuple", "set", "bytes", "any"}


def _is_kind_error(err_type: str) -> bool:
    return err_type in _KIND_ERRORS or err_type.endswith(("_type", "_parsing"))


def _is_model(tp) -> bool:
    from pydantic import BaseModel

    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _model_keys(model) -> list[str]:
    """A model's input keys (``base_dir`` is set by the loader, not written by users)."""
    return [k for k in model.model_fields if k != "base_dir"]


def _constraints(items) -> list:
    out = []
    for m in items:
        sub = getattr(m, "metadata", None)
        if isinstance(sub, list):                 # a FieldInfo inside Annotated[...]
            out.extend(sub)
        else:
            out.append(m)
    return out


def _resolve(tp, ns: dict):
    """A forward reference by name ('LengthDist') looked up in the model's module; Any if unknown.
    (Field annotations are resolved whole by typing.get_type_hints in _walk; this is the fallback.)"""
    if isinstance(tp, ForwardRef):
        tp = tp.__forward_arg__
    if isinstance(tp, str):
        return ns.get(tp.strip("'\""), Any)
    return tp


def _unwrap(tp, meta: list, ns: dict):
    """Strip Annotated (collecting its constraints), Optional and forward references."""
    while True:
        tp = _resolve(tp, ns)
        origin = typing.get_origin(tp)
        if origin is Annotated:
            args = typing.get_args(tp)
            tp, meta = args[0], meta + _constraints(args[1:])
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp, meta


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _kind_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "literal"
    if origin is not None:
        return getattr(origin, "__name__", str(origin)).lower()
    return getattr(tp, "__name__", "").lower()


def _branch(tp, tag: str, ns: dict):
    """The member of union ``tp`` that pydantic's location tag names, or None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    for a in args:
        base, _ = _unwrap(a, [], ns)
        if _is_model(base) and (tag == base.__name__ or re.search(rf"[\[, ]{re.escape(base.__name__)}\]$", tag)):
            return a
    kind = re.sub(r"^constrained-", "", tag).split("[", 1)[0].lower()
    for a in args:
        if _kind_name(_unwrap(a, [], ns)[0]) == kind:
            return a
    return None


def _walk(model, loc: tuple):
    """Render a pydantic location as a field path and find the annotation there.

    Returns (path, annotation, constraints, namespace, union_at, end): ``annotation`` is the
    type of the last field, list item or mapping value on the path (None where the schema is
    unknown), ``union_at`` the index in ``loc`` of the first union-branch tag (or None), ``end``
    the type reached at the end of ``loc`` (a union's branch where the last entry is a tag).
    """
    path = ""
    ns = vars(sys.modules[model.__module__]) if model is not None else {}
    cur, meta = (model, []) if model is not None else (None, [])
    at, at_meta, at_ns = cur, meta, ns
    union_at = None
    for i, part in enumerate(loc):
        if part == "__root__":
            continue
        if cur is not None:
            cur, meta = _unwrap(cur, meta, ns)
        origin = typing.get_origin(cur)
        if cur is not None and _is_model(cur) and isinstance(part, str) and part in cur.model_fields:
            f = cur.model_fields[part]
            ns = vars(sys.modules[cur.__module__])
            ann = f.annotation
            if isinstance(ann, (str, ForwardRef)) or "ForwardRef" in repr(ann):
                try:
                    ann = typing.get_type_hints(cur, include_extras=True).get(part, ann)
                except Exception:
                    pass
            path += ("." if path else "") + part
            cur, meta = ann, _constraints(f.metadata)
            at, at_meta, at_ns = cur, meta, ns
        elif cur is not None and _is_union(cur) and isinstance(part, str):
            if union_at is None:
                union_at = i
            br = _branch(cur, part, ns)
            cur, meta = (br, []) if br is not None else (None, [])
        elif cur is not None and origin in (list, tuple, set, frozenset) and isinstance(part, int):
            path += f"[{part}]"
            args = typing.get_args(cur)
            cur, meta = (args[0] if args else Any), []
            at, at_meta, at_ns = cur, meta, ns
        elif cur is not None and origin is dict:
            if part == "[key]":
                continue
            path += ("." if path else "") + str(part)
            args = typing.get_args(cur)
            cur, meta = (args[1] if len(args) == 2 else Any), []
            at, at_meta, at_ns = cur, meta, ns
        elif isinstance(part, int):
            path += f"[{part}]"
            cur = at = None
        elif part == "[key]" or part.lower() in _TYPE_TAGS or any(ch in part for ch in "-[('"):
            continue                              # a tag of pydantic's, not a field
        else:
            path += ("." if path else "") + str(part)
            cur = at = None
    end = _unwrap(cur, [], ns)[0] if cur is not None else None
    return path, at, at_meta, at_ns, union_at, end


def _bound_text(meta: list) -> str:
    parts = []
    for m in meta:
        for attr, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{op} {v:g}" if isinstance(v, (int, float)) else f"{op} {v}")
    return " and ".join(parts)


def _literal_text(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


_SCALARS = {bool: ("true or false", "true/false values"), int: ("an integer", "integers"),
            float: ("a number", "numbers"), str: ("a string", "strings")}


def describe(tp, meta: Optional[list] = None, ns: Optional[dict] = None, plural: bool = False) -> str:
    """What a type annotation allows, in words: 'a number > 0', "'none', 'n+1' or an integer",
    'a mapping with keys min, max', 'a list of integers'. ``plural`` for list items."""
    tp, meta = _unwrap(tp, list(meta or []), ns or {})
    bound = _bound_text(meta)
    min_len = max((getattr(m, "min_length", None) or 0 for m in meta), default=0)
    if min_len:                                   # 'a non-empty list of ...', 'a non-empty string'
        text = describe(tp, [m for m in meta if getattr(m, "min_length", None) is None], ns, plural)
        if min_len == 1:
            return re.sub(r"^(an?) ", "a non-empty ", text, count=1) if not plural else "non-empty " + text
        return f"{text} (at least {min_len} items or characters)"
    if _is_union(tp):
        alts: list[str] = []
        for a in typing.get_args(tp):
            if a is type(None):
                continue
            base, m = _unwrap(a, [], ns or {})
            if typing.get_origin(base) is Literal:
                alts.extend(_literal_text(v) for v in typing.get_args(base))
            else:
                alts.append(describe(a, None, ns, plural))
        return _join_or(alts)
    origin = typing.get_origin(tp)
    if origin is Literal:
        vals = [_literal_text(v) for v in typing.get_args(tp)]
        if len(vals) == 1:
            return vals[0]
        return ("values from " if plural else "one of ") + ", ".join(vals)
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(tp)
        item = describe(args[0], None, ns, plural=True) if args else "values"
        return ("lists of " if plural else "a list of ") + item
    if origin is dict:
        args = typing.get_args(tp)
        val = describe(args[1], None, ns, plural=True) if len(args) == 2 else "values"
        return ("mappings" if plural else "a mapping") + f" of names to {val}"
    if _is_model(tp):
        return ("mappings" if plural else "a mapping") + " with keys " + ", ".join(_model_keys(tp))
    for t, (one, many) in _SCALARS.items():
        if tp is t:
            text = many if plural else one
            return f"{text} {bound}" if bound and t is not bool else text
    if tp is Any or tp is None:
        return "any values" if plural else "any value"
    return getattr(tp, "__name__", str(tp))


def _join_or(items: list[str]) -> str:
    items = list(dict.fromkeys(items))
    if len(items) <= 1:
        return items[0] if items else ""
    return ", ".join(items[:-1]) + " or " + items[-1]


def allowed_from_error(err: dict) -> str:
    """What is allowed, from pydantic's error type and context (when the schema is unknown)."""
    ctx = err.get("ctx") or {}
    t = err.get("type", "")
    ops = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
           "less_than_equal": ("<=", "le")}
    if t in ops:
        op, key = ops[t]
        bound = ctx.get(key)
        return f"a number {op} {bound:g}" if isinstance(bound, (int, float)) else f"a number {op} {bound}"
    if t == "literal_error":
        return "one of " + str(ctx.get("expected", "")).replace(" or ", ", ")
    if t.startswith("float") or t == "finite_number":
        return "a number"
    if t.startswith("int"):
        return "an integer"
    if t.startswith("bool"):
        return "true or false"
    if t.startswith("string"):
        return "a string"
    if t in ("dict_type", "model_type", "model_attributes_type"):
        return "a mapping"
    if t == "list_type":
        return "a list"
    return "a valid value"


def _shown(value) -> str:
    if isinstance(value, dict):
        return "{...}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _clean_msg(msg: str) -> str:
    for pre in ("Value error, ", "Assertion failed, "):
        if msg.startswith(pre):
            msg = msg[len(pre):]
    msg = " ".join(msg.split())
    return msg[:1].lower() + msg[1:] if re.match(r"[A-Z][a-z]+ should ", msg) else msg


def _join_path(*parts: str) -> str:
    out = ""
    for p in parts:
        if p:
            out += p if (not out or p.startswith("[")) else "." + p
    return out


def _pick(errors: list[dict], model) -> dict:
    """The error to report. A misspelt key first (it often causes the others, e.g. a missing
    required key); within a union, the branch that got furthest, a wrong value over a wrong kind."""
    extra = [e for e in errors if e.get("type") == "extra_forbidden"]
    if extra:
        return extra[0]
    first = errors[0]
    union_at = _walk(model, tuple(first.get("loc", ())))[4]
    if union_at is None:
        return first
    head = tuple(first["loc"])[:union_at]
    group = [e for e in errors if tuple(e.get("loc", ()))[:union_at] == head and len(e.get("loc", ())) > union_at]

    def score(item):
        k, e = item
        return (len(_walk(model, tuple(e["loc"]))[0]), not _is_kind_error(e.get("type", "")), -k)

    return max(enumerate(group), key=score)[1]


def from_pydantic(exc, prefix: str = "", model: Any = None, root: str = "") -> ClusteroptError:
    """Reword a pydantic ValidationError as one ClusteroptError: clean field path, what is wrong,
    what is allowed. ``model`` (the validated class) lets the path drop pydantic's tags and the
    'allowed' part and 'did you mean' come from the schema; without it both come from pydantic's
    error. ``prefix`` goes before the path; ``root`` names an error of the whole document."""
    errors = exc.errors()
    err = _pick(errors, model)
    loc = tuple(err.get("loc", ()))
    etype = err.get("type", "")
    ctx_err = (err.get("ctx") or {}).get("error")
    root = root or (model.__name__.lower() if model is not None else "input")

    if etype == "extra_forbidden":
        path, _, _, _, _, end = _walk(model, loc[:-1])
        field = _join_path(prefix, path, str(loc[-1]))
        known = _model_keys(end) if _is_model(end) else []
        allowed = did_you_mean(str(loc[-1]), known) if known else "remove it (no such key here)"
        return ClusteroptError(field, f"unknown key {str(loc[-1])!r}", allowed)

    path, at, meta, ns, _, _ = _walk(model, loc)
    field = _join_path(prefix, path) or root
    base = _unwrap(at, list(meta), ns)[0] if at is not None else None
    if at is not None and _is_model(base):
        allowed = "allowed keys: " + ", ".join(_model_keys(base))
    elif at is not None:
        allowed = "allowed: " + describe(at, meta, ns)
    else:
        allowed = "allowed: " + allowed_from_error(err)

    if isinstance(ctx_err, ClusteroptError):
        return ClusteroptError(_join_path(prefix, path, ctx_err.field) or root, ctx_err.problem,
                               ctx_err.allowed or allowed)

    msg = _clean_msg(err.get("msg", "invalid value"))
    if etype == "missing":
        return ClusteroptError(field, "required key missing", allowed)
    if etype in ("value_error", "assertion_error"):
        sub = re.match(r"([A-Za-z_][\w.\[\]]*): (.+)$", msg)
        if sub:                                   # a validator naming a key below its model
            field, msg = _join_path(prefix, path, sub.group(1)), sub.group(2)
        if "; " in msg:
            problem, own = msg.split("; ", 1)
            return ClusteroptError(field, problem, own)
        return ClusteroptError(field, msg, allowed)
    shown = _shown(err.get("input"))
    if _is_model(base) and etype in ("model_type", "dict_type", "model_attributes_type"):
        return ClusteroptError(field, f"expected a mapping, got {shown}", allowed)
    if at is not None and _is_kind_error(etype):
        # the allowed part lists the kinds and choices (for a union: every branch's), so
        # pydantic's wording for one branch would only repeat or contradict it
        return ClusteroptError(field, f"invalid value {shown}", allowed)
    return ClusteroptError(field, f"{msg} (got {shown})", allowed)
