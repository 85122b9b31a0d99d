"""pushreachd: the pushreach service (push notifications with supplementary SMS)."""
