"""The background side: RQ workers and the dispatcher (`python -m workers ...`)."""
