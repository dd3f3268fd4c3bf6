"""Rich rendering: tables and pictures. Imported only when something is shown."""
