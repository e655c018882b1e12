"""Finding a registered model by its on-chain id or its name: one answer for the client, the worker and the API.

    info = resolve_model(registry, "SmolLM2-135M-Instruct")   # or 3, or "3"

The registry lets anyone register a model, so two models may share a name. A name is only an answer when
it names exactly one model; otherwise `AmbiguousModelName` lists the ids and asks for one, so a client can
never pay for one model while workers serve another. A numeric id always names its model.
"""

from __future__ import annotations

from shardnet.chain.registry import ModelInfo, Registry
from shardnet.errors import ConfigError


class ModelLookupError(ConfigError):
    """No single registered model answers to the name or id given; the message says what to pass instead."""


class UnknownModel(ModelLookupError):
    """No model has that id or name on chain."""


class AmbiguousModelName(ModelLookupError):
    """Several models are registered under the name: `ids` lists them, oldest first."""

    def __init__(self, name: str, models: list[ModelInfo]) -> None:
        self.name = name
        self.ids = [m.model_id for m in models]
        listed = ", ".join(f"{m.model_id} (owner {m.owner}, manifest {m.manifest_cid})" for m in models)
        super().__init__(
            f"{len(models)} models are registered under the name {name!r}: ids {listed}; "
            f"pass the id of the one you mean instead of the name"
        )


def registered_models(registry: Registry) -> list[ModelInfo]:
    """Every model on chain, by id (1, 2, ...)."""
    return [registry.get_model(model_id) for model_id in range(1, registry.model_count() + 1)]


def is_model_id(name_or_id: str | int) -> bool:
    """True for an id (an int, or a string of digits); names made only of digits are reachable by id only."""
    return isinstance(name_or_id, int) or name_or_id.strip().isdigit()


def resolve_model(registry: Registry, name_or_id: str | int | None) -> ModelInfo:
    """The one registered model with this id (3 or "3") or this name.

    Raises `UnknownModel` when none matches and `AmbiguousModelName` (listing the ids) when several share
    the name. Both are `ConfigError`s, so callers that report configuration errors report these too.
    """
    if name_or_id is None or (isinstance(name_or_id, str) and not name_or_id.strip()):
        raise UnknownModel("no model given: pass the on-chain model id or its registered name")
    count = registry.model_count()
    if is_model_id(name_or_id):
        model_id = int(name_or_id)
        if not 1 <= model_id <= count:
            span = f"model ids run from 1 to {count}" if count else "no model is registered yet"
            raise UnknownModel(f"no model {model_id} on chain: {span}")
        return registry.get_model(model_id)
    models = registered_models(registry)
    named = [m for m in models if m.name == name_or_id]
    if not named:
        known = ", ".join(sorted({m.name for m in models})) or "none"
        raise UnknownModel(
            f"no model named {name_or_id!r} on chain (registered: {known}); register it or fix the name"
        )
    if len(named) > 1:
        raise AmbiguousModelName(str(name_or_id), named)
    return named[0]
