"""The bare side of bench_load.py's poll_vs_bare_ratio: a trivial Flask app, served by
gunicorn with the same settings as the portal."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def bare() -> str:
    return "ok"
