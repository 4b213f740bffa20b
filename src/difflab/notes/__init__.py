"""Layer 8: helpers for the site's notes (the page's provenance, plotting)."""
