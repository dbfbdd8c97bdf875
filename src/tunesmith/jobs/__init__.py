"""Fine-tuning jobs as a service: a store (SQLite by default, PostgreSQL by URL), uploaded files, API keys, and
workers that claim queued jobs and run each as a normal `tunesmith run` in its own process and run directory.

The HTTP face (OpenAI's files and fine-tuning API) is in ``tunesmith.server``; this package knows nothing of HTTP.
"""
