"""vadnet service package."""
