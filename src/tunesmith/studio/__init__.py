"""``tunesmith studio``: a local web app over the same pipeline. One module per page under ``pages/``."""
