"""The documentation points at files that exist: every repository path named in the READMEs and the model card."""

from __future__ import annotations

import re

import pytest
from conftest import REPO_ROOT

DOCUMENTS = ["README.md", "firmware_config/README.md", "firmware_config/mosquitto/README.md", "systemd/README.md",
             "models/model_card.md", "model_conversion/CROSS_SOURCE.md"]
PATH = re.compile(r"(?<![\w./-])((?:device|webui|sync|model_conversion|models|systemd|firmware_config|tests|\.ci)"
                  r"/[\w./*-]*[\w*])")


def named_paths(text: str) -> set[str]:
    return {p for p in PATH.findall(text) if "*" not in p}


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_path_a_document_names_exists(document):
    text = (REPO_ROOT / document).read_text(encoding="utf-8")
    missing = sorted(p for p in named_paths(text) if not (REPO_ROOT / p).exists())
    assert missing == [], f"{document} names paths that do not exist: {missing}"


def test_the_path_finder_sees_paths_in_prose_and_code():
    text = "see `device/core/detect.py`, (tests/ops/test_docs.py) and webui/kit/static/style.css."
    assert named_paths(text) == {"device/core/detect.py", "tests/ops/test_docs.py", "webui/kit/static/style.css"}
