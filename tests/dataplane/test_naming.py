"""Pod veth names, as the VPC CNI gives them (checked against sha1sum's output)."""

from flowlog.dataplane.naming import host_veth_name, is_pod_veth


def test_eni_and_the_first_eleven_hex_characters_of_sha1_of_namespace_dot_name():
    # printf 'default.nginx' | sha1sum  ->  c440f455693b69cdd48a37aa5ecd78038f50413d
    assert host_veth_name("default", "nginx") == "enic440f455693"
    # printf 'stars.frontend' | sha1sum ->  f881a007510faf7f13536df84ffbecbf0fd696db
    assert host_veth_name("stars", "frontend") == "enif881a007510"


def test_names_fit_an_interface_name():
    assert (
        len(host_veth_name("a-very-long-namespace-name", "a-very-long-pod-name-0123456789")) <= 15
    )


def test_only_eni_links_are_pod_veths():
    assert is_pod_veth("enic440f455693")
    assert not is_pod_veth("eth0")
    assert not is_pod_veth("lo")
