"""Commands a human runs once at the terminal: doctor, capture, profile, snapshot, diff."""
