"""Task data: sources, the offline suite, mixing and collation."""
