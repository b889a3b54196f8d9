"""bpf/flow_event.h and flowlog.records.FLOW_EVENT describe the same bytes."""

import shutil
import subprocess
from pathlib import Path

import pytest

from flowlog.records import FLOW_EVENT

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "flow_event.h"


def compiler_layout(tmp_path: Path) -> dict[str, tuple[int, int]]:
    fields = FLOW_EVENT.names
    source = tmp_path / "layout.c"
    prints = "\n".join(
        f'    printf("{name} %zu %zu\\n", offsetof(struct flow_event, {name}), '
        f"sizeof(((struct flow_event *)0)->{name}));"
        for name in fields
    )
    source.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n"
        f'#include "{HEADER}"\n'
        "int main(void) {\n"
        f'    printf("size %zu 0\\n", sizeof(struct flow_event));\n{prints}\n    return 0;\n}}\n'
    )
    binary = tmp_path / "layout"
    subprocess.run(["gcc", "-o", str(binary), str(source)], check=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    return {name: (int(a), int(b)) for name, a, b in (line.split() for line in out.splitlines())}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_every_offset_and_size_agrees_with_the_c_compiler(tmp_path):
    layout = compiler_layout(tmp_path)
    assert layout.pop("size") == (FLOW_EVENT.itemsize, 0)
    expected = {
        name: (FLOW_EVENT.fields[name][1], FLOW_EVENT.fields[name][0].itemsize)
        for name in FLOW_EVENT.names
    }
    assert layout == expected
