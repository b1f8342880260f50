"""Neural networks: ABMIL (the backbone every cancer model shares)."""
