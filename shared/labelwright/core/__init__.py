"""labelwright core: what two or more labelwright services share."""
