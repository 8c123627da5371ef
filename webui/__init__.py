"""Touchscreen web UI (Flask): arrives with the web UI issue."""
