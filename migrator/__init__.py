"""migrator: live-migrate running Docker containers between hosts with CRIU."""

__version__ = "0.1.0"
