"""baobab.train: filled in by its own issue."""
