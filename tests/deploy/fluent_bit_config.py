"""Fluent Bit's two configuration formats, read into one shape so they can be compared.

No Fluent Bit binary runs here, so this reads the classic format (INI-like
sections of indented ``Key value`` entries, parsers in the file named by
``Parsers_File``) and the YAML format (``service``, ``parsers``, ``pipeline``)
the way Fluent Bit does as far as our files need: keys are case-insensitive
and booleans may be On/Off/true/false in either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.manifests import REPOSITORY

FLUENT_BIT_DIR = REPOSITORY / "fluent-bit"
# Where fluent-bit/daemonset.yaml mounts the ConfigMap holding this directory's files.
CONFIG_MOUNT = "/fluent-bit/etc"
CLASSIC_SECTIONS = ("SERVICE", "INPUT", "FILTER", "OUTPUT")
TRUE_WORDS = ("on", "true", "yes")
FALSE_WORDS = ("off", "false", "no")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

Entries = dict[str, str]


@dataclass
class Section:
    name: str  # SERVICE, INPUT, FILTER, OUTPUT, PARSER
    entries: Entries  # keys as written


@dataclass
class Pipeline:
    """A configuration in either format, keys lower-cased and values normalised."""

    service: Entries
    parsers: list[Entries]
    inputs: list[Entries]
    filters: list[Entries]
    outputs: list[Entries]


def normalize_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value)
    if text.lower() in TRUE_WORDS:
        return "on"
    if text.lower() in FALSE_WORDS:
        return "off"
    return text


def normalize(entries: Mapping[str, Any]) -> Entries:
    return {key.lower(): normalize_value(value) for key, value in entries.items()}


def read_classic_sections(path: Path) -> list[Section]:
    sections: list[Section] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        where = f"{path.name}:{number}"
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            raise ValueError(f"{where}: directive not understood by this reader: {line}")
        if line.startswith("["):
            if raw[0].isspace() or not line.endswith("]"):
                raise ValueError(f"{where}: a section header is [NAME] at the start of a line")
            sections.append(Section(line[1:-1].strip().upper(), {}))
            continue
        if not raw[0].isspace() or not sections:
            raise ValueError(f"{where}: expected an indented 'Key value' entry inside a section")
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise ValueError(f"{where}: expected 'Key value', got {line!r}")
        key, value = parts
        if key.lower() in (k.lower() for k in sections[-1].entries):
            raise ValueError(f"{where}: {key} set twice in one section")
        sections[-1].entries[key] = value
    return sections


def local_path(container_path: str) -> Path:
    """The file in fluent-bit/ that the pod sees at ``container_path``."""
    prefix = CONFIG_MOUNT + "/"
    if not container_path.startswith(prefix):
        raise ValueError(f"{container_path} is not under the config mount {CONFIG_MOUNT}")
    return FLUENT_BIT_DIR / container_path.removeprefix(prefix)


def read_classic(path: Path) -> Pipeline:
    sections = read_classic_sections(path)
    unknown = {s.name for s in sections} - set(CLASSIC_SECTIONS)
    if unknown:
        raise ValueError(f"{path.name}: unknown sections {sorted(unknown)}")
    services = [normalize(s.entries) for s in sections if s.name == "SERVICE"]
    if len(services) != 1:
        raise ValueError(f"{path.name}: expected one [SERVICE] section")
    service = services[0]
    parsers = []
    if "parsers_file" in service:
        parser_sections = read_classic_sections(local_path(service.pop("parsers_file")))
        if any(s.name != "PARSER" for s in parser_sections):
            raise ValueError("a parsers file holds only [PARSER] sections")
        parsers = [normalize(s.entries) for s in parser_sections]
    return Pipeline(
        service=service,
        parsers=parsers,
        inputs=[normalize(s.entries) for s in sections if s.name == "INPUT"],
        filters=[normalize(s.entries) for s in sections if s.name == "FILTER"],
        outputs=[normalize(s.entries) for s in sections if s.name == "OUTPUT"],
    )


def read_yaml(path: Path) -> Pipeline:
    document = yaml.safe_load(path.read_text())
    unknown = set(document) - {"service", "parsers", "pipeline"}
    if unknown:
        raise ValueError(f"{path.name}: sections not understood by this reader: {sorted(unknown)}")
    pipeline = document.get("pipeline") or {}
    return Pipeline(
        service=normalize(document.get("service") or {}),
        parsers=[normalize(p) for p in document.get("parsers") or []],
        inputs=[normalize(i) for i in pipeline.get("inputs") or []],
        filters=[normalize(f) for f in pipeline.get("filters") or []],
        outputs=[normalize(o) for o in pipeline.get("outputs") or []],
    )


def expand(value: str, environment: Mapping[str, str]) -> str:
    """``${VARIABLE}`` replaced as Fluent Bit does at start-up; a missing one is an error."""
    return VARIABLE.sub(lambda match: environment[match.group(1)], value)


def variables(text: str) -> set[str]:
    return set(VARIABLE.findall(text))


def python_time_format(fluent_bit_format: str) -> str:
    """Fluent Bit's strptime format with its %L (fraction of a second) in Python's terms."""
    if "%L" in fluent_bit_format and "%S.%L" not in fluent_bit_format:
        raise ValueError("Fluent Bit accepts %L only right after %S. or %s.")
    return fluent_bit_format.replace("%L", "%f")
