"""Token attribution: one provider usage per call, split over the questions of the call.

The provider reports one usage per call. :func:`attribute_tokens` splits it into integers
that add up *exactly* to it (largest-remainder method): prompt tokens in proportion to each
question's own prompt segment (the shared instructions are split in the same proportion),
completion tokens in proportion to the characters of the reply entries each question got.
A question retried alone also carries the whole usage of its own call. Summed over the
questions, the figures equal what the provider billed for every successful call. A call
that failed has no usage to attribute (a reply rejected as not-JSON was billed, but the
client's :class:`~rag_core.errors.LLMResponseError` does not carry its usage).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["attribute_tokens"]


def attribute_tokens(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` that sum exactly to it.

    Largest-remainder (Hamilton) method: everyone gets the floor of their exact share, and
    the units left over go to the largest remainders; ties go to the larger weight, then to
    the earlier position (deterministic). Each share is within 1 of the exact proportional
    share, and a larger weight never gets fewer tokens. All weights zero: an even split,
    the remainder to the first ones. Raises :class:`ValueError` for a negative total or
    weight, or a positive total with no weights.
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must be >= 0, got {list(weights)}")
    n = len(weights)
    if n == 0:
        if total:
            raise ValueError(f"cannot attribute {total} tokens to no one")
        return []
    weight_sum = sum(weights)
    if weight_sum == 0:
        base, extra = divmod(total, n)
        return [base + (1 if i < extra else 0) for i in range(n)]
    # exact integer arithmetic: share_i = total * w_i / weight_sum = floor + rem / weight_sum
    floors = [total * w // weight_sum for w in weights]
    remainders = [total * w % weight_sum for w in weights]
    left = total - sum(floors)
    order = sorted(range(n), key=lambda i: (-remainders[i], -weights[i], i))
    for i in order[:left]:
        floors[i] += 1
    return floors
