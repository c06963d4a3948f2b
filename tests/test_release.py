"""What a release carries: one version everywhere, the license, the changelog, declared support.

The built sdist and wheel themselves are checked by ``scripts/check-dist`` (CI runs it): it
builds them, installs the wheel outside the checkout and serves the book sample from it.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import wsframe
from tests.support.servers import ROOT
from wsframe.cli import main


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def listed(value: str) -> list[str]:
    """The lines of a multi-line setup.cfg value, comments and blanks left out."""
    return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def install_requires() -> list[Requirement]:
    return [Requirement(line) for line in listed(setup_cfg()["options"]["install_requires"])]


def pins(path: Path) -> dict[str, Version]:
    """``name==version`` lines of a pip constraints file, by lower-cased name."""
    found = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            found[name.lower()] = Version(version)
    return found


def lower_bound(requirement: Requirement) -> Version:
    bounds = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    assert len(bounds) == 1, f"{requirement} needs exactly one >= lower bound"
    return bounds[0]


# ------------------------------------------------------------------ version


def test_version_option_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"wsframe {wsframe.__version__}\n"


def test_python_m_wsframe_version_matches_the_package() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsframe", "--version"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == f"wsframe {wsframe.__version__}"


def test_package_metadata_takes_its_version_from_wsframe_version() -> None:
    assert setup_cfg()["metadata"]["version"] == "attr: wsframe.__version__"
    assert importlib.metadata.version("wsframe") == wsframe.__version__


def test_version_is_a_plain_release_number() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", wsframe.__version__)


# ------------------------------------------------------------------ license and changelog


def test_license_file_is_the_mit_license_the_metadata_names() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert setup_cfg()["metadata"]["license"] == "MIT"
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the wsframe authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_changelog_opens_with_unreleased_then_the_current_version() -> None:
    headings = re.findall(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == "Unreleased"
    assert re.fullmatch(rf"{re.escape(wsframe.__version__)} - \d{{4}}-\d{{2}}-\d{{2}}", headings[1]), headings


def test_changelog_sections_use_keep_a_changelog_names() -> None:
    sections = set(re.findall(r"^### (.+)$", (ROOT / "CHANGELOG.md").read_text(), re.M))
    assert sections <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, sections


def test_changelog_page_includes_the_changelog_and_is_in_the_nav() -> None:
    assert '--8<-- "CHANGELOG.md:releases"' in (ROOT / "docs" / "changelog.md").read_text()
    assert "- Changelog and versioning: changelog.md" in (ROOT / "mkdocs.yml").read_text()


def test_docs_site_shows_the_changelog_and_the_version_it_documents(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("the docs build needs the docs extra: pip install -e '.[docs]'")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    page = (tmp_path / "changelog" / "index.html").read_text()
    assert f"These pages document wsframe {wsframe.__version__}." in page
    assert 'id="unreleased"' in page
    assert "{{ wsframe_version }}" not in page
    assert f"These pages document wsframe {wsframe.__version__}." in (tmp_path / "index.html").read_text()


def test_docs_version_hook_fails_when_no_version_is_assigned(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("version_hook", ROOT / "docs" / "_ext" / "version.py")
    assert spec is not None
    assert spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    assert hook.read_version(ROOT) == wsframe.__version__
    (tmp_path / "wsframe").mkdir()
    (tmp_path / "wsframe" / "__init__.py").write_text("VERSION = '1.0'\n")
    with pytest.raises(ValueError, match="no string __version__"):
        hook.read_version(tmp_path)


# ------------------------------------------------------------------ supported versions


def test_lowest_txt_pins_exactly_the_lower_bounds_of_install_requires() -> None:
    declared = {r.name.lower(): lower_bound(r) for r in install_requires()}
    assert pins(ROOT / "requirements" / "lowest.txt") == declared


def test_classifiers_name_python_requires_and_every_python_ci_runs() -> None:
    classifiers = listed(setup_cfg()["metadata"]["classifiers"])
    python_classifier = re.compile(r"Programming Language :: Python :: (3\.\d+)")
    declared = {m.group(1) for c in classifiers if (m := python_classifier.fullmatch(c))}
    ci_pythons = re.search(r'^pythons="([^"]+)"', (ROOT / ".ci" / "run").read_text(), re.M)
    assert ci_pythons is not None, '.ci/run names the extra Pythons it tests in pythons="..."'
    assert setup_cfg()["options"]["python_requires"] == ">=3.11"
    assert declared == {"3.11", *ci_pythons.group(1).split()}


def test_release_tools_are_an_extra_and_pinned() -> None:
    release = {Requirement(line).name for line in listed(setup_cfg()["options.extras_require"]["release"])}
    pinned = pins(ROOT / "requirements" / "constraints.txt")
    assert release == {"build", "twine"}
    assert release <= pinned.keys()
