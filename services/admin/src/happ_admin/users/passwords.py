"""Operators' passwords, hashed with scrypt from the standard library.

scrypt is memory-hard (16 MiB per hash at these parameters), so a stolen users
collection is expensive to guess through; no dependency is needed for it. The
stored string names its parameters, so they can be raised later and old hashes
still verify. Hashing takes tens of milliseconds of CPU: it runs in a thread so
the event loop keeps serving while someone signs in.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1
_KEY_BYTES = 32
_MAX_MEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=_KEY_BYTES, maxmem=_MAX_MEM
    )


def _hash_now(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = _derive(password, salt, _N, _R, _P)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(key)}"


def _verify_now(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        got = _derive(password, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


# Verified against when the username does not exist, so that answer takes as
# long as a wrong password does and does not tell which usernames exist.
_DUMMY = _hash_now(secrets.token_urlsafe(16))


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hash_now, password)


async def verify_password(password: str, stored: str | None) -> bool:
    if stored is None:
        await asyncio.to_thread(_verify_now, password, _DUMMY)
        return False
    return await asyncio.to_thread(_verify_now, password, stored)
