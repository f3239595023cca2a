"""Accounts and access: who may sign in, with which roles and scopes, and what each may see.

`roles` holds the access rules (pure), `store` the accounts in the database, `access` the one
FastAPI dependency every route declares, `cli` the `gridflow users` commands.
"""
