"""Residents' personal data (个人信息保护法, PIPL): names, phone numbers and e-mail addresses are
shown masked (138****1234, 张*, z***@example.org) except to the roles that call residents back
(回访). Pure: which contact fields a case holds, and how each is masked.
"""

from __future__ import annotations

from typing import Any

CONTACT_FIELDS = ("name", "phone", "email")


def mask_phone(phone: str) -> str:
    """138****1234: the first three and the last four digits of a mobile number stay."""
    digits = phone.strip()
    if len(digits) >= 11:
        return f"{digits[:3]}****{digits[-4:]}"
    if len(digits) > 4:
        return f"{'*' * (len(digits) - 4)}{digits[-4:]}"
    return "*" * len(digits)


def mask_name(name: str) -> str:
    """张* / 欧** : the first character stays (the family name, as people are addressed)."""
    name = name.strip()
    return f"{name[0]}{'*' * (len(name) - 1)}" if name else ""


def mask_email(email: str) -> str:
    local, at, domain = email.strip().partition("@")
    if not at:
        return mask_name(email)
    return f"{local[:1]}***@{domain}"


MASKS = {"name": mask_name, "phone": mask_phone, "email": mask_email}


def contact_view(contact: dict[str, Any], unmasked: bool) -> dict[str, str]:
    """The fields a resident gave, masked unless `unmasked`; empty fields left out."""
    out: dict[str, str] = {}
    for field in CONTACT_FIELDS:
        value = str(contact.get(field) or "").strip()
        if value:
            out[field] = value if unmasked else MASKS[field](value)
    return out


def has_personal_data(contacts: list[dict[str, Any]]) -> list[str]:
    """Which contact fields any of the contacts holds (what a full view would reveal)."""
    return [f for f in CONTACT_FIELDS if any(str(c.get(f) or "").strip() for c in contacts)]
