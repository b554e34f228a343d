"""HTTP edge: Hub-compatible routes, health, error rendering. Only this package and
`app.py` import aiohttp.web."""
