# host-bridge build rules (filled in by its issue)
