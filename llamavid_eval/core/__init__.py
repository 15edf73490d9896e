"""The bottom layer every other package may import: where data lives, what records look like,
shared constants and statistics. It imports nothing of ours above it (no torch either)."""
