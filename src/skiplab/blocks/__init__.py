"""Skip-connection building blocks. Each module documents the paper it comes from."""
