"""Sync: keep watched revisions current, fetching only content the store lacks.

`plan` diffs upstream listings against the catalog, `fetch` brings missing contents in
through the Resolver's fills, `run` ties them into one report, `lock` keeps runs apart.
"""
