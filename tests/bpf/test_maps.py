"""Maps on the real kernel: CRUD, iteration, batches, per-CPU values, codecs."""
import construct
import pytest

from gespann.bpf import maps
from gespann.bpf.cpus import possible_cpus
from gespann.bpf.errors import BPFError, KeyNotFoundError
from gespann.bpf.syscall import MapType, UpdateFlags

pytestmark = pytest.mark.root

Key = construct.Struct("port" / construct.Int16un, "proto" / construct.Int16un)


def test_hash_crud_and_flags():
    with maps.HashMap(maps.U32, maps.U64, 8, name="gt_hash") as m:
        m[1] = 10
        m.update(2, 20, UpdateFlags.NOEXIST)
        assert m[1] == 10 and m.lookup(2) == 20 and m.lookup(3) is None and 3 not in m
        with pytest.raises(BPFError) as exists:
            m.update(1, 11, UpdateFlags.NOEXIST)
        assert exists.value.errno == 17  # EEXIST
        with pytest.raises(BPFError):
            m.update(3, 30, UpdateFlags.EXIST)
        m.update(1, 11, UpdateFlags.EXIST)
        assert dict(m.items()) == {1: 11, 2: 20}
        del m[1]
        with pytest.raises(KeyNotFoundError):
            m[1]
        with pytest.raises(KeyError):
            del m[1]
        assert m.pop(2) == 20 and list(m) == []


def test_bytes_keys_and_construct_codec():
    with maps.HashMap(4, 8, 4, name="gt_bytes") as raw, maps.HashMap(Key, maps.U64, 4, name="t_codec") as typed:
        raw[b"abcd"] = bytes(range(8))
        assert raw[b"abcd"] == bytes(range(8))
        with pytest.raises(ValueError):
            raw[b"abc"] = bytes(8)
        typed[dict(port=443, proto=6)] = 7
        ((key, value),) = typed.items()
        assert (key.port, key.proto, value) == (443, 6, 7)


def test_info_names_the_map():
    with maps.LruHashMap(maps.U32, maps.U32, 16, name="gt_lru") as m:
        info = m.info()
        assert (info.name, info.type, info.key_size, info.value_size, info.max_entries) == \
            ("gt_lru", MapType.LRU_HASH, 4, 4, 16)
        assert info.id > 0


def test_iterate_while_deleting_terminates():
    with maps.HashMap(maps.U32, maps.U32, 64, name="gt_iter") as m:
        m.update_batch((i, i * i) for i in range(50))
        for key in m.keys():
            del m[key]
        assert list(m.keys()) == []


def test_array_has_every_index_and_refuses_delete():
    with maps.ArrayMap(maps.U64, 4, name="gt_array") as m:
        m[2] = 5
        assert list(m.items()) == [(0, 0), (1, 0), (2, 5), (3, 0)]
        with pytest.raises(BPFError) as refused:
            del m[2]
        assert refused.value.errno == 22  # EINVAL
        with pytest.raises(BPFError):
            m[4] = 1


@pytest.mark.parametrize("kind", [maps.HashMap, maps.LruHashMap])
def test_batches(kind):
    with kind(maps.U32, maps.U64, 600, name="gt_batch") as m:
        m.update_batch((i, i + 1000) for i in range(500))
        assert sorted(m.lookup_batch()) == [(i, i + 1000) for i in range(500)]
        m.delete_batch(range(0, 500, 2))
        assert sorted(m.keys()) == list(range(1, 500, 2))
        assert sorted(m.lookup_and_delete_batch()) == [(i, i + 1000) for i in range(1, 500, 2)]
        assert list(m.keys()) == []
        with pytest.raises(KeyNotFoundError):
            m.delete_batch([1])


def test_array_batch_lookup():
    with maps.ArrayMap(maps.U32, 300, name="gt_abatch") as m:
        m.update_batch((i, 3 * i) for i in range(300))
        assert m.lookup_batch() == [(i, 3 * i) for i in range(300)]


def test_per_cpu_values_are_a_list_per_possible_cpu():
    n = possible_cpus()
    with maps.PerCpuHashMap(maps.U32, maps.U32, 4, name="gt_pcpu_hash") as h, \
            maps.PerCpuArrayMap(2, 2, name="gt_pcpu_array") as a:
        h[7] = list(range(100, 100 + n))          # 4-byte values, padded to 8 per CPU in the kernel
        assert h[7] == list(range(100, 100 + n))
        h[8] = 1                                  # one value: every CPU gets it
        assert h[8] == [1] * n
        assert sorted(h.lookup_batch()) == [(7, list(range(100, 100 + n))), (8, [1] * n)]
        a[1] = [bytes([cpu, 0xFF]) for cpu in range(n)]
        assert a[1] == [bytes([cpu, 0xFF]) for cpu in range(n)] and a[0] == [bytes(2)] * n
        with pytest.raises(ValueError):
            h[9] = [1] * (n + 1)


def test_fallback_when_the_kernel_lacks_batches(monkeypatch):
    """Kernels before 5.6 (batches) and 5.14 (lookup-and-delete of a hash element) say EINVAL."""
    def unsupported(*args, **kwargs):
        raise BPFError("unsupported", 22)

    monkeypatch.setattr(maps.syscall, "bpf_map_batch", unsupported)
    monkeypatch.setattr(maps.syscall, "bpf_map_lookup_and_delete_elem", unsupported)
    with maps.HashMap(maps.U32, maps.U32, 16, name="gt_fallback") as m:
        m.update_batch((i, i) for i in range(10))
        assert sorted(m.lookup_batch()) == [(i, i) for i in range(10)]
        m.delete_batch(range(5))
        assert sorted(m.lookup_and_delete_batch()) == [(i, i) for i in range(5, 10)]
        assert list(m) == []


def test_ring_buffer_size_must_be_a_power_of_two_pages():
    with pytest.raises(ValueError):
        maps.RingBufMap(12345)
    with maps.RingBufMap(8192, name="gt_ring") as ring:
        assert ring.info().max_entries == 8192


def test_closed_map_is_gone():
    m = maps.HashMap(maps.U32, maps.U32, 1, name="gt_closed")
    map_id = m.info().id
    m.close()
    m.close()  # idempotent
    with pytest.raises(BPFError):
        m[1] = 1
    assert map_id > 0
