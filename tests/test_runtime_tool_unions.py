"""A tool whose result is a union (`-> Found | NotFound`): which member a result is.

The reducer routes a tool's result by its type, so the runtime must settle the type
without guessing: an instance of a member is that member, a model with a member's
declared name is that member, and a dict is the one member it is valid for. A dict valid
for none or for several is a failed step, never a result routed by a guess.
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from twelvefold.runtime.tools import coerce


class Found(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    tier: str


class NotFound(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlsoEmpty(BaseModel):
    model_config = ConfigDict(extra="forbid")


MEMBERS = (Found, NotFound)


def test_an_instance_of_a_member_is_that_member() -> None:
    found = Found(name="Acme", tier="enterprise")
    assert coerce(found, Found, MEMBERS) is found
    assert type(coerce(NotFound(id="x"), Found, MEMBERS)) is NotFound


def test_a_dict_is_the_one_member_it_is_valid_for() -> None:
    assert coerce({"id": "x"}, Found, MEMBERS) == NotFound(id="x")
    assert coerce({"name": "Acme", "tier": "free"}, Found, MEMBERS) == Found(
        name="Acme", tier="free"
    )


def test_a_model_with_a_members_name_is_that_member() -> None:
    class NotFoundElsewhere(BaseModel):
        id: str

    other = type("NotFound", (BaseModel,), {"__annotations__": {"id": str}})
    assert coerce(other(id="y"), Found, MEMBERS) == NotFound(id="y")
    # A model with another name is judged by its fields, like a dict.
    assert coerce(NotFoundElsewhere(id="z"), Found, MEMBERS) == NotFound(id="z")


def test_a_dict_that_fits_no_member_fails_naming_the_members() -> None:
    with pytest.raises(ValueError, match=r"none of Found \| NotFound"):
        coerce({"tier": "enterprise"}, Found, MEMBERS)
    with pytest.raises(TypeError, match=r"one of Found \| NotFound"):
        coerce(["not", "a", "record"], Found, MEMBERS)


def test_a_dict_that_fits_two_members_is_not_guessed() -> None:
    with pytest.raises(ValueError, match="could be Empty and AlsoEmpty"):
        coerce({}, Empty, (Empty, AlsoEmpty))
    assert type(coerce(AlsoEmpty(), Empty, (Empty, AlsoEmpty))) is AlsoEmpty


def test_a_hostile_key_is_shown_shortened() -> None:
    with pytest.raises(ValueError) as caught:
        coerce({"x" * 10_000: 1}, Found, MEMBERS)
    assert len(str(caught.value)) < 200
