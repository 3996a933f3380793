"""Accounts: users and roles, API tokens, browser sessions, sign-in throttling, offboarding.

- ``routes`` (the API), ``pages`` (sign-in and sign-out), ``cli`` (``thresher users`` and
  ``thresher tokens``): thin, each calls ``service``.
- ``deps``: who is calling (bearer token or session cookie), CSRF on cookie writes, role checks.
- ``service``: the rules (who may own which token, what offboarding revokes);
  ``repository``: every query on users, tokens and sessions.
- ``throttle`` (failed sign-ins per account and address) and ``password_checks`` (the one
  low-priority thread that runs argon2id) keep sign-ins from starving everyone else.
"""
