"""Operator services behind the admin CLI: inspection, pins, imports and bundles.

Each module owns one noun and talks to the catalog and store through their public
methods; none holds SQL (that lives in `mirror.catalog`).
"""
