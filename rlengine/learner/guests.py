"""Room in a learner rank's process for a stage's own model (PCL's value model with
``placement: learner``), so that it shares the rank's GPU instead of needing one of its own.

The rank's Ray actor exposes these methods; the driver reaches them through
``LearnerGroup.host`` / ``call_hosted`` / ``unhost`` (rank 0 only).
"""

from __future__ import annotations


class GuestHost:
    """Objects built and called inside this process, by name."""

    guests: dict[str, object]

    def host(self, name: str, cls: type, *args: object) -> str:
        """Build ``cls(*args)`` in this process (e.g. PCL's value model, sharing this rank's GPU)."""
        self.guests[name] = cls(*args)
        return name

    def call_hosted(self, name: str, method: str, *args: object) -> object:
        """``method(*args)`` on the object hosted as ``name``."""
        return getattr(self.guests[name], method)(*args)

    def unhost(self, name: str) -> None:
        """Drop the object hosted as ``name`` (nothing if there is none)."""
        self.guests.pop(name, None)
