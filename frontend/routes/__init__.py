"""HTTP routes: thin renderers over the service."""
