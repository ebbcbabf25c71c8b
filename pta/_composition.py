"""Checks a trainer class when it is created: hook chains that mixins rely on, and misspelled hooks
(and, per instance, ``check_requires``: the mixins that a class ``requires``).

The class checks read only the class and its functions' code, once per class, so they cost nothing per
step. ``TrainerHooks.__init_subclass__`` runs them for every trainer and mixin class.
"""

from __future__ import annotations

import types
from typing import cast

from pta._validation import ConfigurationError


class HookChainError(RuntimeError):
    """An override of a cooperative hook does not call ``super()``, so a mixin's behaviour would be skipped."""


class HookNameError(TypeError):
    """A trainer method one edit away from a hook, without ``@override``: most likely a misspelled hook."""


def _function(member: object) -> types.FunctionType | None:
    """The function behind a method, property, staticmethod or classmethod (``None`` for data)."""
    inner: object = member
    if isinstance(member, property):
        inner = member.fget
    elif isinstance(member, (staticmethod, classmethod)):
        inner = getattr(cast(object, member), "__func__", None)
    return inner if isinstance(inner, types.FunctionType) else None


def _mentions(code: types.CodeType, name: str) -> bool:
    """Whether ``code`` (or a function, generator or lambda nested in it) reads an attribute ``name``,
    as ``super().name(...)`` does."""
    if name in code.co_names:
        return True
    return any(isinstance(const, types.CodeType) and _mentions(const, name) for const in code.co_consts)


def _is_cooperative(member: object, name: str) -> bool:
    function = _function(member)
    if function is None:
        return False
    wrapped = getattr(function, "__wrapped__", None)  # a functools.wraps wrapper delegates to what it wraps
    return _mentions(function.__code__, name) or (wrapped is not None and _is_cooperative(wrapped, name))


def _one_edit_apart(a: str, b: str) -> bool:
    """One insertion, deletion, substitution or swap of neighbours turns ``a`` into ``b``."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diffs) == 1:
            return True
        i = diffs[0]
        return len(diffs) == 2 and diffs[1] == i + 1 and a[i] == b[i + 1] and a[i + 1] == b[i]
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = next((k for k, (x, y) in enumerate(zip(short, long, strict=False)) if x != y), len(short))
    return short[i:] == long[i + 1:]


LOOP_MODULES = ("pta.hooks", "pta._trainer_checkpoints", "pta._trainer_step", "pta.base")
"""Where ``TrainerHooks``, ``TrainerCheckpoints``, ``TrainerStep`` and ``TrainerBase`` live: the defaults every
chain ends in."""


def check_requires(trainer: object) -> None:
    """Raise ``ConfigurationError`` when a class in ``trainer``'s MRO ``requires`` a mixin that it lacks."""
    for klass in type(trainer).__mro__:
        for needed in vars(klass).get("requires", ()):
            if not isinstance(trainer, needed):
                raise ConfigurationError(
                    f"{klass.__name__} needs {needed.__name__}, which {type(trainer).__name__} lacks: "
                    f"add {needed.__name__} to the bases of {type(trainer).__name__}"
                )


def check_trainer_class(cls: type) -> None:
    """Raise ``HookChainError`` / ``HookNameError`` for a trainer or mixin class ``cls``."""
    mro = [k for k in cls.__mro__ if k is not object]
    hooks = {name for klass in mro[1:] for name, member in vars(klass).items()
             if not name.startswith("_") and _function(member) is not None}
    for index, klass in enumerate(mro):
        if klass.__module__ in LOOP_MODULES:
            break
        for name, member in vars(klass).items():
            if not name.startswith("_") and _function(member) is not None:
                _check_chain(cls, mro[index + 1:], klass, name, member)
    for name, member in vars(cls).items():
        function = _function(member)
        if name.startswith("_") or function is None or name in hooks or getattr(function, "__override__", False):
            continue
        meant = sorted(hook for hook in hooks if _one_edit_apart(name, hook))
        if meant:
            raise HookNameError(
                f"{cls.__name__}.{name}() is not a hook, but {' or '.join(m + '()' for m in meant)} is: the loop "
                f"would never call {name}(). Rename it (and mark it @override), or give it a name further "
                "from the hooks' names."
            )


def _check_chain(cls: type, below: list[type], klass: type, name: str, member: object) -> None:
    """If the next definition of ``name`` below ``klass`` in ``cls``'s MRO is a cooperative override (a
    mixin's), ``klass``'s must call ``super().name`` too: otherwise that part of the hook never runs."""
    nxt = next((k for k in below if name in vars(k)), None)
    if nxt is None or nxt.__module__ in LOOP_MODULES:
        return  # overriding TrainerBase's own default: the hook is the user's to replace
    if not _is_cooperative(vars(nxt)[name], name) or _is_cooperative(member, name):
        return
    where = "" if klass is cls else f" (in {cls.__name__})"
    raise HookChainError(
        f"{klass.__name__}.{name}() does not call super().{name}(), so {nxt.__name__}.{name}(){where} would "
        f"never run and the trainer would silently behave differently. Call super().{name}(...) in it, or "
        f"leave {nxt.__name__} out of the bases."
    )
