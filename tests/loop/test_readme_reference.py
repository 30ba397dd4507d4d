"""The README's campaign files work as printed: a new user copies them.

The campaign file reference (every key, annotated) named a parameter and failing-region
variables the file does not have, and a simulator whose inputs are not its parameters, so
`closedloop validate` refused it three times in a row (found in review). Every ```yaml block
of README.md that is a whole campaign file is validated here, and run for two trials, with
the files it names: a ```python block whose first line is ``# path/to/file.py`` is written
at that path, and the prior-data CSVs below.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML, YAMLError
from typer.testing import CliRunner

from loop.cli import app

README = Path(__file__).parents[2] / "README.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
#: What a whole campaign file has (a dataset campaign may leave out its parameters).
_CAMPAIGN_KEYS = {"name", "instrument", "budget"}

#: Prior data the README's campaigns name, in their parameters and outputs.
PRIOR = {
    "earlier.csv": (
        "temperature,residence_time,stages,catalyst,stirring,yield,impurity\n"
        "60,5,2,Pd-A,low,0.8,0.02\n"
        "90,2,1,Ni-C,high,0.85,0.03\n"
    )
}


def _blocks(language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(README.read_text()) if lang == language]


def _campaign_blocks() -> list[str]:
    found = []
    for body in _blocks("yaml"):
        try:
            data = YAML(typ="safe").load(body)
        except YAMLError:  # a snippet showing alternatives (the same key twice)
            continue
        if isinstance(data, dict) and _CAMPAIGN_KEYS <= set(data):
            found.append(body)
    return found


CAMPAIGNS = _campaign_blocks()


def test_the_reference_block_is_found() -> None:
    assert any("readback_out_of_range_rate" in body for body in CAMPAIGNS)


@pytest.mark.parametrize("text", CAMPAIGNS, ids=[f"block{i}" for i in range(len(CAMPAIGNS))])
def test_a_readme_campaign_file_validates_and_runs_as_printed(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for body in _blocks("python"):
        first = body.splitlines()[0]
        match = re.fullmatch(r"# ([\w/.-]+\.py)", first)
        if match:
            target = tmp_path / match.group(1)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
    prior = YAML(typ="safe").load(text).get("prior_data")
    if prior is not None:
        assert prior in PRIOR, f"the README's campaign names prior data {prior!r}: add it here"
        (tmp_path / prior).write_text(PRIOR[prior])
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    cli = CliRunner()
    validated = cli.invoke(app, ["validate", str(path)])
    assert validated.exit_code == 0, validated.output + str(validated.exception or "")
    assert validated.output.startswith("ok "), validated.output
    url = f"sqlite:///{tmp_path / 'store.db'}"
    ran = cli.invoke(app, ["run", str(path), "--store", url, "--max-trials", "2", "-q"])
    assert ran.exit_code == 0, ran.output + str(ran.exception or "")
    assert "completed" in ran.output
