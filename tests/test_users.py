"""Users, roles and PINs."""

import pytest
import sqlalchemy as sa

from biobank.db import uow
from biobank.domain.vocabulary import Role
from biobank.errors import (
    AlreadyExists,
    AuthenticationFailed,
    PermissionDenied,
    ValidationError,
)
from biobank.services import identity, users


def test_new_database_starts_with_one_admin_without_pin(engine, admin):
    with uow(engine) as session:
        rows = users.list_users(session, actor=admin)
    assert [(u.username, u.role, u.has_pin) for u in rows] == [("admin", Role.admin, False)]


def test_pin_is_stored_as_an_argon2id_hash(engine, admin):
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="tina", role="technician", pin="482913")
    with engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT pin_hash FROM app_user WHERE username = 'tina'")
        ).scalar_one()
    assert stored.startswith("$argon2id$") and "482913" not in stored


def test_sign_in_with_pin(engine, admin):
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="tina", role="technician", pin="482913")
    with uow(engine) as session:
        actor = identity.sign_in(
            session, username="Tina ", pin="482913", workstation="ws1"
        ).accepted()
    assert (actor.username, actor.role, actor.workstation) == ("tina", Role.technician, "ws1")
    for username, pin in [("tina", "000000"), ("nobody", "482913"), ("admin", "1234")]:
        with pytest.raises(AuthenticationFailed, match="unknown user, inactive user, or wrong"):
            with uow(engine) as session:
                identity.sign_in(session, username=username, pin=pin, workstation="ws1").accepted()


def test_deactivated_user_cannot_sign_in(engine, admin):
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="tina", role="technician", pin="4821")
        users.deactivate_user(session, actor=admin, username="tina", reason="left the lab")
    with pytest.raises(AuthenticationFailed), uow(engine) as session:
        identity.sign_in(session, username="tina", pin="4821", workstation="ws1").accepted()
    with pytest.raises(AuthenticationFailed, match="deactivated"), uow(engine) as session:
        identity.actor_for(session, username="tina", workstation="ws1")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"username": "Tina", "role": "technician"}, "username"),
        ({"username": "t", "role": "technician"}, "username"),
        ({"username": "tina; drop table", "role": "technician"}, "username"),
        ({"username": "tina", "role": "janitor"}, "role"),
        ({"username": "tina", "role": "pi", "pin": "12"}, "pin"),
        ({"username": "tina", "role": "pi", "pin": "12ab"}, "pin"),
    ],
)
def test_bad_values_name_the_field_and_change_nothing(engine, admin, kwargs, field):
    with pytest.raises(ValidationError) as caught, uow(engine) as session:
        users.add_user(session, actor=admin, **kwargs)
    assert caught.value.field == field
    with uow(engine) as session:
        assert len(users.list_users(session, actor=admin)) == 1


def test_duplicate_username(engine, admin):
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="tina", role="pi")
    with pytest.raises(AlreadyExists, match="'tina' already exists"), uow(engine) as session:
        users.add_user(session, actor=admin, username="tina", role="pi")


def test_last_admin_and_self_cannot_be_deactivated(engine, admin):
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="boss", role="admin")
    with uow(engine) as session:
        boss = identity.actor_for(session, username="boss", workstation="ws")
    with pytest.raises(ValidationError, match="yourself"), uow(engine) as session:
        users.deactivate_user(session, actor=admin, username="admin")
    with uow(engine) as session:
        users.deactivate_user(session, actor=boss, username="admin")
    with pytest.raises(ValidationError, match=r"yourself|last active admin"), uow(engine) as s:
        users.deactivate_user(s, actor=boss, username="boss")


def test_users_set_their_own_pin_but_not_others(engine, actors):
    tech = actors[Role.technician]
    with uow(engine) as session:
        users.set_pin(session, actor=tech, username=tech.username, pin="9999")
    with uow(engine) as session:
        identity.sign_in(session, username=tech.username, pin="9999", workstation="ws").accepted()
    with pytest.raises(PermissionDenied, match="may not manage users"), uow(engine) as session:
        users.set_pin(session, actor=tech, username="admin", pin="9999")


def test_cli_default_actor_is_the_only_user(engine, admin):
    with uow(engine) as session:
        assert identity.actor_for(session, username=None, workstation="ws").username == "admin"
        users.add_user(session, actor=admin, username="tina", role="technician")
    with pytest.raises(AuthenticationFailed, match="--user"), uow(engine) as session:
        identity.actor_for(session, username=None, workstation="ws")
