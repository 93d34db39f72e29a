"""The record and key format: round trips, byte order, pinned bytes, version refusal."""

import zlib

import numpy as np
import pytest
from hypothesis import given, strategies as st

from lmdbshard.errors import FormatError, FormatVersionError
from lmdbshard.format.record import (
    DTYPES, ENCODINGS, FIELD_HEADER, FORMAT_VERSION, KEY_WIDTH, MAX_KEY, RECORD_HEADER, Field, decode_key,
    encode_key, pack_record, raw_array, record_crc, unpack_record,
)

positions = st.integers(min_value=0, max_value=MAX_KEY)


@given(positions)
def test_key_round_trip_and_width(p):
    key = encode_key(p)
    assert len(key) == KEY_WIDTH and decode_key(key) == p


@given(positions, positions)
def test_key_byte_order_is_numeric_order(a, b):
    assert (encode_key(a) < encode_key(b)) == (a < b)


@pytest.mark.parametrize("bad", [-1, MAX_KEY + 1])
def test_key_out_of_range_is_refused(bad):
    with pytest.raises(FormatError, match="key position"):
        encode_key(bad)


def test_header_sizes_are_the_spec():
    assert RECORD_HEADER.size == 32 and FIELD_HEADER.size == 48


def test_pinned_record_bytes():
    """The exact bytes of a small record, as documented in docs/FORMAT.md: changing them breaks readers."""
    value = pack_record([Field("image", "raw", bytes(range(6)), (1, 2, 3), "uint8", "HWC")],
                        label=7, source_index=42, round=0)
    assert value.hex() == (
        "4c53523101000100" "0700000000000000" "2a00000000000000" "00000000cd81abb7"
        "696d616765000000" "0000000000000000" "0000030101000000" "0200000003000000"
        "0000000050000000" "0600000000000000"
        "0001020304050000"
    )
    assert int.from_bytes(value[28:32], "little") == zlib.crc32(value[:28] + value[32:])
    rec = unpack_record(value)
    assert (rec.label, rec.source_index, rec.round) == (7, 42, 0)
    np.testing.assert_array_equal(raw_array(rec.fields["image"]), np.arange(6, dtype=np.uint8).reshape(1, 2, 3))


field_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=16)


@given(st.lists(st.tuples(field_names, st.binary(max_size=64)), min_size=1, max_size=5, unique_by=lambda t: t[0]),
       st.integers(-1, 2**40), st.integers(0, 2**40), st.integers(0, 1000))
def test_record_round_trip(fields, label, source_index, rnd):
    packed = pack_record([Field(n, "raw", p, (len(p),), "uint8") for n, p in fields], label, source_index, rnd)
    assert len(packed) % 8 == 0
    rec = unpack_record(packed)
    assert (rec.label, rec.source_index, rec.round) == (label, source_index, rnd)
    assert list(rec.fields) == [n for n, _ in fields]
    for name, payload in fields:
        f = rec.fields[name]
        assert bytes(f.payload) == payload and f.shape == (len(payload),)
        assert f.payload.obj is not None  # a view into the value, not a copy


@given(st.binary(min_size=1, max_size=200), st.integers(0, 10**6), st.integers(1, 255))
def test_record_crc_catches_any_changed_byte(payload, where, xor):
    value = pack_record([Field("image", "raw", payload, (len(payload),))], label=3)
    stored, computed = record_crc(value)
    assert stored == computed
    broken = bytearray(value)
    broken[where % len(value)] ^= xor
    stored, computed = record_crc(bytes(broken))
    assert stored != computed


def test_every_dtype_round_trips():
    for name in DTYPES:
        arr = np.arange(12).astype(name).reshape(3, 4)
        rec = unpack_record(pack_record([Field("x", "raw", arr.tobytes(), arr.shape, name)]))
        np.testing.assert_array_equal(raw_array(rec.fields["x"]), arr)
    assert set(ENCODINGS) == {"raw", "jpeg", "png", "passthrough"}


def test_newer_version_is_refused_with_both_versions():
    value = bytearray(pack_record([Field("image", "raw", b"\x01")]))
    value[4:6] = (FORMAT_VERSION + 1).to_bytes(2, "little")
    with pytest.raises(FormatVersionError, match=f"version {FORMAT_VERSION + 1}.*up to {FORMAT_VERSION}"):
        unpack_record(bytes(value))


@pytest.mark.parametrize("value, match", [
    (b"", "shorter than"),
    (b"PKL1" + bytes(28), "not an lmdbshard record"),
])
def test_garbage_is_refused(value, match):
    with pytest.raises(FormatError, match=match):
        unpack_record(value)


def test_truncated_record_is_refused():
    value = pack_record([Field("image", "raw", bytes(100), (100,))])
    with pytest.raises(FormatError, match="outside the record|truncated"):
        unpack_record(value[:90])


def test_bad_field_names_are_refused():
    with pytest.raises(FormatError, match="field name"):
        pack_record([Field("a" * 17, "raw", b"")])
