# tests/guest build rules (filled in by its issue)
