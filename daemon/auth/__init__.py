"""Identity: who acts (principals, passwords, tokens, sessions, OpenID Connect) and what
each role may do (policy.py, pure)."""
