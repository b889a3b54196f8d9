"""Reading the effective capability set and naming what is missing to load programs."""

from pathlib import Path

from flowlog.dataplane.privileges import (
    CAP_BPF,
    CAP_NET_ADMIN,
    CAP_PERFMON,
    CAP_SYS_ADMIN,
    effective_capabilities,
    missing_to_load_programs,
)

ALL_THREE = 1 << CAP_BPF | 1 << CAP_NET_ADMIN | 1 << CAP_PERFMON


def test_the_effective_set_is_read_from_the_status_file(tmp_path: Path):
    status = tmp_path / "status"
    status.write_text("Name:\tflowlog\nCapPrm:\t000001ffffffffff\nCapEff:\t000000c000001000\n")
    assert effective_capabilities(status) == ALL_THREE


def test_holding_all_three_nothing_is_missing():
    assert missing_to_load_programs(ALL_THREE) is None


def test_each_missing_capability_is_named_with_what_it_is_for():
    message = missing_to_load_programs(1 << CAP_BPF)
    assert message is not None and "\n" not in message
    assert "missing capabilities CAP_NET_ADMIN (to load tc programs" in message
    assert "CAP_PERFMON (for the verifier" in message
    assert "CAP_BPF (" not in message


def test_cap_sys_admin_still_grants_what_cap_bpf_and_cap_perfmon_do():
    # A privileged process, or a kernel older than 5.8's split of CAP_SYS_ADMIN.
    assert missing_to_load_programs(1 << CAP_SYS_ADMIN | 1 << CAP_NET_ADMIN) is None
    message = missing_to_load_programs(1 << CAP_SYS_ADMIN)
    assert message is not None and "missing capability CAP_NET_ADMIN " in message
