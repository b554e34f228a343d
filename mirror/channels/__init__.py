"""Releases and channels (issue 11): named, immutable releases of a repo, aliases that
point at them with canary splits and gates, and the webhook that announces changes."""
