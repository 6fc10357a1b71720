"""SSH key text as operators paste it: pinned public host keys and private keys.

Pure parsing, no network: :func:`parse_host_keys` turns the pinned host key line(s)
of a server (as ``ssh-keyscan`` or ``ssh-keygen -y`` print them) into
:class:`PinnedHostKey` objects, and :func:`load_private_key` the text of a private
key into a paramiko key. Both refuse what they cannot use with a message that says
what to paste instead, and never put key material in a message.
"""

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass

import paramiko
from paramiko.ssh_exception import PasswordRequiredException, SSHException

from .exceptions import SshAuthError, SshHostKeyError

__all__ = [
    "HOST_KEY_ALGORITHMS",
    "PinnedHostKey",
    "fingerprint",
    "load_private_key",
    "parse_host_keys",
]

# Host key types the pin may have, and the host key algorithms that prove possession
# of a key of that type. An RSA key signs with rsa-sha2-* on every OpenSSH since 7.2;
# the SHA-1 "ssh-rsa" signature is not offered (paramiko's SSHClient would put it
# first when an RSA key is pinned).
HOST_KEY_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}
_PRIVATE_KEY_CLASSES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


def fingerprint(blob):
    """``SHA256:...`` of a public key blob, as ``ssh-keygen -l`` prints it."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


@dataclass(frozen=True)
class PinnedHostKey:
    """One pinned public host key."""

    key_type: str
    blob: bytes
    comment: str = ""

    @property
    def fingerprint(self):
        """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
        return fingerprint(self.blob)

    def to_pkey(self):
        """The paramiko public key object (for ``SSHClient``'s host keys)."""
        return paramiko.PKey.from_type_string(self.key_type, self.blob)


def parse_host_keys(text, target="the host"):
    """Parse pinned host key line(s) into :class:`PinnedHostKey` objects.

    Raises :class:`SshHostKeyError` when nothing is pinned or a line is not a public
    key of a supported type (ed25519, ECDSA, RSA). ``target`` (``host:port``) only
    names the host in messages.
    """
    keys = []
    for raw_line in (text or "").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        # ssh-keyscan prints "host key-type base64"; ssh-keygen -y "key-type base64 comment"
        if tokens[0] not in HOST_KEY_ALGORITHMS and len(tokens) > 1:
            tokens = tokens[1:]
        key_type = tokens[0]
        if key_type not in HOST_KEY_ALGORITHMS or len(tokens) < 2:
            raise SshHostKeyError(
                f"the pinned host key of {target} is not a supported public key line "
                f"(expected e.g. 'ssh-ed25519 AAAA...'; supported types: "
                f"{', '.join(HOST_KEY_ALGORITHMS)})"
            )
        try:
            blob = base64.b64decode(tokens[1], validate=True)
            inner_type = paramiko.Message(blob).get_text()
        except (binascii.Error, ValueError, UnicodeDecodeError, SSHException) as exc:
            raise SshHostKeyError(
                f"the pinned host key of {target} is not valid base64 key data"
            ) from exc
        if inner_type != key_type:
            raise SshHostKeyError(
                f"the pinned host key of {target} says {key_type!r} but its data is "
                f"a {inner_type!r} key"
            )
        keys.append(PinnedHostKey(key_type, blob, " ".join(tokens[2:])))
    if not keys:
        raise SshHostKeyError(
            f"no host key pinned for {target}; get it with "
            f"ssh-keyscan -p {_port_of(target)} {_host_of(target)} and paste it"
        )
    return keys


def _host_of(target):
    host = target.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


def _port_of(target):
    return target.rsplit(":", 1)[-1]


def load_private_key(text, passphrase=None, who="the host"):
    """The paramiko key of a private key's text, or None when ``text`` is empty.

    ``text`` is an OpenSSH or PEM private key (ed25519, ECDSA or RSA), pasted with
    any line endings; ``passphrase`` only when it is encrypted. ``who``
    (``user@host:port``) names the login in messages. Raises :class:`SshAuthError`
    when the key cannot be read or needs a passphrase that is not given.
    """
    if not text or not text.strip():
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip() + "\n"
    passphrase = passphrase or None
    for key_class in _PRIVATE_KEY_CLASSES:
        try:
            return key_class.from_private_key(io.StringIO(text), password=passphrase)
        except PasswordRequiredException as exc:
            raise SshAuthError(
                f"the private key for {who} is encrypted and no passphrase is set"
            ) from exc
        except (SSHException, ValueError, TypeError, IndexError):
            # Each key class refuses the others' formats; try the next one.
            continue
    raise SshAuthError(
        f"the private key for {who} cannot be read: expected an ed25519, ECDSA or RSA "
        "private key in OpenSSH or PEM form (or the passphrase is wrong)"
    )
