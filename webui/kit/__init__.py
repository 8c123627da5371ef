"""The web kit both web apps share (device UI and central admin UI): security, access rules, style and scripts."""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
