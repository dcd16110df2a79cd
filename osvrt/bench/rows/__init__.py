"""The bench rows, one module per topic; each registers its rows with
catalog.row (modules whose name starts with _ hold shared helpers)."""
