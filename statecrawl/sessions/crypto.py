"""Session secrets encrypted at rest: cookie jars, storage states, spider state.

A crawl's sessions live in Redis so that any worker can continue them, which
also means anyone who can read that Redis (a backup, a replica, ``MONITOR``)
can take the logged-in session over. With ``STATECRAWL_SECRET_KEY`` set, every
value that carries a secret is a Fernet token (AES-128-CBC + HMAC-SHA256,
from ``cryptography``): unreadable without the key, and tamper-evident, so a
value written by someone without the key is refused rather than mounted.

The setting holds one key, or several separated by commas: the first one
encrypts, all of them decrypt, so keys can be rotated without losing the
crawl's sessions. Generate one with::

    python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"

Without a key nothing is encrypted (see the README for what that stores).
Keys, field names and counters stay readable either way: a jar's field names
are ``(domain, path, name)`` of its cookies, never their values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from statecrawl.exceptions import ConfigError, SecretKeyError

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = ["SECRET_KEY_SETTING", "Sealer"]

SECRET_KEY_SETTING = "STATECRAWL_SECRET_KEY"

#: Every Fernet token starts with its version byte 0x80, base64-encoded.
_TOKEN_PREFIX = b"gAAAAA"


class Sealer:
    """Encrypts (``seal``) and decrypts (``open``) stored secrets; a no-op without keys."""

    def __init__(self, keys: Sequence[str] = ()) -> None:
        fernets = []
        for key in keys:
            try:
                fernets.append(Fernet(key.strip().encode()))
            except (ValueError, TypeError):
                raise ConfigError(
                    f"{SECRET_KEY_SETTING} must be Fernet keys (32 url-safe base64-encoded bytes, "
                    "comma-separated); generate one with: python -c \"from cryptography.fernet "
                    "import Fernet; print(Fernet.generate_key().decode())\""
                ) from None
        self._fernet = MultiFernet(fernets) if fernets else None

    @classmethod
    def from_settings(cls, settings: BaseSettings | Mapping[str, Any]) -> Sealer:
        """The key from the setting, else the environment (secrets stay out of files)."""
        raw = settings.get(SECRET_KEY_SETTING) or os.environ.get(SECRET_KEY_SETTING) or ""
        return cls([k for k in str(raw).split(",") if k.strip()])

    @property
    def encrypts(self) -> bool:
        return self._fernet is not None

    def seal(self, data: bytes) -> bytes:
        return data if self._fernet is None else self._fernet.encrypt(data)

    def open(self, data: bytes, what: str = "value") -> bytes:
        """Decrypt *data*; raise SecretKeyError if it was sealed otherwise (or not at all)."""
        sealed = data.startswith(_TOKEN_PREFIX)
        if self._fernet is None:
            if sealed:
                raise SecretKeyError(
                    f"{what} is encrypted in Redis: set {SECRET_KEY_SETTING} to the crawl's key")
            return data
        if not sealed:
            raise SecretKeyError(
                f"{what} is stored unencrypted but {SECRET_KEY_SETTING} is set: refusing it "
                "(it may have been written by someone without the key)")
        try:
            return self._fernet.decrypt(data)
        except InvalidToken:
            raise SecretKeyError(
                f"{what} was encrypted with another key (or altered): check {SECRET_KEY_SETTING}"
            ) from None
