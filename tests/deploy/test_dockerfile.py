"""docker/Dockerfile, read structurally (tests/deploy/test_image.py builds and runs it)."""

import json
import shlex
from dataclasses import dataclass

import pytest

from tests.deploy.manifests import REPOSITORY

DOCKERFILE = REPOSITORY / "docker" / "Dockerfile"
DOWNLOAD_TOOLS = ("curl", "wget")
COMPILER_PACKAGES = ("build-essential", "gcc", "g++", "clang", "make", "python3-dev")


@dataclass
class Instruction:
    keyword: str
    arguments: str
    comments: list[str]  # the comment lines just above it


def read_dockerfile() -> list[list[Instruction]]:
    """Instructions grouped by build stage, continuation lines joined."""
    stages: list[list[Instruction]] = []
    comments: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comments.append(line.lstrip("# "))
            continue
        if not line:
            if not pending:
                comments = []
            continue
        pending += line.removesuffix("\\") + " "
        if line.endswith("\\"):
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip(), comments)
        pending, comments = "", []
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return read_dockerfile()


@pytest.fixture(scope="module")
def final(stages) -> list[Instruction]:
    return stages[-1]


def instructions(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in stage if i.keyword == keyword]


def installed_packages(stage: list[Instruction]) -> set[str]:
    packages = set()
    for run in instructions(stage, "RUN"):
        for command in run.arguments.split("&&"):
            words = shlex.split(command)
            if words[:2] == ["apt-get", "install"]:
                packages |= {w for w in words[2:] if not w.startswith("-")}
    return packages


def environment(stage: list[Instruction]) -> dict[str, str]:
    values = {}
    for env in instructions(stage, "ENV"):
        for assignment in shlex.split(env.arguments):
            name, _, value = assignment.partition("=")
            values[name] = value
    return values


def stage_name(stage: list[Instruction]) -> str | None:
    words = stage[0].arguments.split()
    return words[2] if len(words) == 3 and words[1].upper() == "AS" else None


def ancestry(stages: list[list[Instruction]], stage: list[Instruction]) -> list[list[Instruction]]:
    """The stage and the stages it is built FROM, back to an image."""
    by_name = {stage_name(s): s for s in stages}
    chain = [stage]
    while (parent := chain[-1][0].arguments.split()[0]) in by_name:
        chain.append(by_name[parent])
    return chain


def test_every_stage_is_debian_bookworm(stages):
    for stage in stages:
        image = ancestry(stages, stage)[-1][0].arguments.split()[0]
        if stage_name(stage) == "wheels":
            # An empty placeholder for the wheels a build may pass as a build context.
            assert image == "scratch" and len(stage) == 1
            continue
        assert image.startswith("debian:bookworm"), image
    # A separate build stage, so the final one carries no build tools.
    assert "build" in {stage_name(s) for s in stages}
    assert all(stage_name(s) != "build" for s in ancestry(stages, stages[-1]))


def test_the_final_stage_has_debians_bcc_and_python(stages, final):
    packages = set().union(*(installed_packages(s) for s in ancestry(stages, final)))
    assert {"python3", "python3-bpfcc"} <= packages


def test_no_download_tools_or_compilers_in_the_final_stage(stages, final):
    packages = set().union(*(installed_packages(s) for s in ancestry(stages, final)))
    assert not packages & set(DOWNLOAD_TOOLS + COMPILER_PACKAGES)
    for run in instructions(final, "RUN"):
        assert not set(shlex.split(run.arguments.replace("&&", " "))) & set(DOWNLOAD_TOOLS)


def test_bpf_sources_and_saved_queries_where_the_environment_says(final):
    env = environment(final)
    copies = {
        tuple(c.arguments.split())
        for c in instructions(final, "COPY")
        if "--from" not in c.arguments
    }
    assert env["FLOWLOG_BPF_DIR"] == "/usr/share/flowlog/bpf"
    assert ("bpf/", env["FLOWLOG_BPF_DIR"] + "/") in copies
    assert env["FLOWLOG_INSIGHTS_DIR"] == "/usr/share/flowlog/insights"
    assert ("config/insights/", env["FLOWLOG_INSIGHTS_DIR"] + "/") in copies


def test_entrypoint_is_flowlog_and_the_default_command_the_agent(final):
    (entrypoint,) = instructions(final, "ENTRYPOINT")
    (command,) = instructions(final, "CMD")
    assert json.loads(entrypoint.arguments) == ["flowlog"]
    assert json.loads(command.arguments) == ["agent"]


def test_the_user_is_set_and_root_is_explained(final):
    (user,) = instructions(final, "USER")
    if user.arguments.split(":")[0] in ("0", "root"):
        explanation = " ".join(user.comments)
        assert "Root" in explanation and "capabilit" in explanation


def test_the_build_context_lets_through_what_the_dockerfile_copies(stages):
    ignore = (REPOSITORY / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything else stays out
    for stage in stages:
        for copy in instructions(stage, "COPY"):
            if "--from" in copy.arguments:
                continue
            for source in copy.arguments.split()[:-1]:
                assert f"!{source}" in ignore, source
