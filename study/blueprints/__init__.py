"""The app's blueprints: ``participant`` (pages and images), ``api`` (trials as JSON), ``admin``."""
