"""User hashing, identical to the Rust SDK and the collector (growth-schema).

HMAC-SHA256 with the key (GROWTH_USER_HASH_KEY), lowercase hex; with no key or
an empty one, plain SHA-256 of the id. The shared vectors in
schema/testdata/user_hash_vectors.json prove both languages agree.
"""

import hashlib
import hmac
from typing import Optional, Union


class UserHasher:
    """Hashes raw user ids; the key is absorbed once, never shown in repr."""

    __slots__ = ("_keyed",)

    def __init__(self, key: Optional[Union[str, bytes]] = None):
        if isinstance(key, str):
            key = key.encode("utf-8")
        self._keyed = hmac.new(key, digestmod=hashlib.sha256) if key else None

    @property
    def is_keyed(self) -> bool:
        return self._keyed is not None

    def hash(self, user_id: str) -> str:
        data = user_id.encode("utf-8")
        if self._keyed is None:
            return hashlib.sha256(data).hexdigest()
        mac = self._keyed.copy()
        mac.update(data)
        return mac.hexdigest()

    def __repr__(self) -> str:
        return f"UserHasher(keyed={self.is_keyed})"


def hash_user(user_id: str, key: Optional[Union[str, bytes]] = None) -> str:
    """The user hash of `user_id` with `key` (None: plain SHA-256)."""
    return UserHasher(key).hash(user_id)
