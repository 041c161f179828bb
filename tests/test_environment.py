"""One tested environment (issue 14, item 7; checklist row 17).

``requirements.lock`` (written by ``make lock``) pins, with hashes, every package the course
installs except torch, which ``make setup`` installs first at ``TORCH_VERSION`` from the Makefile so
that a user's own build (CUDA, ROCm, MPS, CPU) is kept. These tests check that
- the lock satisfies every dependency that ``pyproject.toml`` declares (core, ``book``, ``test``);
- the lock is complete: walking the installed packages' own requirements from those roots never
  reaches a package the lock lacks, or a version it does not allow (apart from the overrides in
  ``.ci/overrides.txt``, which the lock applies on purpose);
- the environment these tests run in *is* the lock: every locked version is the installed one;
- ``environment.yml`` (conda) lists every declared dependency, each pinned to the lock's version.
"""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
#: conda-forge names that differ from the PyPI names (conda -> PyPI).
CONDA_TO_PYPI = {"pytorch": "torch", "python-igraph": "igraph"}
EXTRAS = ("book", "test")


def read_lock(text: str, env: dict | None = None) -> dict[str, str]:
    """``{canonical name: version}`` of a pip/uv requirements lock, for the packages whose
    environment marker (``pkg==1.0 ; sys_platform == 'darwin'``) holds on this machine (or ``env``)."""
    from packaging.markers import Marker

    pins = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if m and (m.group(3) is None or Marker(m.group(3)).evaluate(env)):
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def torch_version(makefile: str) -> str:
    m = re.search(r"^TORCH_VERSION\s*:?=\s*(\S+)", makefile, re.M)
    assert m, "the Makefile sets no TORCH_VERSION"
    return m.group(1)


def declared(pyproject: dict) -> list[Requirement]:
    """pyproject's dependencies and those of the extras that `make setup` installs."""
    reqs = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    for extra in EXTRAS:
        reqs += [Requirement(r) for r in pyproject["project"]["optional-dependencies"][extra]]
    return reqs


def unsatisfied(reqs: list[Requirement], pins: dict[str, str]) -> list[str]:
    out = []
    for r in reqs:
        name = canonicalize_name(r.name)
        if name not in pins:
            out.append(f"{r}: not in the lock")
        elif not r.specifier.contains(pins[name], prereleases=True):
            out.append(f"{r}: the lock has {pins[name]}")
    return out


def conda_pins(env_yml: dict) -> dict[str, str]:
    """``{PyPI canonical name: spec}`` of every dependency named in environment.yml."""
    specs = {}
    for dep in env_yml["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            item = item.split("#")[0].strip()
            if item.startswith("-") or not item:
                continue
            m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$", item)
            name = CONDA_TO_PYPI.get(m.group(1), m.group(1))
            specs[canonicalize_name(name)] = m.group(2).strip()
    return specs


def pin_mismatches(specs: dict[str, str], pins: dict[str, str]) -> list[str]:
    out = []
    for name, spec in specs.items():
        if name in ("python", "pip"):
            continue
        if name not in pins:
            out.append(f"{name}: in environment.yml but not in the lock")
        elif spec != f"=={pins[name]}":
            out.append(f"{name}: environment.yml says {spec or 'no version'!r}, the lock =={pins[name]}")
    return out


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    assert LOCK.is_file(), "requirements.lock is missing: `make lock` writes it"
    pins = read_lock(LOCK.read_text())
    pins["torch"] = torch_version((ROOT / "Makefile").read_text())   # installed first, by version
    return pins


@pytest.fixture(scope="module")
def pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_lock_has_hashes_and_no_torch_or_cuda():
    text = LOCK.read_text()
    pins = read_lock(text)
    assert len(pins) > 50
    assert text.count("--hash=sha256:") >= len(pins), "every locked package needs a hash"
    assert "torch" not in pins, "torch belongs to `make setup`'s first step (TORCH_VERSION), not to the lock"
    cuda = [n for n in pins if n.startswith("nvidia-") or n == "triton"]
    assert not cuda, f"the lock pulls a CUDA build: {cuda} (re-run `make lock` against the CPU torch)"


def test_lock_satisfies_every_declared_dependency(pins, pyproject):
    problems = unsatisfied(declared(pyproject), pins)
    assert not problems, "pyproject.toml and requirements.lock disagree (run `make lock`):\n" + "\n".join(problems)


def _overrides() -> dict[str, Requirement]:
    lines = (ROOT / ".ci" / "overrides.txt").read_text().splitlines()
    return {canonicalize_name(r.name): r for r in
            (Requirement(x.split("#")[0]) for x in lines if x.split("#")[0].strip())}


def test_lock_is_complete_for_the_installed_tree(pins, pyproject):
    """Walk every requirement from pyproject's roots through the installed metadata."""
    env = default_environment()
    overrides = _overrides()
    todo = [(r, "pyproject.toml") for r in declared(pyproject)]
    seen: set[tuple[str, frozenset]] = set()
    problems = []
    while todo:
        req, parent = todo.pop()
        name = canonicalize_name(req.name)
        if name in overrides:
            req = overrides[name]
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        if name not in pins:
            problems.append(f"{name} (required by {parent}) is not in the lock")
            continue
        if not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{parent} requires {req}, the lock has {pins[name]}")
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is locked but not installed")
            continue
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is not None and not any(
                    sub.marker.evaluate({**env, "extra": e}) for e in (req.extras or {""})):
                continue
            todo.append((sub, name))
    assert not problems, "requirements.lock is incomplete (run `make lock`):\n" + "\n".join(sorted(problems))


def test_the_installed_environment_is_the_lock(pins):
    """What CI runs on is exactly what the lock says (`make setup` installs from it)."""
    wrong = []
    for name, version in pins.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}=={version} is not installed")
            continue
        if name == "torch":
            have = Version(have).base_version                 # 2.13.0+cpu is the CPU build of 2.13.0
        if Version(have) != Version(version):
            wrong.append(f"{name}: installed {have}, locked {version}")
    assert not wrong, "the environment is not the lock (run `make setup`):\n" + "\n".join(wrong)


def test_environment_yml_names_the_lock_pins(pins, pyproject):
    yaml = pytest.importorskip("yaml")
    specs = conda_pins(yaml.safe_load((ROOT / "environment.yml").read_text()))
    problems = pin_mismatches(specs, pins)
    problems += [f"{r.name}: declared in pyproject.toml, missing from environment.yml"
                 for r in declared(pyproject) if canonicalize_name(r.name) not in specs]
    assert not problems, "environment.yml and requirements.lock disagree:\n" + "\n".join(problems)


def test_the_checks_can_fail():
    lock = ("numpy==2.2.6 \\\n    --hash=sha256:00\nscipy==1.16.3\n"
            "appnope==1.0.0 ; sys_platform == 'darwin' \\\n    --hash=sha256:00\n")
    assert read_lock(lock, {**default_environment(), "sys_platform": "darwin"})["appnope"] == "1.0.0"
    pins = read_lock(lock, {**default_environment(), "sys_platform": "linux"})
    assert pins == {"numpy": "2.2.6", "scipy": "1.16.3"}
    assert unsatisfied([Requirement("numpy<2.2"), Requirement("pandas")], pins) == [
        "numpy<2.2: the lock has 2.2.6", "pandas: not in the lock"]
    specs = conda_pins({"dependencies": ["python=3.11", "numpy==2.2.5", "pytorch==2.13.0",
                                         {"pip": ["scipy==1.16.3", "-e ."]}]})
    assert specs == {"python": "=3.11", "numpy": "==2.2.5", "torch": "==2.13.0", "scipy": "==1.16.3"}
    assert pin_mismatches(specs, {**pins, "torch": "2.13.0"}) == [
        "numpy: environment.yml says '==2.2.5', the lock ==2.2.6"]
    assert torch_version("X := 1\nTORCH_VERSION := 2.13.0\n") == "2.13.0"
