"""The rich package, when installed and wanted (the bench's tables and bar)."""
import os


def rich_or_none():
    """The rich package, or None: the report and the progress bar degrade to
    plain text without it (it is in the bench and test extras, not required)."""
    if os.environ.get("OSVRT_BENCH_PLAIN"):
        return None
    try:
        import rich  # noqa: F401
        import rich.console
        import rich.progress
        import rich.table
        import rich.box
    except ImportError:
        return None
    return rich
