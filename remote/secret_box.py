"""Authenticated encryption of the secrets the manager keeps (SPEC §12).

The key is never in the database: the Odoo layer reads it from the config
option ``saas_manager_secret_key`` or the environment variable
``SAAS_MANAGER_SECRET_KEY`` and hands it here. It is a comma-separated list of
Fernet keys (``generate_key()`` makes one): the first encrypts, all of them
decrypt, so that a key can be rotated without a moment where a secret cannot be
read (put the new key first, re-encrypt everything, then drop the old one).

Ciphertexts carry a prefix, so that a value written in clear before encryption
existed is recognised (and refused here, encrypted by the migration).
"""

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .exceptions import SecretKeyError

PREFIX = "saas-fernet:"


def generate_key():
    """A new random key, as text to put in the configuration."""
    return Fernet.generate_key().decode("ascii")


def is_encrypted(value):
    """True when ``value`` is a ciphertext made by :class:`SecretBox`."""
    return isinstance(value, str) and value.startswith(PREFIX)


class SecretBox:
    """Encrypts and decrypts text with the configured key list.

    :param key_setting: the configured value: one key, or several separated by
        commas (first one current).
    :raises SecretKeyError: no key, or a key that is not a Fernet key. The
        message names the setting, never the value.
    """

    def __init__(self, key_setting):
        keys = [key.strip() for key in (key_setting or "").split(",") if key.strip()]
        if not keys:
            raise SecretKeyError(
                "No secret key is configured: set saas_manager_secret_key in the Odoo "
                "configuration file or the SAAS_MANAGER_SECRET_KEY environment variable "
                "(generate one with: odoo-bin --addons-path=... saas-secret-key generate)."
            )
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise SecretKeyError(
                    f"Key number {position} of saas_manager_secret_key is not a valid key "
                    "(32 bytes in URL-safe base64, as 'saas-secret-key generate' prints)."
                ) from None
        self._current = fernets[0]
        self._all = MultiFernet(fernets)
        self.key_count = len(fernets)

    def encrypt(self, plaintext):
        """Ciphertext of ``plaintext`` (text) with the current key."""
        if not isinstance(plaintext, str):
            raise TypeError(f"a secret is text, not {type(plaintext).__name__}")
        token = self._current.encrypt(plaintext.encode("utf-8"))
        return PREFIX + token.decode("ascii")

    def decrypt(self, ciphertext):
        """The text encrypted in ``ciphertext`` by any of the configured keys.

        :raises SecretKeyError: not a ciphertext of ours, altered, or made with a key
            that is not configured.
        """
        if not is_encrypted(ciphertext):
            raise SecretKeyError("A stored secret is not encrypted: run the module upgrade.")
        token = ciphertext[len(PREFIX) :].encode("ascii")
        try:
            return self._all.decrypt(token).decode("utf-8")
        except InvalidToken:
            raise SecretKeyError(
                "A stored secret cannot be decrypted with the configured keys: it was "
                "encrypted with another key, or altered."
            ) from None

    def rotate(self, ciphertext):
        """``ciphertext`` encrypted again with the current key (same plaintext)."""
        return self.encrypt(self.decrypt(ciphertext))
