"""Layer 2: the trust network's client side — validating WLCG tokens, exchanging them,
finding them (WLCG bearer-token discovery), and mapping identities to local accounts."""

from .errors import AuthError
from .identity import Identity

__all__ = ["AuthError", "Identity"]
