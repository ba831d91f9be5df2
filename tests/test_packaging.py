"""What the sdist and the wheel carry, built from the tracked files as a release would be."""

from __future__ import annotations

import importlib.metadata
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

_BUILD = """
import sys
from setuptools import build_meta
out = sys.argv[1]  # (setuptools rewrites sys.argv as it builds)
sdist = build_meta.build_sdist(out)
wheel = build_meta.build_wheel(out)
print("built", sdist, wheel)
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str], str]:
    """(the sdist's names, the wheel's names, the wheel's METADATA), built from a copy of
    the tracked files (a scratch file of a working tree is no release's)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (the tracked files are what a release holds)")
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        pytest.skip("needs setuptools>=77 (nox's test sessions install it)")
    if int(version.split(".")[0]) < 77:
        pytest.skip(f"needs setuptools>=77 (PEP 639 license fields), not {version}")
    tree = tmp_path_factory.mktemp("tree")
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    out = tmp_path_factory.mktemp("dist")
    made = subprocess.run(
        [sys.executable, "-c", _BUILD, str(out)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    sdist_name, wheel_name = made.stdout.split("\nbuilt ")[-1].split()
    with tarfile.open(out / sdist_name) as sdist:
        sdist_names = [name.split("/", 1)[1] for name in sdist.getnames() if "/" in name]
    with zipfile.ZipFile(out / wheel_name) as wheel:
        wheel_names = wheel.namelist()
        metadata = next(n for n in wheel_names if n.endswith(".dist-info/METADATA"))
        meta = wheel.read(metadata).decode()
    return sdist_names, wheel_names, meta


def test_the_sdist_carries_the_tests_with_their_helpers_the_docs_and_the_license(
    built: tuple[list[str], list[str], str],
) -> None:
    """The sdist listed the test modules without conftest.py and the helpers they import
    (they could not even be collected from it), no docs, no noxfile and no license."""
    sdist, _, _ = built
    for needed in (
        "LICENSE",
        "README.md",
        "noxfile.py",
        "pyproject.toml",
        "tests/conftest.py",
        "tests/loopback.py",
        "tests/natlab.py",
        "tests/peers/pion/main.go",
        "docs/conf.py",
        "docs/index.rst",
        "bench/connect_time.py",
        "trice/py.typed",
    ):
        assert needed in sdist, needed
    assert not [n for n in sdist if "__pycache__" in n or "test_zz_" in n]


def test_the_wheel_carries_the_license_and_the_typing_marker(
    built: tuple[list[str], list[str], str],
) -> None:
    _, wheel, meta = built
    assert "trice/py.typed" in wheel
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel), wheel
    assert not [n for n in wheel if n.startswith(("tests/", "docs/", "bench/"))]
    assert "License-Expression: MIT" in meta
    assert 'Requires-Dist: exceptiongroup>=1.1; python_version < "3.11"' in meta
    assert f"Version: {__import__('trice').__version__}" in meta
