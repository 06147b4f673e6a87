"""CITATION.cff: valid Citation File Format 1.2.0, and citing the paper of every method the study implements."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The format's own schema, as the cffconvert validator ships it; `make venv` installs cffconvert (pinned in the
# Makefile) without its dependencies, whose jsonschema<4 conflicts with Jupyter's, into .venv/cff.
SCHEMA = Path(sys.prefix) / "cff" / "cffconvert" / "schemas" / "1.2.0" / "schema.json"
DOI = re.compile(r"doi:(10\.\d{4,9}/[^\s,;)]+[^\s,;).])")


@pytest.fixture(scope="module")
def validator():
    assert SCHEMA.is_file(), f"{SCHEMA}: missing; `make venv` installs it"
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def citation():
    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def test_citation_cff_is_valid(validator, citation):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(citation)]
    assert not errors, errors


@pytest.mark.parametrize("break_it", [
    lambda c: c.pop("authors"),
    lambda c: c["references"][0].update(doi="not a doi"),
    lambda c: c.update(unknown_key=1),
])
def test_the_validator_catches_a_broken_file(validator, citation, break_it):
    broken = copy.deepcopy(citation)
    break_it(broken)
    assert list(validator.iter_errors(broken))


def test_every_method_paper_is_a_reference(citation):
    cited = {str(ref["doi"]) for ref in citation["references"]}
    papers = {m.group(1) for page in (ROOT / "docs" / "methods").glob("*.md") for m in DOI.finditer(page.read_text())
              if page.name != "training.md"}
    assert papers and papers <= cited, sorted(papers - cited)
    assert "10.3390/s25041093" in cited  # the review whose comparison the study repeats
