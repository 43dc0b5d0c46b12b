"""Log files: following them across rotation, and redacting secrets from any text we show."""
