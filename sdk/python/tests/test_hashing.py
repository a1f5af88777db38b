"""The shared user-hash vectors: Python hashes exactly like the Rust SDK and the collector."""

import json
import pathlib
import unittest

from growth_sdk import UserHasher, hash_user

VECTORS = pathlib.Path(__file__).resolve().parents[3] / "schema" / "testdata" / "user_hash_vectors.json"


class HashingTest(unittest.TestCase):
    def test_shared_vectors(self):
        vectors = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]
        self.assertGreater(len(vectors), 10)
        for vector in vectors:
            self.assertEqual(hash_user(vector["user_id"], vector["key"]), vector["hash"], vector)

    def test_key_absorbed_once_and_hidden(self):
        hasher = UserHasher("topsecret")
        self.assertTrue(hasher.is_keyed)
        self.assertEqual(hasher.hash("u1"), hasher.hash("u1"))
        self.assertNotIn("topsecret", repr(hasher))
        self.assertFalse(UserHasher("").is_keyed)


if __name__ == "__main__":
    unittest.main()
