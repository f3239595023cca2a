"""Masking residents' personal data (PIPL): what each role is shown of a name, phone, e-mail."""

from __future__ import annotations

from accounts.pii import contact_view, has_personal_data, mask_email, mask_name, mask_phone
from accounts.roles import (
    AUDITOR,
    COUNTY_SUPERVISOR,
    DEPT_STAFF,
    GRID_WORKER,
    TOWNSHIP_SUPERVISOR,
    CaseFacts,
    Grant,
    Principal,
    sees_unmasked,
)


def test_phone_numbers_keep_the_first_three_and_last_four_digits() -> None:
    assert mask_phone("13812341234") == "138****1234"
    assert mask_phone("+8613812341234") == "+86****1234"
    assert mask_phone("12345") == "*2345" and mask_phone("123") == "***"


def test_names_keep_the_family_name_and_mails_the_first_letter_and_domain() -> None:
    assert mask_name("张三") == "张*" and mask_name("欧阳娜娜") == "欧***" and mask_name("") == ""
    assert mask_email("zhangsan@example.org") == "z***@example.org"


def test_a_contact_is_masked_unless_asked_otherwise_and_empty_fields_are_left_out() -> None:
    contact = {"name": "张三", "phone": "13900001234", "email": ""}
    assert contact_view(contact, False) == {"name": "张*", "phone": "139****1234"}
    assert contact_view(contact, True) == {"name": "张三", "phone": "13900001234"}
    assert has_personal_data([contact, {"email": "a@b.c"}]) == ["name", "phone", "email"]
    assert has_personal_data([{"name": " "}]) == []


def test_only_supervisors_who_call_back_inside_their_scope_see_it_unmasked() -> None:
    case = CaseFacts("AJ1", "421099101201001", "421099101", frozenset({"resident:c1"}),
                     frozenset({"421099101201.cwh"}))

    def who(*grants: Grant) -> Principal:
        return Principal("P1", "某人", grants)

    assert sees_unmasked(who(Grant(TOWNSHIP_SUPERVISOR, "421099101")), case)
    assert sees_unmasked(who(Grant(COUNTY_SUPERVISOR, "421099")), case)
    assert not sees_unmasked(who(Grant(TOWNSHIP_SUPERVISOR, "421099001")), case)
    assert not sees_unmasked(who(Grant(DEPT_STAFF, "421099101201.cwh")), case)
    assert not sees_unmasked(who(Grant(GRID_WORKER, "421099101201001")), case)
    assert not sees_unmasked(who(Grant(AUDITOR)), case)
