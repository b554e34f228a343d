"""The web dashboard (`/ui`): its read model (dashboard.py), the traffic sampler behind
its chart (history.py), server-side SVG charts (charts.py, figures.py), and the jinja2
templates and one stylesheet it renders with (render.py, templates/, static/). No
aiohttp here: the route group is http/ui.py."""
