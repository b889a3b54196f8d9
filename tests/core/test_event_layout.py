"""bpf/flow_event.h and flowlog.records' FLOW_EVENT and FLOW_END describe the same bytes."""

import shutil
import subprocess
from pathlib import Path

import pytest
from flowlog._format import RECORD_SIZE

from flowlog.records import FLOW_END, FLOW_EVENT

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "flow_event.h"


# Where each dtype field lives in the C structs.
MEMBERS = {"flow_event": {name: name for name in FLOW_EVENT.names}}
MEMBERS["flow_end"] = {
    name: f"flow.{name}" if name in FLOW_EVENT.names else name for name in FLOW_END.names
}
DTYPES = {"flow_event": FLOW_EVENT, "flow_end": FLOW_END}


def compiler_layout(tmp_path: Path, struct: str) -> dict[str, tuple[int, int]]:
    source = tmp_path / f"{struct}.c"
    prints = "\n".join(
        f'    printf("{name} %zu %zu\\n", offsetof(struct {struct}, {member}), '
        f"sizeof(((struct {struct} *)0)->{member}));"
        for name, member in MEMBERS[struct].items()
    )
    source.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n"
        f'#include "{HEADER}"\n'
        "int main(void) {\n"
        f'    printf("size %zu 0\\n", sizeof(struct {struct}));\n{prints}\n    return 0;\n}}\n'
    )
    binary = tmp_path / struct
    subprocess.run(["gcc", "-o", str(binary), str(source)], check=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    return {name: (int(a), int(b)) for name, a, b in (line.split() for line in out.splitlines())}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("struct", sorted(DTYPES))
def test_every_offset_and_size_agrees_with_the_c_compiler(tmp_path, struct):
    dtype = DTYPES[struct]
    layout = compiler_layout(tmp_path, struct)
    assert layout.pop("size") == (dtype.itemsize, 0)
    expected = {
        name: (dtype.fields[name][1], dtype.fields[name][0].itemsize) for name in dtype.names
    }
    assert layout == expected


def test_the_formatter_is_built_for_the_same_struct():
    assert FLOW_END.itemsize == RECORD_SIZE
