"""Domain services: one module per capability, the only place rules live.

Each service is `verb_noun(session, *, actor, ...)`: it validates, checks the actor's permission,
changes rows, appends the audit entry and returns read models. It never commits.
"""
