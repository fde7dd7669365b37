"""Server-rendered web pages (Jinja2 + inline SVG charts + a little plain JS), served by the API app."""
