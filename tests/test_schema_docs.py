"""Every property of the scenario and result JSON Schemas says what it means (issue 19): planning
tools read these schemas to fill scenarios in and to read results."""

import pytest

from optimizer.schema import json_schema, property_rows
from optimizer.scenario import Scenario


@pytest.mark.parametrize("kind", ["scenario", "result", "sweep", "plan", "calibration"])
def test_every_property_has_a_description(kind):
    rows = property_rows(json_schema(kind))
    assert len(rows) > 10
    missing = [path for path, _, desc in rows if not desc.strip()]
    assert not missing, f"{kind}: no description for {missing}"


def test_descriptions_are_on_the_pydantic_fields():
    assert "USD" in Scenario.model_fields["constraints"].annotation.model_fields["budget_usd"].description
    assert Scenario.model_fields["top_k"].description


def test_property_rows_follow_references_and_lists():
    paths = {p for p, _, _ in property_rows(json_schema("scenario"))}
    assert {"serve.slo.ttft_p99_s", "search.compression[].option", "train.tokens.min", "system.switch"} <= paths
