"""Data: the synthetic shapes world and image-folder datasets."""
