"""Scenario schema: every shipped scenario validates; bad input names the field (issue 4)."""

import pytest

from optimizer.errors import ClusteroptError
from optimizer.scenario import list_scenarios, load_scenario

BASE = {"name": "t", "model": "llama-3-8b",
        "train": {"tokens": 1e12, "seq_len": 4096, "global_batch": 512}}


@pytest.mark.parametrize("name", list_scenarios())
def test_shipped_scenarios_validate_and_document_intent(name):
    from optimizer.scenario import scenario_dir

    sc = load_scenario(name)
    assert sc.train is not None or sc.serve is not None
    text = (scenario_dir() / f"{name}.yaml").read_text()
    assert text.lstrip().startswith("#"), "each scenario documents its intent in a leading comment"


def test_at_least_eight_training_scenarios():
    assert sum(load_scenario(n).train is not None for n in list_scenarios()) >= 8


def test_yaml_number_forms_are_accepted(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: s\nmodel: llama-3-8b\ntrain: {tokens: 15e12, seq_len: 8192, global_batch_tokens: 16e6}\n"
                 "constraints: {deadline_days: 45.5, budget_usd: 1.5e6}\n")
    sc = load_scenario(p)
    assert sc.train.tokens == 15e12 and sc.constraints.deadline_days == 45.5 and sc.constraints.budget_usd == 1.5e6


@pytest.mark.parametrize("patch, field", [
    ({"train": {"tokens": -1, "seq_len": 4096, "global_batch": 8}}, "train.tokens"),
    ({"train": {"tokens": 1e9, "seq_len": 4096}}, "train"),
    ({"constraints": {"memory_headroom": 1.5}}, "constraints.memory_headroom"),
    ({"objective": "speed"}, "objective"),
    ({"search": {"tp": [0]}}, "search.tp"),
    ({"constraints": {"deadlin_days": 3}}, "constraints.deadlin_days"),
])
def test_bad_input_names_the_field(patch, field):
    with pytest.raises(ClusteroptError) as e:
        load_scenario({**BASE, **patch})
    assert str(e.value).startswith(field)
    assert "\n" not in str(e.value)


def test_unknown_builtin_scenario_suggests_names():
    with pytest.raises(ClusteroptError) as e:
        load_scenario("llama3-70b-pretrian")
    assert "llama3-70b-pretrain" in str(e.value)


def test_with_overrides_revalidates():
    sc = load_scenario(BASE)
    sc2 = sc.with_overrides({"constraints.budget_usd": 2e6, "train.tokens": 3e12})
    assert sc2.constraints.budget_usd == 2e6 and sc2.train.tokens == 3e12 and sc.train.tokens == 1e12
    with pytest.raises(ClusteroptError):
        sc.with_overrides({"constraints.budget_usd": -5})


def test_shipped_yaml_numbers_are_numbers_to_any_yaml_parser():
    """A planner reading our scenarios with a YAML 1.1 parser (PyYAML) must see numbers, not
    strings: '15e12' is a string in YAML 1.1, '1.5e+13' a float. (Our loader accepts both.)"""
    import re

    import yaml

    from optimizer.scenario import scenario_dir

    looks_numeric = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def strings(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from strings(v)
        elif isinstance(x, list):
            for v in x:
                yield from strings(v)
        elif isinstance(x, str):
            yield x

    files = sorted(scenario_dir().glob("*.yaml")) + sorted((scenario_dir() / "portfolios").glob("*.yaml"))
    assert len(files) >= 20
    for f in files:
        bad = [s for s in strings(yaml.safe_load(f.read_text())) if looks_numeric.match(s)]
        assert not bad, (f.name, bad)
