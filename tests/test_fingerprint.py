import hashlib

from negopt.core.fingerprint import file_chunks, fingerprint


def test_fingerprint_by_hand_and_what_changes_it(tmp_path):
    expected = hashlib.sha256(b'{"a": 1, "b": [2, 3]}' + b"data").hexdigest()[:16]
    assert fingerprint({"b": [2, 3], "a": 1}, [b"data"]) == expected  # key order does not matter
    assert fingerprint({"a": 1, "b": [2, 3]}, [b"datb"]) != expected  # the inputs' bytes do
    assert fingerprint({"a": 2, "b": [2, 3]}, [b"data"]) != expected  # and every setting
    (tmp_path / "w1").write_bytes(b"da")
    (tmp_path / "w2").write_bytes(b"ta")
    assert fingerprint({"a": 1, "b": [2, 3]}, file_chunks([tmp_path / "w1", tmp_path / "w2"])) == expected
