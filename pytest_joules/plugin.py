"""pytest hooks of pytest-joules (being built: see the plugin issue)."""
