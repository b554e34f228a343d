"""The Resolver: repo@revision/path -> metadata and bytes, asking the catalog and the
store first and the upstream Hub on a miss."""
