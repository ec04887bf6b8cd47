"""Bad scenario input -> one clean line (CONTRACTS.md, 'Everywhere'): exit 2, nothing on stdout,
`error: <field path>: <what is wrong>; <what is allowed>`, 'did you mean' for misspelt keys.

The cases are the ones a review found leaking pydantic internals (`train.tokens.constrained-float`,
``serve.redundancy.literal['none','n+1']``, `search.zero.0`) or lacking a suggestion
(`objectve`, `serve.redundency`, `system.storage`)."""

import re
from typing import Annotated, Literal, Union

import pytest
import yaml
from pydantic import BaseModel, Field, ValidationError

from optimizer.cli import main
from optimizer.errors import ClusteroptError, describe, from_pydantic
from optimizer.portfolio_schema import load_portfolio

LINE = re.compile(r"^error: ([a-z_\[\]0-9.]+): (.+); (.+)$")
#: What pydantic puts in a location that is not a field of ours.
INTERNALS = ("constrained-", "literal[", "function-after", "tagged-union", "[key]", "Extra inputs")

TRAIN = {"name": "bad", "model": "llama-3-8b",
         "train": {"tokens": 1e12, "seq_len": 4096, "global_batch": 512}}
SERVE = {"name": "bad", "model": "llama-3-8b",
         "serve": {"requests_per_s": 5, "prompt_tokens": {"mean": 1000}, "output_tokens": {"mean": 200}}}


def _with(base: dict, path: str, value) -> dict:
    """A copy of ``base`` with the dotted ``path`` set to ``value`` (parents created)."""
    doc = yaml.safe_load(yaml.safe_dump(base))
    *parents, last = path.split(".")
    cur = doc
    for k in parents:
        cur = cur.setdefault(k, {})
    cur[last] = value
    return doc


def _solve(tmp_path, capsys, doc=None, text=None):
    path = tmp_path / "scenario.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(doc))
    with pytest.raises(SystemExit) as e:
        main(["solve", str(path)])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _one_line(code, out, err):
    """The contract's shape; returns (field, problem, allowed)."""
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    m = LINE.match(lines[0])
    assert m, lines[0]
    for tag in INTERNALS:
        assert tag not in lines[0], lines[0]
    return m.groups()


@pytest.mark.parametrize("base, path, value, field, allowed_parts", [
    # a union (number > 0 | 'auto' | {min, max}): the path stops at the field, 'allowed' lists every branch
    (TRAIN, "train.tokens", -1e12, "train.tokens", ["a number > 0", "'auto'", "min, max"]),
    (TRAIN, "train.tokens", "lots", "train.tokens", ["a number > 0", "'auto'", "min, max"]),
    # a union of choices and an integer spare count
    (SERVE, "serve.redundancy", "bogus", "serve.redundancy", ["'none'", "'n+1'", "integer"]),
    # list items are indexed, not dotted
    (TRAIN, "search.zero", [7], "search.zero[0]", ["0, 1, 2, 3"]),
    (TRAIN, "search.precision", ["bf16", "fp4"], "search.precision[1]", ["'bf16'", "'fp8'"]),
    # a branch that got further (a {min, max} mapping) names its own key
    (TRAIN, "train.tokens", {"min": -1, "max": 5}, "train.tokens.min", ["a number > 0"]),
    # plain constraints and choices
    (TRAIN, "constraints.memory_headroom", 1.5, "constraints.memory_headroom", ["a number >= 0 and < 1"]),
    (TRAIN, "top_k", 0, "top_k", ["an integer >= 1 and <= 1000"]),
    (TRAIN, "objective", "speed", "objective", ["'cost'", "'time'", "'loss'"]),
    (TRAIN, "train.flash_attention", "maybe", "train.flash_attention", ["true or false"]),
    (TRAIN, "train", 5, "train", ["seq_len", "global_batch"]),
])
def test_bad_values_name_the_clean_path_and_every_alternative(tmp_path, capsys, base, path, value, field,
                                                              allowed_parts):
    got_field, problem, allowed = _one_line(*_solve(tmp_path, capsys, _with(base, path, value)))
    assert got_field == field
    for part in allowed_parts:
        assert part in allowed, allowed


@pytest.mark.parametrize("base, path, value, field, suggestion", [
    (TRAIN, "objectve", "cost", "objectve", "'objective'"),
    (SERVE, "serve.redundency", "n+1", "serve.redundency", "'redundancy'"),
    (TRAIN, "system.storage", "nvme", "system.storage", "'storage_tier'"),
    (TRAIN, "train.seq_lenn", 4096, "train.seq_lenn", "'seq_len'"),
    (TRAIN, "constraints.deadlin_days", 30, "constraints.deadlin_days", "'deadline_days'"),
    # inside a union branch ({min, max}) and deep in nested blocks
    (TRAIN, "train.tokens", {"min": 1e12, "mx": 2e12}, "train.tokens.mx", "'max'"),
    (TRAIN, "search.compression", [{"option": "kv_fp8", "parms": 3}], "search.compression[0].parms", "'params'"),
])
def test_misspelt_keys_get_did_you_mean(tmp_path, capsys, base, path, value, field, suggestion):
    got_field, problem, allowed = _one_line(*_solve(tmp_path, capsys, _with(base, path, value)))
    assert got_field == field
    assert problem == f"unknown key {field.rsplit('.', 1)[-1]!r}"
    assert allowed.startswith("did you mean") and suggestion in allowed, allowed


def test_a_misspelt_required_key_is_reported_as_the_typo_not_as_missing(tmp_path, capsys):
    doc = _with(TRAIN, "train.seqlen", 4096)
    del doc["train"]["seq_len"]
    field, problem, allowed = _one_line(*_solve(tmp_path, capsys, doc))
    assert field == "train.seqlen" and "'seq_len'" in allowed


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["train"].pop("seq_len"), "train.seq_len"),                     # missing required key
    (lambda d: d["train"].pop("global_batch"), "train"),                        # model-level rule
    (lambda d: d.pop("train"), "scenario"),                                     # rule of the whole document
    (lambda d: d.update(search={"tp": [0]}), "search.tp"),                      # field validator
])
def test_every_message_says_what_is_allowed(tmp_path, capsys, mutate, field):
    doc = _with(TRAIN, "name", "bad")
    mutate(doc)
    got_field, problem, allowed = _one_line(*_solve(tmp_path, capsys, doc))
    assert got_field == field
    assert allowed.strip()


@pytest.mark.parametrize("text", ["name: x\ntrain: [unclosed\n", "- just\n- a list\n"])
def test_unreadable_documents_still_give_one_line_with_allowed(tmp_path, capsys, text):
    code, out, err = _solve(tmp_path, capsys, text=text)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert re.match(r"^error: .+: .+; .+$", err.strip()), err


def test_portfolios_use_the_same_paths_and_suggestions():
    doc = {"name": "p", "jobs": [{"name": "a", "model": "llama-3-8b",
                                  "train": {"tokens": -1, "seq_len": 8192, "global_batch": 512}}]}
    with pytest.raises(ClusteroptError) as e:
        load_portfolio(doc)
    assert e.value.field == "jobs[0].train.tokens" and "'auto'" in e.value.allowed
    doc["jobs"][0]["train"]["tokens"] = 1e12
    doc["fleet"] = {"buy": {"buget_usd": 1e6}}
    with pytest.raises(ClusteroptError) as e:
        load_portfolio(doc)
    assert e.value.field == "fleet.buy.buget_usd" and "'budget_usd'" in e.value.allowed


class _Row(BaseModel):
    size_gb: Union[Annotated[float, Field(gt=0)], Literal["auto"]]
    kind: str


def test_without_a_model_the_path_still_drops_tags_and_allowed_comes_from_the_error():
    """Callers that do not pass the model (catalog rows) get tag-free paths and an 'allowed' part."""
    with pytest.raises(ValidationError) as e:
        _Row(size_gb=-3, kind="x")
    assert "constrained-float" in str(e.value.errors()[0]["loc"])      # what pydantic says
    err = from_pydantic(e.value, prefix="file.csv:row 2")
    assert err.field == "file.csv:row 2.size_gb"
    assert "greater than 0" in err.problem and err.allowed == "allowed: a number > 0"


@pytest.mark.parametrize("annotation, text", [
    (list[int], "a list of integers"),
    (dict[str, float], "a mapping of names to numbers"),
    (bool, "true or false"),
])
def test_describe_plain_types(annotation, text):
    assert describe(annotation) == text
