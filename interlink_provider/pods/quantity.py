"""Kubernetes resource quantities ("500m", "1.5", "128Mi", "2G", "1e9") as numbers."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")


class QuantityError(ValueError):
    pass


def parse_quantity(value: int | float | str) -> Decimal:
    """Parse a Kubernetes quantity into a Decimal of base units."""
    if isinstance(value, bool):
        raise QuantityError(f"invalid quantity {value!r}")
    if isinstance(value, (int, float)):
        result = Decimal(str(value))
    else:
        match = _QUANTITY.match(value.strip())
        if not match:
            raise QuantityError(f"invalid quantity {value!r}")
        try:
            result = Decimal(match.group(1)) * _SUFFIXES[match.group(2)]
        except InvalidOperation as exc:
            raise QuantityError(f"invalid quantity {value!r}") from exc
    if result < 0 or not result.is_finite():
        raise QuantityError(f"quantity must be a finite number >= 0, got {value!r}")
    return result


def cpu_millis(value: int | float | str) -> int:
    """CPU quantity in millicores, rounded up (Kubernetes does the same)."""
    return math.ceil(parse_quantity(value) * 1000)


def memory_bytes(value: int | float | str) -> int:
    return math.ceil(parse_quantity(value))


def count(value: int | float | str) -> int:
    """An extended resource such as nvidia.com/gpu: must be a whole number."""
    number = parse_quantity(value)
    if number != number.to_integral_value():
        raise QuantityError(f"extended resources must be whole numbers, got {value!r}")
    return int(number)
