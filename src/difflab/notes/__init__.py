"""Layer 7: helpers for the site's notes (the page's provenance, plotting)."""
