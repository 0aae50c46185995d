"""The running daemon: the scheduler, source selection, scanning, leases, the
single-daemon lock, logs, alerts, metrics and the health listener."""
