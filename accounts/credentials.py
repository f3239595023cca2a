"""Secrets and what people type: Argon2id for passwords and one-time codes, SHA-256 for random
tokens, and the checks every account name, phone number, display name and password passes.

Guarantee: nothing here returns or stores a secret in plain text except to the one caller that
made it; every refusal is an `InputRefused` naming the field, in Chinese and English.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

LOGIN_RE = re.compile(r"[a-z][a-z0-9._-]{2,31}")
PHONE_RE = re.compile(r"1[3-9][0-9]{9}")
PASSWORD_MIN, PASSWORD_MAX = 10, 128
NAME_MAX = 32
KEY_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{2,63}")
SESSION_PREFIX = "gfs_"
KEY_PREFIX = "gfk_"
# A one-time code: 12 characters people can read aloud and type (no 0/O, 1/I/L).
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LEN = 12


class InputRefused(ValueError):
    """What a person typed cannot be used: 422 naming the field."""

    def __init__(self, field: str, zh: str, en: str) -> None:
        super().__init__(f"{field}: {en}")
        self.field, self.zh, self.en = field, zh, en


def default_hasher() -> PasswordHasher:
    """Argon2id with RFC 9106's low-memory parameters (t=3, 64 MiB, p=4)."""
    return PasswordHasher()


# --- random tokens: sessions and API keys (256 bits, so SHA-256 is enough to store them) -------

def new_session_token() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return secrets.token_hex(6)


def new_api_key(key_id: str) -> str:
    return f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def csrf_token(session_token: str) -> str:
    """The CSRF token of a browser session: bound to it, useless without it."""
    return hashlib.sha256(b"csrf\0" + session_token.encode("utf-8")).hexdigest()[:40]


def new_setup_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LEN))


def normalize_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch not in " -")


# --- what people type -----------------------------------------------------------------------

def _no_controls(field: str, value: str) -> None:
    # Cc: control characters; Cf: format characters (bidi overrides, zero-width joiners, ...)
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs") for ch in value):
        raise InputRefused(field, "含有不可见或控制字符", "contains invisible or control characters")


def check_login(value: str, field: str = "login") -> str:
    """An account name: ASCII lower-case letters, digits and . _ -, from a letter, 3–32 long.
    Anything else (look-alike letters from other scripts included) is refused, not folded."""
    if not isinstance(value, str) or not value.strip():
        raise InputRefused(field, "账号名不能为空", "account name is required")
    login = value.strip()
    if len(login) > NAME_MAX or not LOGIN_RE.fullmatch(login.lower()) or not login.isascii():
        raise InputRefused(
            field,
            "账号名须为 3 至 32 位小写英文字母、数字或 . _ -, 以字母开头",
            "account name: 3-32 ASCII lower-case letters, digits or . _ -, starting with a letter",
        )
    return login.lower()


def check_phone(value: str, field: str = "phone") -> str:
    """A mainland mobile number, 11 ASCII digits (spaces, dashes and +86 allowed around)."""
    raw = (value or "").strip().replace(" ", "").replace("-", "")
    if raw.startswith("+86"):
        raw = raw[3:]
    if not raw.isascii() or not PHONE_RE.fullmatch(raw):
        raise InputRefused(field, "手机号须为 11 位数字, 以 1 开头",
                           "phone: 11 ASCII digits of a mainland mobile number")
    return raw


def looks_like_phone(value: str) -> bool:
    try:
        check_phone(value)
    except InputRefused:
        return False
    return True


_NAME_PUNCT = set(" ·・.-_()（）")


def check_display_name(value: str, field: str = "name") -> str:
    """A person's or office's name as shown: letters (any script), digits and · . - _ ( ),
    at most 32 characters. Markup and SQL punctuation are refused."""
    name = unicodedata.normalize("NFC", (value or "").strip())
    if not name:
        raise InputRefused(field, "姓名不能为空", "name is required")
    if len(name) > NAME_MAX:
        raise InputRefused(field, f"姓名最多 {NAME_MAX} 个字", f"name: at most {NAME_MAX} characters")
    _no_controls(field, name)
    for ch in name:
        if ch in _NAME_PUNCT:
            continue
        if unicodedata.category(ch)[0] not in ("L", "M", "N"):
            raise InputRefused(field, f"姓名中不能含有字符「{ch}」",
                               f"name: character {ch!r} is not allowed")
    return name


def normalize_password(value: str) -> str:
    """Passwords are compared after NFKC (a full-width and a plain digit are the same key)."""
    return unicodedata.normalize("NFKC", value)


def check_password(value: str, login: str = "", field: str = "password") -> str:
    """A new password: 10–128 characters after NFKC, no control characters, not the login."""
    if not isinstance(value, str):
        raise InputRefused(field, "密码不能为空", "password is required")
    password = normalize_password(value)
    if len(password) < PASSWORD_MIN:
        raise InputRefused(field, f"密码至少 {PASSWORD_MIN} 位", f"password: at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise InputRefused(field, f"密码最多 {PASSWORD_MAX} 位", f"password: at most {PASSWORD_MAX} characters")
    _no_controls(field, password)
    if login and login.lower() in password.lower():
        raise InputRefused(field, "密码不能包含账号名", "password must not contain the account name")
    if len(set(password)) < 4:
        raise InputRefused(field, "密码过于简单", "password is too simple")
    return password


def check_key_name(value: str, field: str = "name") -> str:
    name = (value or "").strip()
    if not KEY_NAME_RE.fullmatch(name):
        raise InputRefused(field, "密钥名称须为 3 至 64 位小写英文字母、数字或 . _ -",
                           "key name: 3-64 ASCII lower-case letters, digits or . _ -")
    return name


def hash_secret(hasher: PasswordHasher, secret: str) -> str:
    return hasher.hash(secret)


def verify_secret(hasher: PasswordHasher, stored: str | None, secret: str) -> bool:
    """Whether `secret` matches the stored Argon2 hash (False for none or a damaged hash)."""
    if not stored:
        return False
    try:
        return hasher.verify(stored, secret)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY: dict[int, str] = {}


def burn_time(hasher: PasswordHasher, secret: str) -> None:
    """Spend what a verification costs (unknown account): timing does not tell who exists."""
    key = id(hasher)
    if key not in _DUMMY:
        _DUMMY[key] = hasher.hash("not-a-password-of-anyone")
    verify_secret(hasher, _DUMMY[key], secret)
