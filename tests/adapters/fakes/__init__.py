"""Local fake servers speaking the platforms' real wire formats, for the adapter tests (never the internet)."""
