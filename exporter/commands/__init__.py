"""Commands a human runs once at the terminal: doctor, capture, profile, snapshot, diff; and the
README's metrics reference (`make docs`)."""
