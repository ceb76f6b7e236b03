"""An outlet and its stock policy."""

from __future__ import annotations

from eventsourcing.domain import Aggregate

from ledger import events
from ledger.domain.identity import outlet_id
from ledger.domain.quantities import AllocationPolicy


class Outlet(Aggregate):
    """A store or warehouse; it comes into being with its first receipt or policy."""

    def __init__(
        self, outlet: str, allocation_policy: AllocationPolicy, allow_negative: bool
    ) -> None:
        self.outlet = outlet
        self.allocation_policy: AllocationPolicy = allocation_policy
        self.allow_negative = allow_negative

    @classmethod
    def open(
        cls,
        outlet: str,
        actor: str,
        allocation_policy: AllocationPolicy = "fefo",
        allow_negative: bool = False,
    ) -> Outlet:
        return cls._create(
            events.OutletOpened,
            id=outlet_id(outlet),
            outlet=outlet,
            allocation_policy=allocation_policy,
            allow_negative=allow_negative,
            actor=actor,
        )

    def set_policy(self, allocation_policy: AllocationPolicy, allow_negative: bool,
                   actor: str) -> None:
        if (allocation_policy, allow_negative) == (self.allocation_policy, self.allow_negative):
            return
        self.trigger_event(
            events.OutletPolicySet,
            allocation_policy=allocation_policy,
            allow_negative=allow_negative,
            actor=actor,
        )
