"""A least-privilege PostgreSQL role for the workstations.

Workstations read and write the inventory and never remove any of it, so the role this SQL
makes may SELECT, INSERT and UPDATE the tables but DELETE only where biobank deletes rows
(`pin_lockout`: a user's wrong PINs at one workstation, forgotten when the right PIN comes or an
admin lifts the lock; `visit` and `phenotype_value`: an admin's merge of two visits, which moves
everything to the visit kept and removes the other, audited with its full snapshot;
`phenotype_value` and `phenotype_missing`: a value or missing-data code its source no longer
gives, or that the other replaces, audited with what it was and why), TRUNCATE
nothing, append to the audit trail without changing it (SELECT
and INSERT; its triggers refuse UPDATE and DELETE even to the owner), only read the schema
version, and change no table: it owns none, so upgrades, restores and this SQL stay with the
owner, and a role with the owner's rights (the owner, a member of it, a superuser) is refused.
Run it as the owner, and again after each upgrade (new tables and sequences need their
grants): it gives the role exactly these rights, whatever it had.
"""

from __future__ import annotations

import re

from biobank.errors import ValidationError

ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_SQL = """\
-- A biobank workstation role: run as the owner of the biobank tables (psql -f), after each
-- `biobank db upgrade` too. Give the role a password with psql's \\password {role}.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
    CREATE ROLE "{role}" LOGIN;
  END IF;
  IF pg_has_role('{role}', (SELECT tableowner FROM pg_tables
                            WHERE schemaname = 'public' AND tablename = 'specimen'), 'USAGE')
  THEN
    RAISE EXCEPTION 'role {role} has the rights of the tables'' owner: choose another role';
  END IF;
  EXECUTE 'GRANT CONNECT ON DATABASE ' || quote_ident(current_database()) || ' TO "{role}"';
END $$;
GRANT USAGE ON SCHEMA public TO "{role}";
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}";
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM "{role}";
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO "{role}";
REVOKE UPDATE ON audit_entry FROM "{role}";
REVOKE INSERT, UPDATE ON alembic_version FROM "{role}";
GRANT DELETE ON pin_lockout, visit, phenotype_value, phenotype_missing TO "{role}";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}";
"""


def workstation_role_sql(role: str) -> str:
    """The SQL that makes `role` (a new or an existing login role) a workstation's."""
    if not ROLE_NAME.fullmatch(role):
        raise ValidationError(
            f"{role!r} is not a role name biobank makes (lowercase letters, digits and _, "
            "starting with a letter or _, at most 63)",
            field="role",
            value=role,
        )
    return _SQL.format(role=role)
