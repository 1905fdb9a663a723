"""The one way a policy is made from settings: the Episode panel's session, ``run`` and ``coverage``,
and sweeps all call :func:`policy_from_settings`.

Adding a setting is one field in :class:`studio.settings.EpisodeSettings` and its use here (in
:func:`react_config`, or on the policy below): every surface then offers it and every policy gets it.
"""

from __future__ import annotations

from studio.agents.base import Policy
from studio.agents.react import ReActConfig, ReActPolicy
from studio.agents.scripted import make_policy
from studio.errors import StudioError
from studio.internals.vectors import VectorLibrary, parse_steer
from studio.models.base import Backend, SamplingParams
from studio.models.steered import SteeredBackend
from studio.scaling.verifiers import verified
from studio.settings import EpisodeSettings


def react_config(settings: EpisodeSettings) -> ReActConfig:
    """The ReAct settings of an episode's settings: one line if they do not fit."""
    sampling = SamplingParams(
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_new_tokens=settings.max_new_tokens,
        seed=settings.seed,
    )
    try:
        return ReActConfig(
            action_mode=settings.action_mode,
            sampling=sampling,
            candidates=settings.candidates,
            few_shot=settings.few_shot,
            record_activations=settings.record_activations,
        )
    except ValueError as exc:
        raise StudioError(str(exc)) from None


def policy_from_settings(
    settings: EpisodeSettings,
    backend: Backend | None = None,
    *,
    scripted: str | None = None,
    judge: Backend | None = None,
) -> Policy:
    """The policy ``settings`` describe: the scripted policy named ``scripted`` (``expert``,
    ``random``), else ReAct acting with ``backend``, its config from the settings, wrapped by the
    settings' verifier (``judge``: the model the ``judge`` verifier asks)."""
    if scripted is not None:
        return make_policy(scripted)
    if backend is None:
        raise StudioError("A model-driven policy needs a loaded model.")
    if settings.steer:
        backend = steered_backend(backend, settings.steer)
    return verified(ReActPolicy(backend, react_config(settings)), settings, judge=judge)


def steered_backend(backend: Backend, steer: str, library: VectorLibrary | None = None) -> Backend:
    """``backend`` steered as ``steer`` (``NAME[:LAYERS]:ALPHA[:POSITIONS]``) says, the vector read
    from ``library`` (the default library); one line if it cannot be."""
    spec = parse_steer(steer)
    if spec is None:
        return backend
    return SteeredBackend(backend, spec.resolve(library or VectorLibrary()))
