"""Domain services: one module per use-case family, over the pure rules of `biobank.domain`.

Each service is `verb_noun(session, *, actor, ...)`: it validates, checks the actor's permission,
changes rows, appends the audit entry and returns read models. It never commits. A rule that
needs no database belongs in `biobank.domain`; a service applies it to rows.
"""
