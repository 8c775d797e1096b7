"""What probes need beyond the manifest (KernelNeeds): resolved from the kernel's BTF with it, cached apart
from the manifest's own entry, and, where it cannot be had, named with where it is missing from."""

from __future__ import annotations

import json
import logging
import os
import re

import pytest
from btf_oracle import dump, raw_enums, reachable_fields

from gespann import btf
from gespann.btf import cache, manifest, missing
from gespann.btf.manifest import FieldRef, KernelNeeds, beyond_manifest
from gespann.btf.sources import VMLINUX_BTF
from gespann.btf.vendored import table_path

needs_btf = pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="kernel has no /sys/kernel/btf/vmlinux")
RELEASE = os.uname().release

#: Names no manifest lists, that this kernel's BTF has.
EXTRA = KernelNeeds(fields=(FieldRef("sock", "sk_mark"), "tcp_sock.snd_ssthresh"), functions=("tcp_v4_send_reset",),
                    tracepoints=("tcp_retransmit_synack",), enums=("tcp_ca_state",))


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "gespann"


# --- the declaration ------------------------------------------------------------------------------------------

def test_a_declaration_takes_field_refs_or_dotted_strings_and_refuses_what_is_neither():
    needs = KernelNeeds(fields=[FieldRef("sock", "sk_mark"), "tcp_sock.rtt_min.s[0].v"], functions=["f"])
    assert needs.fields == (FieldRef("sock", "sk_mark", False), FieldRef("tcp_sock", "rtt_min.s[0].v", False))
    assert needs.names("field") == ("sock.sk_mark", "tcp_sock.rtt_min.s[0].v") and needs.functions == ("f",)
    assert needs and not KernelNeeds()
    with pytest.raises(TypeError, match=r"KernelNeeds\(tracepoints=...\) takes a tuple of names, not 'tcp_probe'"):
        KernelNeeds(tracepoints="tcp_probe")
    with pytest.raises(ValueError, match=r"KernelNeeds\(fields=...\): 'sk_mark' is not STRUCT.MEMBER"):
        KernelNeeds(fields=("sk_mark",))
    with pytest.raises(ValueError, match=r"KernelNeeds\(fields=...\): 'sock.sk mark' is not STRUCT.MEMBER"):
        KernelNeeds(fields=("sock.sk mark",))
    with pytest.raises(TypeError, match="7 is neither a FieldRef nor a 'struct.path' string"):
        KernelNeeds(fields=(7,))
    with pytest.raises(ValueError, match=r"KernelNeeds\(functions=...\): 'tcp v4' is not a kernel name"):
        KernelNeeds(functions=("tcp v4",))


def test_only_what_the_manifest_lacks_is_extra_and_without_it_the_digest_is_the_manifests():
    inside = KernelNeeds(fields=("tcp_sock.total_retrans",), functions=("tcp_connect",),
                         tracepoints=("tcp_probe",), enums=("skb_drop_reason",))
    assert not beyond_manifest([inside]) and manifest.digest(beyond_manifest([inside])) == manifest.digest()
    both = beyond_manifest([inside, EXTRA, KernelNeeds(functions=("tcp_v4_send_reset", "a_function"))])
    assert both.names("field") == ("sock.sk_mark", "tcp_sock.snd_ssthresh")
    assert both.functions == ("a_function", "tcp_v4_send_reset") and both.tracepoints == ("tcp_retransmit_synack",)
    assert manifest.digest(both) != manifest.digest()


# --- resolution and the cache ---------------------------------------------------------------------------------

@needs_btf
def test_needs_resolve_from_the_kernels_btf_as_bpftool_reads_it(cache_home):
    types = btf.kernel_types("btf", needs={"p": EXTRA}, use_cache=False)
    oracle = dump(str(VMLINUX_BTF))
    ids = {(t["kind"], t["name"]): i for i, t in oracle.items() if t.get("name")}
    for ref in EXTRA.fields:
        (bits,) = [bits for name, bits, _, _ in reachable_fields(oracle, oracle[ids["STRUCT", ref.struct]])
                   if name == ref.path]
        assert types.field(ref.key).offset == bits // 8, ref
    assert types.func("tcp_v4_send_reset").btf_id == ids["FUNC", "tcp_v4_send_reset"]
    assert types.tracepoint_id("tcp_retransmit_synack") == ids["TYPEDEF", "btf_trace_tcp_retransmit_synack"]
    (enumerators,) = raw_enums(str(VMLINUX_BTF), "tcp_ca_state")
    assert types.enum("tcp_ca_state") == {value: name for name, value in enumerators}
    assert types.offset("sock_common.skc_dport") == btf.kernel_types("btf", use_cache=False).offset(
        "sock_common.skc_dport")


@needs_btf
def test_gespanns_own_run_keeps_its_cache_entry_and_needs_get_their_own(cache_home):
    own = btf.kernel_types("btf")
    (entry,) = cache_home.glob("btf-*.json")
    assert entry.name == cache.cache_key(VMLINUX_BTF, RELEASE, os.uname().machine) + ".json"
    assert f"-m{manifest.digest()}-" in entry.name
    within = btf.kernel_types("btf", needs={"p": KernelNeeds(fields=("tcp_sock.total_retrans",))})
    assert within.source == f"cache {entry}" and list(cache_home.glob("btf-*.json")) == [entry]
    cold = btf.kernel_types("btf", needs={"p": EXTRA})
    assert cold.source == str(VMLINUX_BTF) and len(list(cache_home.glob("btf-*.json"))) == 2
    warm = btf.kernel_types("btf", needs={"q": EXTRA})
    assert warm.source.startswith("cache ") and warm.source != f"cache {entry}"
    assert warm.field("sock.sk_mark") == cold.field("sock.sk_mark") and warm.fields == cold.fields
    assert warm.needs == {"q": EXTRA} and warm.btf == str(VMLINUX_BTF)
    assert set(own.fields) < set(warm.fields)
    # An entry under the needs' key that lacks one of them is stale: resolved again.
    key = cache.cache_key(VMLINUX_BTF, RELEASE, os.uname().machine, beyond_manifest([EXTRA]))
    stale = warm._replace(tracepoints={k: v for k, v in warm.tracepoints.items() if k != "tcp_retransmit_synack"})
    cache.store(key, stale)
    assert cache.load(key, extra=beyond_manifest([EXTRA])) is None
    assert btf.kernel_types("btf", needs={"q": EXTRA}).source == str(VMLINUX_BTF)


def test_a_declaration_that_is_not_kernel_needs_names_the_probe():
    with pytest.raises(btf.BTFError, match=r"probe p declares kernel=\('sock.sk_mark',\): Probe\(kernel=...\) takes"):
        btf.kernel_types("btf", needs={"p": ("sock.sk_mark",)})


# --- what is missing, from where ------------------------------------------------------------------------------

@needs_btf
@pytest.mark.parametrize("kind, name, group, look_up", [
    ("field", "sock.sk_mark", "fields", lambda types, name: types.field(name)),
    ("field", "sock.sk_mark", "fields", lambda types, name: types.optional_field(name)),
    ("function", "tcp_v4_send_reset", "functions", lambda types, name: types.func(name)),
    ("tracepoint", "tcp_retransmit_synack", "tracepoints", lambda types, name: types.tracepoint_id(name)),
    ("enum", "tcp_ca_state", "enums", lambda types, name: types.enum(name)),
])
def test_an_undeclared_name_is_blamed_on_the_declaration_and_the_kernels_btf_is_asked(cache_home, kind, name,
                                                                                      group, look_up):
    types = btf.kernel_types("btf")
    with pytest.raises(btf.NotDeclared) as present:
        look_up(types, name)
    assert str(present.value) == (f"{kind} {name} is neither in gespann's manifest nor declared by a probe "
                                  f"(Probe(kernel=KernelNeeds({group}=({name!r},)))); the kernel's BTF ({VMLINUX_BTF}) "
                                  "has it")
    assert isinstance(present.value, KeyError)  # as an unknown name always was
    absent = name[:-1] + "_nonesuch"
    with pytest.raises(btf.NotDeclared) as missing_too:
        look_up(types, absent)
    assert str(missing_too.value).endswith(f"(Probe(kernel=KernelNeeds({group}=({absent!r},)))), and the kernel's "
                                           f"BTF ({VMLINUX_BTF}) has no {kind} {absent} either")


@needs_btf
def test_a_declared_name_the_kernel_lacks_is_blamed_on_the_kernels_btf(cache_home):
    needs = KernelNeeds(fields=("sock.sk_nonesuch", "nonesuch_struct.x"), functions=("tcp_nonesuch",),
                        tracepoints=("tcp_nonesuch",), enums=("tcp_nonesuch",))
    types = btf.kernel_types("btf", needs={"p": needs})
    where = re.escape(f"the kernel's BTF ({VMLINUX_BTF}) has no")
    for key in ("sock.sk_nonesuch", "nonesuch_struct.x"):
        assert types.optional_field(key) is None
        with pytest.raises(btf.FieldNotFound, match=rf"^{where} field {key} \(kernel {RELEASE}\)$"):
            types.field(key)
    with pytest.raises(btf.TypeNotFound, match=rf"^{where} function tcp_nonesuch \(kernel {RELEASE}\)$"):
        types.func("tcp_nonesuch")
    with pytest.raises(btf.TypeNotFound, match=rf"^{where} tracepoint tcp_nonesuch \(kernel {RELEASE}\)$"):
        types.tracepoint_id("tcp_nonesuch")
    assert types.enum("tcp_nonesuch") is None


@pytest.mark.parametrize("has_btf, remedy", [
    (True, "this kernel has BTF: set btf.source to auto (or btf) to resolve it from there"),
    (False, "on this kernel, without BTF, it cannot be resolved"),
])
def test_a_vendored_table_names_the_needs_it_cannot_offer(running_kernel_tables, monkeypatch, caplog, has_btf,
                                                          remedy):
    monkeypatch.setattr(missing, "kernel_has_btf", lambda: has_btf)
    table = table_path(RELEASE, os.uname().machine, running_kernel_tables)
    with caplog.at_level(logging.INFO, logger="gespann.btf.kernel"):
        types = btf.kernel_types(table, needs={"tcp_read_marks": EXTRA, "other": KernelNeeds(fields=("sock.sk_mark",))})
    vendored = f"the vendored table for kernel {RELEASE} ({table})"
    with pytest.raises(btf.FieldNotFound) as field:
        types.field("sock.sk_mark")
    assert str(field.value) == (f"probes tcp_read_marks, other need field sock.sk_mark, which {vendored} does not "
                                f"carry (vendored tables hold gespann's manifest only); {remedy}")
    with pytest.raises(btf.FieldNotFound, match="^probe tcp_read_marks needs field tcp_sock.snd_ssthresh, which"):
        types.optional_field("tcp_sock.snd_ssthresh")
    assert types.enum("tcp_ca_state") is None  # declared: reported as numbers, as the manifest's enums are
    with pytest.raises(btf.TypeNotFound) as tracepoint:
        types.tracepoint_id("tcp_retransmit_synack")
    assert str(tracepoint.value) == (f"tracepoint tcp_retransmit_synack has no BTF id here: tp_btf attaches by its "
                                     f"id in the kernel's BTF, and kernel types come from {vendored}, which carries "
                                     f"struct fields only; {remedy}")
    with pytest.raises(btf.TypeNotFound, match="^function tcp_v4_send_reset has no BTF id here: fentry"):
        types.func("tcp_v4_send_reset")
    with pytest.raises(btf.NotDeclared) as undeclared:
        types.field("sock.sk_priority")
    assert str(undeclared.value) == ("field sock.sk_priority is neither in gespann's manifest nor declared by a probe "
                                     "(Probe(kernel=KernelNeeds(fields=('sock.sk_priority',)))); and "
                                     f"{vendored} holds gespann's manifest only: {remedy}")
    assert types.offset("sock_common.skc_dport") > 0  # the manifest's own fields are there
    logged = [r.getMessage() for r in caplog.records]
    assert str(field.value) in logged and str(tracepoint.value) in logged
    assert len(logged) == len(set(logged)) == 5  # each need once: 2 fields, a function, a tracepoint, an enum


def test_a_table_without_a_field_of_the_manifest_is_called_stale_not_undeclared(running_kernel_tables, tmp_path):
    table = table_path(RELEASE, os.uname().machine, running_kernel_tables)
    doc = json.loads(table.read_text())
    del doc["fields"]["tcp_sock.delivered"]
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(doc))
    with pytest.raises(btf.FieldNotFound) as raised:
        btf.kernel_types(stale).field("tcp_sock.delivered")
    assert str(raised.value) == (f"the vendored table for kernel {RELEASE} ({stale}) lacks field tcp_sock.delivered "
                                 "of gespann's manifest: it was made by an older gespann; make it again with "
                                 "tools/vmlinux_tables.py")
