"""Access control (design.md §10): mirror tokens, the permission table, repo rules,
two-factor codes. The HTTP edge applies it in http/auth.py; the CLI shares the table."""
