"""WSGI entry point: `gunicorn wsgi:app` and `flask --app wsgi ...`."""

from portal import create_app

app = create_app()
