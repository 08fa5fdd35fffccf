"""keyed.py: pure, table-driven (mutation-tested)."""

import hashlib
import hmac

import pytest

from backupkit.keyed import KEY_STREAM, SCHEME, decode_key, encode_key, keyed, mac, manifest_note

K = bytes(range(32))


def test_mac_is_hmac_sha256_truncated_to_128_bits_over_nul_joined_parts():
    want = hmac.new(K, b"t\0hash\0abc", hashlib.sha256).hexdigest()[:32]
    assert mac(K, "t", "hash", "abc") == want and len(want) == 32


def test_keyed_replaces_hashes_and_schema_items_only():
    fps = {"t": {"rows": 3, "hash": "aa", "method": "columns", "binary": ["x"], "text": ["y"]},
           "u": {"rows": 0, "hash": None},
           "schema": {"kind": "schema", "objects": 1, "hash": "bb", "items": {"table t": "cc", "n": 5}},
           "seq": {"kind": "sequence", "last_value": 9, "is_called": True},
           "odd": "not a dict"}
    out = keyed(fps, K)
    assert out["t"] == {"rows": 3, "hash": mac(K, "t", "hash", "aa"), "method": "columns", "binary": ["x"], "text": ["y"]}
    assert out["u"] == {"rows": 0, "hash": None}
    assert out["schema"]["hash"] == mac(K, "schema", "hash", "bb")
    assert out["schema"]["items"] == {"table t": mac(K, "schema", "items", "table t", "cc"), "n": 5}
    assert out["seq"] == fps["seq"] and out["odd"] == "not a dict"
    assert fps["t"]["hash"] == "aa"  # the input is not modified


def test_keyed_depends_on_key_and_on_where_the_digest_is():
    a = keyed({"t1": {"hash": "aa"}, "t2": {"hash": "aa"}}, K)
    assert a["t1"]["hash"] != a["t2"]["hash"]  # equal contents do not show as equal
    assert keyed({"t1": {"hash": "aa"}}, bytes(32))["t1"]["hash"] != a["t1"]["hash"]


def test_key_encoding_round_trip_and_refusals():
    assert decode_key(encode_key(K)) == K
    assert decode_key(encode_key(K) + b"\n") == K
    for bad in (b"", b"00" * 31, b"00" * 33, b"zz" * 32, b"AA" * 32):
        with pytest.raises(ValueError):
            decode_key(bad)


def test_manifest_note():
    assert manifest_note() == {"stream": KEY_STREAM, "scheme": SCHEME} and KEY_STREAM == "fpkey"


def test_new_key_is_32_random_bytes():
    from backupkit.keyed import new_key

    a, b = new_key(), new_key()
    assert len(a) == 32 and a != b and decode_key(encode_key(a)) == a
