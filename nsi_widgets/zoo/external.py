"""Models from your own code, and torchvision models and data sets from local files."""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from ..core.errors import InputError, InputTypeError

_MAX_MESSAGE = 400  # characters of a user error's message repeated in ours

_TORCHVISION_HINT = ("torchvision is not installed; install the release paired with your torch {torch} "
                     "(pin it, e.g. `pip install torchvision==<matching version>`, so that pip does not "
                     "replace torch)")


class FactoryError(InputError):
    """A model factory that cannot be imported, found or called; the message names the spec and the cause."""


class FactoryTypeError(InputTypeError):
    """A factory spec naming something that is not callable, or a factory that returned no ``torch.nn.Module``."""


# Also the built-in error each case raised before, for code that catches those.
class _FactoryFileNotFoundError(FactoryError, FileNotFoundError):
    pass


class _FactoryModuleNotFoundError(FactoryError, ModuleNotFoundError):
    pass


class _FactoryAttributeError(FactoryError, AttributeError):
    pass


def load_factory(spec: str, *args: Any, **kwargs: Any) -> torch.nn.Module:
    """Import a module and call a factory in it that returns a model.

    Parameters
    ----------
    spec : str
        ``"package.module:factory"`` (an importable module) or ``"path/to/file.py:factory"``
        (a file, imported under a private name). ``factory`` may be a dotted attribute path.
    *args, **kwargs
        Passed to the factory.

    Returns
    -------
    torch.nn.Module
        What the factory returned (its mode is left as the factory set it).

    Raises
    ------
    FactoryError
        One line naming ``spec`` and the cause: no ``":"`` in it; the file or module is not found
        (also a ``FileNotFoundError`` / ``ModuleNotFoundError``); importing it failed (a syntax
        error, with its file and line; an import inside it that failed; any error its code
        raised, with the type, message and the line that raised it); no such factory (also an
        ``AttributeError``, listing its callables); the factory raised. The original error is the
        ``__cause__`` (shown by ``nsi-widgets --debug``).
    FactoryTypeError
        If the factory is not callable or does not return a ``torch.nn.Module`` (a ``TypeError``).

    Notes
    -----
    This runs the named code: use it with your own files (index files and weights never run code).
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise FactoryError(f"expected 'module:factory' or 'file.py:factory', got {spec!r}")
    source, _, attribute = spec.rpartition(":")  # rpartition: Windows paths contain ':' too
    if not source or not attribute:
        raise FactoryError(f"expected 'module:factory' or 'file.py:factory', got {spec!r}")
    module = _import_source(source, spec)
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise _FactoryAttributeError(f"{source!r} has no attribute {attribute!r}; its callables: {public}")
        target = getattr(target, part)
    if not callable(target):
        raise FactoryTypeError(f"{spec!r} is a {type(target).__name__}, not a callable factory")
    try:
        model = target(*args, **kwargs)
    except (Exception, SystemExit) as error:
        origin = getattr(module, "__file__", None)
        raise FactoryError(f"model factory {spec!r} raised {_cause(error, origin)}") from error
    if not isinstance(model, torch.nn.Module):
        raise FactoryTypeError(f"factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module; "
                               "it must build and return the model")
    return model


def _import_source(source: str, spec: str):
    """Import a module by dotted name, or a ``.py`` file by path."""
    looks_like_path = source.endswith(".py") or os.sep in source or (os.altsep and os.altsep in source)
    if not looks_like_path:
        try:
            return importlib.import_module(source)
        except ModuleNotFoundError as error:
            if error.name is not None and (source == error.name or source.startswith(error.name + ".")):
                raise _FactoryModuleNotFoundError(
                    f"cannot import {source!r} (from {spec!r}): no module named {error.name!r}; check the "
                    f"name, or run from the folder that holds it (or add it to PYTHONPATH)") from error
            raise FactoryError(f"cannot import {source!r} (from {spec!r}): {_cause(error)}") from error
        except (Exception, SystemExit) as error:  # ImportError: a bad name; SyntaxError; anything its code raised
            raise FactoryError(f"cannot import {source!r} (from {spec!r}): {_cause(error)}") from error
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        raise _FactoryFileNotFoundError(f"model file {source!r} not found (resolved to {path})")
    if path.suffix not in importlib.machinery.SOURCE_SUFFIXES:
        raise FactoryError(f"cannot import {source!r} (from {spec!r}): not a Python source file; give a .py file")
    name = f"_nsi_factory_{abs(hash(str(path)))}"
    module_spec = importlib.util.spec_from_file_location(name, path, loader=_NoCacheLoader(name, str(path)))
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and typing look a class's module up here
    try:
        module_spec.loader.exec_module(module)
    except BaseException as error:
        sys.modules.pop(name, None)
        if isinstance(error, (Exception, SystemExit)):
            raise FactoryError(f"cannot import model file {source!r} (from {spec!r}): "
                               f"{_cause(error, str(path))}") from error
        raise
    return module


class _NoCacheLoader(importlib.machinery.SourceFileLoader):
    """Imports a model file without writing ``__pycache__`` into the user's folder."""

    def set_data(self, path, data, *, _mode=0o666) -> None:
        pass


def _cause(error: BaseException, origin: str | None = None) -> str:
    """``Type: message (file:line)`` of an error raised by user code, on one line.

    The line is the last one the error passed in ``origin`` (the factory's file), else the last
    one outside this module and importlib.
    """
    if isinstance(error, SyntaxError) and error.filename:
        where = f"{error.filename}:{error.lineno}" if error.lineno else error.filename
        return f"{type(error).__name__}: {error.msg} ({where})"
    if isinstance(error, SystemExit):
        return (f"SystemExit({error.code!r}): it called sys.exit() (a script that parses its command line "
                f"when imported? keep that under `if __name__ == \"__main__\":`)")
    message = " ".join(str(error).split()) or "(no message)"
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + " ..."
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not _is_ours(f.filename)]
    mine = [f for f in frames if origin is not None and f.filename == origin]
    frame = (mine or frames or [None])[-1]
    where = f" ({frame.filename}:{frame.lineno})" if frame is not None else ""
    return f"{type(error).__name__}: {message}{where}"


def _is_ours(filename: str) -> bool:
    """Frames of this module and of importlib's machinery, which say nothing about the user's code."""
    return filename == __file__ or filename.startswith("<frozen importlib")


def _torchvision():
    try:
        import torchvision
    except ImportError as error:
        raise ImportError(_TORCHVISION_HINT.format(torch=torch.__version__)) from error
    return torchvision


def torchvision_model(name: str, weights_path: str | os.PathLike | None = None, **kwargs: Any) -> torch.nn.Module:
    """Build a torchvision model by name, with weights from a local file (never downloaded).

    Parameters
    ----------
    name : str
        A name from ``torchvision.models.list_models()``, e.g. ``"vgg16"``, ``"alexnet"``.
    weights_path : str or path, optional
        A state dict saved with ``torch.save(model.state_dict(), path)``, loaded with
        ``weights_only=True``. Without it the weights are random (torchvision's initialisation).
    **kwargs
        Passed to ``torchvision.models.get_model`` (e.g. ``num_classes``).

    Returns
    -------
    torch.nn.Module
        In eval mode, on the CPU.

    Raises
    ------
    ImportError
        If torchvision is not installed.
    ValueError
        For an unknown name (listing the known ones), or a ``weights=`` argument (downloads).
    """
    if "weights" in kwargs:
        raise ValueError("torchvision weights enums download files; save a state dict locally and pass "
                         "weights_path= instead")
    torchvision = _torchvision()
    known = torchvision.models.list_models()
    if name not in known:
        raise ValueError(f"unknown torchvision model {name!r}; known: {', '.join(sorted(known))}")
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {str(path)!r} not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval()


def torchvision_dataset(name: str, root: str | os.PathLike, **kwargs: Any) -> torch.utils.data.Dataset:
    """A torchvision data set from files already on disk, with images as float tensors in ``[0, 1]``.

    Parameters
    ----------
    name : str
        A class in ``torchvision.datasets``, e.g. ``"CIFAR10"``, ``"ImageFolder"``, ``"STL10"``.
    root : str or path
        Where the data set's files are.
    **kwargs
        Passed to the data set (``train=False``, ``split="test"``...). ``download=True`` is refused;
        ``transform`` defaults to ``torchvision.transforms.ToTensor()``.

    Returns
    -------
    torch.utils.data.Dataset
        Items ``(image, label)``; ``classes`` is available where torchvision provides it.

    Raises
    ------
    ImportError
        If torchvision is not installed.
    ValueError
        For an unknown name or ``download=True``.
    """
    if kwargs.get("download"):
        raise ValueError("nsi-widgets never downloads data; put the files under root and omit download=")
    torchvision = _torchvision()
    cls = getattr(torchvision.datasets, name, None)
    if not isinstance(cls, type):
        known = sorted(n for n in dir(torchvision.datasets) if isinstance(getattr(torchvision.datasets, n), type))
        raise ValueError(f"unknown torchvision dataset {name!r}; known: {', '.join(known)}")
    kwargs.setdefault("transform", torchvision.transforms.ToTensor())
    if "download" in cls.__init__.__code__.co_varnames:
        kwargs["download"] = False
    return cls(str(root), **kwargs)
