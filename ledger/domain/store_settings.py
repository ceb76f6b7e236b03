"""The store's settings: its one currency, and how many decimal places its costs may have."""

from __future__ import annotations

import re
from decimal import Decimal

from eventsourcing.domain import Aggregate

from ledger import events
from ledger.domain.costing import MAX_COST_PLACES, cost_places_problem
from ledger.domain.errors import InvalidInput, Refusal
from ledger.domain.identity import store_settings_id

_CURRENCY = re.compile(r"[A-Z]{3}")


class CurrencyAlreadySet(Refusal):
    """The store's currency is recorded and differs from the one asked: every cost already
    recorded is in it, so it is never changed."""

    rule = "currency_already_set"


def check_currency(currency: str, cost_places: int) -> tuple[str, int]:
    """A currency code and cost places as recorded (`EUR`, 2), or `InvalidInput` naming the
    field."""
    code = currency.strip().upper()
    if not _CURRENCY.fullmatch(code):
        raise InvalidInput("currency", f"expected a three-letter ISO 4217 code (EUR, KES), "
                                       f"not {currency!r}")
    if isinstance(cost_places, bool) or not 0 <= cost_places <= MAX_COST_PLACES:
        raise InvalidInput("cost_places", f"expected a whole number from 0 to "
                                          f"{MAX_COST_PLACES}, not {cost_places!r}")
    return code, cost_places


class StoreSettings(Aggregate):
    """The store's currency, recorded once (`StoreCurrencySet`)."""

    def __init__(self, currency: str, cost_places: int, actor: str) -> None:
        self.currency = currency
        self.cost_places = cost_places
        self.actor = actor

    @classmethod
    def set_currency(cls, currency: str, cost_places: int, actor: str) -> StoreSettings:
        code, places = check_currency(currency, cost_places)
        return cls._create(events.StoreCurrencySet, id=store_settings_id(), currency=code,
                           cost_places=places, actor=actor)

    def check_same(self, currency: str, cost_places: int) -> None:
        """Setting what is recorded again is a no-op; anything else is refused."""
        code, places = check_currency(currency, cost_places)
        if (code, places) != (self.currency, self.cost_places):
            raise CurrencyAlreadySet(
                f"the store's currency is recorded as {self.currency} with "
                f"{self.cost_places} cost places; it is never changed (asked {code} with "
                f"{places})")


def check_unit_cost(settings: StoreSettings | None, unit_cost: Decimal | str | None) -> None:
    """Refuse a unit cost with more places than the store's costs have (`unit_cost` named)."""
    if unit_cost is None:
        return
    places = MAX_COST_PLACES if settings is None else settings.cost_places
    problem = cost_places_problem(unit_cost, places)
    if problem is not None:
        currency = f" ({settings.currency})" if settings is not None else ""
        raise InvalidInput("unit_cost", problem + currency)
