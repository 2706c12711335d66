"""amperity-signal: connects Datafly Signal's event pipeline to Amperity."""

__version__ = "0.1.0"
