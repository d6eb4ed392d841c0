"""One blueprint per section of the portal."""
