"""The pure rules of the inventory: what may be done, and what a value means, with no database.

Nothing here imports SQLAlchemy or SQLModel (`lint-imports` holds it to that), so each rule is
tested on its own and the workstation may use the vocabulary without the database layer.
"""
