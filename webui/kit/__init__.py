"""The web kit both web apps share (device UI and central admin UI): security, access rules, page layout, style
and scripts."""

from pathlib import Path

from flask import Flask
from jinja2 import ChoiceLoader, FileSystemLoader

STATIC_DIR = Path(__file__).resolve().parent / "static"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"  # kit/layout.html: the page both apps' base extends


def install_templates(app: Flask) -> None:
    """The app's own templates first, then the kit's shared layout."""
    app.jinja_env.loader = ChoiceLoader([app.jinja_env.loader, FileSystemLoader(str(TEMPLATES_DIR))])
