"""resexp: reproduce the degradation experiment of He et al. 2016 (plain vs residual nets).

The Python API (docs/python-api.md): resexp.sweep, resexp.train, resexp.load_runs,
resexp.load_metrics, resexp.load_diagnostics, resexp.plot and resexp.report, from
resexp/api.py. They are imported on first use, not here: the subpackages import `resexp`
itself (for __version__ and CallablePackage), and an import of resexp.api here would make
each of them import the layers above it (lint-imports refuses that). `import resexp` loads
no torch.
"""

import importlib
import inspect
import types

__version__ = "0.1.0"

API = ("sweep", "train", "load_runs", "load_metrics", "load_diagnostics", "plot", "report")


def __getattr__(name: str):
    if name in ("sweep", "train"):  # also subpackages: the package is the callable (CallablePackage)
        return importlib.import_module(f"{__name__}.{name}")
    if name in API:
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """What a notebook's tab completion should offer: the API and the version."""
    return sorted({*API, "__version__", *(n for n in globals() if n.startswith("__"))})


class CallablePackage(types.ModuleType):
    # The class of resexp.sweep and resexp.train: each is a subpackage and the API function
    # of its name at once. Python sets ``resexp.sweep`` to the package as soon as anything
    # imports resexp.sweep.plan, so a function of that name could not stay there; a package
    # that calls resexp.api.sweep when called can. help(), inspect.signature and Jupyter's
    # ``?`` read __call__, __signature__ and __doc__: each is the function's (a property of the
    # class wins over the module's own __doc__, which follows the function's).

    @property
    def __call__(self):  # Python calls what the property returns: resexp.sweep(...) is resexp.api.sweep(...)
        return self._function()

    @property
    def __signature__(self):
        return inspect.signature(self._function())

    @property
    def __doc__(self):
        name = f"{__name__}.{self._short_name()}"
        return (f"{name}{self.__signature__}\n\n{inspect.getdoc(self._function())}\n\n"
                f"{name} is also the package: {self.__dict__.get('__doc__') or ''}")

    def _short_name(self) -> str:
        return self.__name__.rpartition(".")[2]

    def _function(self):
        return getattr(importlib.import_module(f"{__name__}.api"), self._short_name())
