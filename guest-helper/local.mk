# guest-helper build rules (filled in by its issue)
