"""bpf/policy_maps.h and flowlog.dataplane.maps describe the same bytes and constants."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from flowlog.dataplane import maps
from flowlog.dataplane.programs import bpf_source_dir

HEADER = bpf_source_dir() / "policy_maps.h"
CONSTANTS = (
    "MAX_PORT_RULES",
    "ENDPOINT_INGRESS_ISOLATED",
    "ENDPOINT_EGRESS_ISOLATED",
    "SETTING_EMIT_EVENTS",
    "SETTING_TAP_EVENTS",
    "SETTING_STRICT",
    "SETTINGS_COUNT",
    "LOST_POLICY_EVENTS",
    "LOST_TAP_EVENTS",
    "FLOW_SOURCE_IS_UPPER",
    "FLOW_FIN_SENT",
    "FLOW_FIN_RECEIVED",
    "FLOW_RESET",
    "FLOW_ENDED",
    "FLOW_SENT",
    "FLOW_RECEIVED",
)


def compiler_view(tmp_path: Path) -> dict[str, int]:
    """What gcc says: every struct's size, every field's offset and size, every constant."""
    prints = []
    for struct_name, mirror in maps.STRUCTS.items():
        prints.append(f'printf("{struct_name} %zu\\n", sizeof(struct {struct_name}));')
        for field, _ in mirror._fields_:
            member = f"((struct {struct_name} *)0)->{field}"
            prints.append(
                f'printf("{struct_name}.{field} %zu %zu\\n", '
                f"offsetof(struct {struct_name}, {field}), sizeof({member}));"
            )
    prints += [f'printf("{name} %d\\n", {name});' for name in CONSTANTS]
    source = tmp_path / "layout.c"
    body = "\n    ".join(prints)
    source.write_text(
        f'#include <stddef.h>\n#include <stdio.h>\n#include "{HEADER}"\n'
        f"int main(void) {{\n    {body}\n    return 0;\n}}\n"
    )
    binary = tmp_path / "layout"
    subprocess.run(["gcc", "-o", str(binary), str(source)], check=True)
    output = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    view = {}
    for line in output.splitlines():
        name, *numbers = line.split()
        view[name] = tuple(int(n) for n in numbers) if len(numbers) > 1 else int(numbers[0])
    return view


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_every_struct_field_and_constant_agrees_with_the_c_compiler(tmp_path):
    expected = {}
    for struct_name, mirror in maps.STRUCTS.items():
        expected[struct_name] = ctypes.sizeof(mirror)
        for field, kind in mirror._fields_:
            expected[f"{struct_name}.{field}"] = (
                getattr(mirror, field).offset,
                ctypes.sizeof(kind),
            )
    expected.update({name: getattr(maps, name) for name in CONSTANTS})
    assert compiler_view(tmp_path) == expected
