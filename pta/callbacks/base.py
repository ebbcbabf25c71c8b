"""Callback base class, the dispatcher, and the exception that stops a run early."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal, cast, get_args

from typing_extensions import override

from pta._types import BatchOutput
from pta.protocols import TrainerLike

EventName = Literal[
    "on_init_end",
    "on_training_run_start",
    "on_train_epoch_start",
    "on_train_step_start",
    "on_train_step_end",
    "on_train_epoch_end",
    "on_eval_epoch_start",
    "on_eval_step_start",
    "on_eval_step_end",
    "on_eval_epoch_end",
    "on_training_run_epoch_end",
    "on_training_run_end",
    "on_evaluation_run_start",
    "on_evaluation_run_end",
    "on_stop_training_error",
]
EVENTS: tuple[EventName, ...] = get_args(EventName)
_RUN_END_EVENTS: frozenset[str] = frozenset({"on_training_run_end", "on_evaluation_run_end"})
MYPY = False  # mypy takes a constant of this name as true (see TrainerCallback.on_train_step_end)
_DECLARED_CUSTOM_EVENTS: set[str] = set()  # every ``custom_events`` entry of every TrainerCallback subclass


def _closest_event(name: str) -> str:
    match = difflib.get_close_matches(name, EVENTS, n=1, cutoff=0.0)
    return match[0] if match else EVENTS[0]


def _not_an_event(name: str, where: str) -> str:
    return (
        f"{where}: {name!r} is not a callback event; did you mean {_closest_event(name)!r}? "
        f"For a custom event of your own, list it in the class attribute custom_events = ({name!r},) "
        "(names without the on_ prefix need no declaration)"
    )


class StopTrainingError(Exception):
    """Raise from a callback or hook to end the run after the current step; the run ends normally."""


class CallbackMethodNotImplementedError(Exception):
    """Kept for pytorch-accelerated compatibility; pta's dispatcher never raises it (it skips callbacks
    that do not override an event)."""


class TrainerCallback:
    """Subclass and override the events you need; the trainer calls only overridden events.

    Every event receives the trainer (first, positionally) and its data as keyword arguments, so an
    override may take exactly the keywords it uses plus ``**kwargs``, in pta's style
    (``def on_eval_step_end(self, trainer, *, batch_output, **kwargs)``) or pytorch-accelerated's
    (``def on_eval_step_end(self, trainer, batch, batch_output, **kwargs)``). Exceptions raised here propagate.

    A method named ``on_...`` that is not an event is a typo until declared otherwise: defining one raises
    ``TypeError`` when the class is created, naming the closest event. Custom events called by your own
    trainer code through ``callback_handler.call_event(name, trainer, ...)`` either do not start with
    ``on_`` (as in pytorch-accelerated's ``verify_train_batch`` example) or are listed in ``custom_events``.
    """

    custom_events: ClassVar[tuple[str, ...]] = ()
    """Names of ``on_...`` methods of this class that are custom events, not misspelled built-in ones."""

    @override
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared: set[str] = set()
        for klass in cls.__mro__:
            declared.update(vars(klass).get("custom_events", ()))
        for name in declared:
            if name in EVENTS:
                raise TypeError(f"{cls.__qualname__}.custom_events lists {name!r}, which is a built-in event")
        _DECLARED_CUSTOM_EVENTS.update(declared)
        for name, value in vars(cls).items():
            if not name.startswith("on_") or name in EVENTS or name in declared:
                continue
            if inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod)):
                raise TypeError(_not_an_event(name, f"{cls.__qualname__}.{name}"))

    def on_init_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        """The trainer has been constructed."""

    def on_training_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        """A training run starts: everything is prepared, nothing has been trained."""

    def on_train_epoch_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        """A training epoch starts (the model is in training mode)."""

    def on_train_step_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        """A training step starts; its batch has been loaded."""

    # The two events with data keywords are declared twice: for mypy (MYPY is true only there) with
    # keyword-only data, for pyright and at run time with ``*args`` before it. Each checker then accepts
    # both override styles, pta's keyword-only one and pytorch-accelerated's positional
    # ``(self, trainer, batch, batch_output, **kwargs)``; one declaration satisfies only one checker.
    if MYPY:  # pyright reports the declarations that the else-branch redeclares
        def on_train_step_end(  # pyright: ignore[reportRedeclaration]  # see above
            self, trainer: TrainerLike, *, batch_output: BatchOutput, batch: Any, step: int, **kwargs: Any
        ) -> None: ...

        def on_eval_step_end(  # pyright: ignore[reportRedeclaration]  # see above
            self, trainer: TrainerLike, *, batch_output: BatchOutput, batch: Any, **kwargs: Any
        ) -> None: ...
    else:
        def on_train_step_end(
            self, trainer: TrainerLike, *args: Any, batch_output: BatchOutput, batch: Any, step: int, **kwargs: Any
        ) -> None:
            """A training step ended: backward is done and, on an update step, so are the optimizer and
            scheduler steps. ``batch_output["loss"]`` is the batch's true mean loss (not divided for
            accumulation); ``step`` counts batches within the epoch from 0."""

        def on_eval_step_end(
            self, trainer: TrainerLike, *args: Any, batch_output: BatchOutput, batch: Any, **kwargs: Any
        ) -> None:
            """An evaluation step ended. In distributed runs a process that ran out of batches repeats one to
            keep collectives aligned: ``trainer.eval_step_is_padding`` is then ``True`` and ``trainer.gather``
            drops its contribution."""

    def on_train_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        """A training epoch ended; ``train_loss_epoch`` is recorded."""

    def on_eval_epoch_start(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        """An evaluation epoch starts (the model is in eval mode); ``is_intermediate`` marks evaluations
        run in the middle of a training epoch."""

    def on_eval_step_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        """An evaluation step starts."""

    def on_eval_epoch_end(self, trainer: TrainerLike, *, is_intermediate: bool = False, **kwargs: Any) -> None:
        """An evaluation epoch ended; its loss is recorded."""

    def on_training_run_epoch_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        """Training and evaluation of one epoch are done."""

    def on_training_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        """The training run ended (normally or through ``StopTrainingError``)."""

    def on_evaluation_run_start(self, trainer: TrainerLike, **kwargs: Any) -> None:
        """An evaluation run (``trainer.evaluate``) starts."""

    def on_evaluation_run_end(self, trainer: TrainerLike, **kwargs: Any) -> None:
        """An evaluation run ended."""

    def on_stop_training_error(self, trainer: TrainerLike, **kwargs: Any) -> None:
        """A ``StopTrainingError`` ended the run early."""


class CallbackHandler:
    """Holds callbacks in order and calls, for each event, only those that override it."""

    def __init__(self, callbacks: Iterable[TrainerCallback | type[TrainerCallback]] = ()) -> None:
        self.callbacks: list[TrainerCallback] = []
        self._dispatch: dict[str, list[Callable[..., None]]] = {event: [] for event in EVENTS}
        self._custom: dict[str, list[Callable[..., None]]] = {}
        self.add_callbacks(callbacks)

    def add_callbacks(self, callbacks: Iterable[TrainerCallback | type[TrainerCallback]]) -> None:
        for callback in callbacks:
            self.add_callback(callback)

    def add_callback(self, callback: TrainerCallback | type[TrainerCallback]) -> None:
        """Add a callback instance, or a callback class (instantiated without arguments)."""
        instance = callback() if isinstance(callback, type) else callback
        if not isinstance(instance, TrainerCallback):
            raise TypeError(
                f"callbacks must be TrainerCallback instances or subclasses, got {type(instance).__name__}"
            )
        self.callbacks.append(instance)
        self._rebuild()

    def remove_callback(self, callback: TrainerCallback) -> None:
        self.callbacks.remove(callback)
        self._rebuild()

    def clear_callbacks(self) -> None:
        self.callbacks = []
        self._rebuild()

    @property
    def callback_list(self) -> list[str]:
        return [type(cb).__name__ for cb in self.callbacks]

    def __iter__(self) -> Iterator[TrainerCallback]:
        return iter(self.callbacks)

    def _rebuild(self) -> None:
        self._dispatch.update({  # in place: the training loop holds this table (``event_methods``)
            event: [
                getattr(cb, event)
                for cb in self.callbacks
                if getattr(type(cb), event) is not getattr(TrainerCallback, event)
            ]
            for event in EVENTS
        })
        self._custom = {}

    def event_methods(self) -> Mapping[str, Sequence[Callable[..., None]]]:
        """For each built-in event, what ``call_event(event, *args, **kwargs)`` calls, each with the same
        arguments: the callbacks' overriding methods, in a table kept current as callbacks are added and
        removed; or ``call_event`` itself where a subclass or this instance replaces it. The training
        loop calls its per-step events through this table: one call less per event and step."""
        if type(self).call_event is CallbackHandler.call_event and "call_event" not in vars(self):
            return self._dispatch
        return {event: [functools.partial(self.call_event, event)] for event in EVENTS}

    def _custom_listeners(self, event: str) -> list[Callable[..., None]]:
        """The callbacks' methods for a custom event (one not in ``EVENTS``), looked up once per handler state."""
        methods = self._custom.get(event)
        if methods is None:
            if event.startswith("on_") and event not in _DECLARED_CUSTOM_EVENTS:
                raise ValueError(_not_an_event(event, "call_event"))
            found = (getattr(cb, event, None) for cb in self.callbacks)
            methods = self._custom[event] = [cast("Callable[..., None]", method) for method in found if callable(method)]
        return methods

    def has_listeners(self, event: str) -> bool:
        methods = self._dispatch.get(event)
        return bool(methods if methods is not None else self._custom_listeners(event))

    def call_event(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        """Call ``event`` on every callback that defines it, in order, with ``args`` and ``kwargs`` as given;
        exceptions propagate.

        Built-in events (``EVENTS``) reach only callbacks that override them; pta calls them as
        ``call_event(event, trainer, **data)``. Any other name is a custom event, as in pytorch-accelerated:
        ``call_event("verify_train_batch", trainer=self, xb=xb)`` calls ``verify_train_batch(trainer=self, xb=xb)``
        on every callback that has such a method (an ``on_...`` name must be declared in ``custom_events``).

        At the end of a run every callback is called even when an earlier one raised (so that
        loggers and trackers close); the first exception is then re-raised, later ones noted on it.
        """
        methods = self._dispatch.get(event)  # _methods(), inlined: this runs twice per step
        if methods is None:
            methods = self._custom_listeners(event)
        if event not in _RUN_END_EVENTS:
            for method in methods:
                method(*args, **kwargs)
            return
        _call_every(event, methods, args, kwargs)

    def call_event_all(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        """Call ``event`` on every callback that defines it, even after one raised; then re-raise the
        first exception (multi-process runs use this so that every process runs the same callbacks)."""
        _call_every(event, self._methods(event), args, kwargs)

    def _methods(self, event: str) -> list[Callable[..., None]]:
        methods = self._dispatch.get(event)
        return methods if methods is not None else self._custom_listeners(event)


def _call_every(event: str, methods: Iterable[Callable[..., None]], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    first: Exception | None = None
    for method in methods:
        try:
            method(*args, **kwargs)
        except Exception as error:
            if first is None:
                first = error
            else:
                first.add_note(f"{event} of {method.__qualname__} also raised {error!r}")
    if first is not None:
        raise first
