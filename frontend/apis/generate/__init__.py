"""POST /generate: the frontend's own API."""
