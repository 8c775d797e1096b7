"""The table of config keys (config.KEYS) is what the parser accepts: each key, at its default, changes nothing,
and an unknown key is answered with the table's own list."""
import pytest

from gespann import config
from gespann.config import KEYS, Config, ConfigError, parse

#: A value for the keys whose default is "absent", which the table cannot write down as a value.
GIVEN = {"scope.netns": "/proc/self/ns/net", "limits.tcp_connections": 1024, "limits.udp_flows": 512}


def document_with(path: str, value) -> dict:
    if "." not in path:
        return {path: value}
    section, name = path.split(".")
    return {section: {name: value}}


@pytest.mark.parametrize("path", [path for path in KEYS if path not in GIVEN and path != config.OLDER_EXPORTERS_KEY])
def test_each_key_at_its_default_is_the_default_config(path):
    default = KEYS[path].default
    value = list(default) if isinstance(default, tuple) else default
    assert parse(document_with(path, value)) == Config()


@pytest.mark.parametrize("path", GIVEN)
def test_each_key_without_a_default_is_accepted(path):
    parse(document_with(path, GIVEN[path]))


def test_the_older_name_of_the_exporters_is_accepted():
    assert parse({config.OLDER_EXPORTERS_KEY: list(KEYS[config.EXPORTERS_KEY].default)}).deprecations


@pytest.mark.parametrize("section", [name for name in KEYS.top_level() if KEYS.under(name)])
def test_an_unknown_key_in_a_section_lists_the_tables_keys(section):
    with pytest.raises(ConfigError) as err:
        parse({section: {"no_such_key": 1}})
    assert err.value.key == f"{section}.no_such_key"
    assert err.value.problem == f"unknown key; expected one of: {', '.join(KEYS.under(section))}"


def test_an_unknown_top_level_key_lists_the_tables_sections():
    with pytest.raises(ConfigError) as err:
        parse({"colour": "blue"})
    assert err.value.problem == f"unknown key; expected one of: {', '.join(KEYS.top_level())}"
    assert KEYS.top_level() == ("log_level", "exporters", "adapters", "events", "attach", "btf", "scope",
                                "connections", "labels", "limits", "extra_probes")


def test_keys_with_choices_refuse_what_the_table_does_not_list():
    for path in (path for path in KEYS if KEYS[path].choices and path != "btf.source"):
        with pytest.raises(ConfigError) as err:
            parse(document_with(path, "no_such_choice"))
        assert err.value.key == path and err.value.problem.endswith(", ".join(KEYS[path].choices))
