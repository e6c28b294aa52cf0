"""The ``nsi-widgets`` command: index a model, summarise an index, write a report, open JupyterLab.

    nsi-widgets index MODEL DATA -o OUT.npz [--layers ...] [--top-n 100] ...
    nsi-widgets info OUT.npz
    nsi-widgets report OUT.npz -o page.html
    nsi-widgets demo [--out DIR]          # index the embedded default, write the index and a report
    nsi-widgets lab                       # JupyterLab on the quickstart notebook

Also ``python -m nsi_widgets``; under ``torchrun --nproc_per_node K -m nsi_widgets index ...`` the
index runs distributed (rank 0 writes the file and prints). A user error (a bad argument, model, data
or file) prints one line ``nsi-widgets <command>: error: ...`` and exits with status 2; outputs are
checked before any work starts. ``--debug`` shows the traceback as well.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


def _user_errors() -> tuple[type, ...]:
    """The exception types that are the user's to fix (printed as one line, never a traceback)."""
    from .annotations import AnnotationStoreError
    from .core.errors import NsiError

    return (CommandError, NsiError, AnnotationStoreError, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError)


def _load_model(spec: str):
    from . import zoo

    if spec in zoo.available():
        model, _ = zoo.load(spec)
        return model
    if ":" not in spec:
        raise CommandError(f"unknown model {spec!r}: give a zoo name ({', '.join(zoo.available())}) or "
                           "'module:factory' / 'file.py:factory' returning a torch.nn.Module")
    try:
        return zoo.load_factory(spec)
    except (ImportError, AttributeError, TypeError, ValueError, SyntaxError) as err:
        raise CommandError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    except Exception as err:  # noqa: BLE001 - the user's factory raised: their code, one line
        first = str(err).splitlines()[0] if str(err) else ""
        raise CommandError(f"the model factory {spec!r} raised {type(err).__name__}: {first}") from err


def _load_data(spec: str, image_size: int | None, skip_bad_images: bool = False):
    from . import zoo

    if spec in zoo.available():
        _, data = zoo.load(spec)
        return data
    path = Path(spec)
    if not path.exists():
        raise CommandError(f"data {spec!r} is neither a zoo name ({', '.join(zoo.available())}) nor an "
                           "existing folder of images (one subfolder per class)")
    if not path.is_dir():
        raise CommandError(f"data {spec!r} is a file; give a folder of images (one subfolder per class)")
    data = zoo.ImageFolderDataset(path, size=image_size, skip_bad_images=skip_bad_images)
    if skip_bad_images and data.skipped:
        print(f"skipped {len(data.skipped)} image files that cannot be read (first: {data.skipped[0][0]})",
              file=sys.stderr)
    return data


def _preprocess(spec: str | None):
    """``none`` or ``imagenet`` (the usual mean/std normalisation of torchvision models)."""
    if spec in (None, "none"):
        return None
    import torch

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return lambda x: (x - mean.to(x.device)) / std.to(x.device)


def _default_layers(model) -> list[str]:
    from . import zoo

    layers = zoo.conv_layers(model)
    if not layers:
        raise CommandError("no conv layers found in this model: pass --layers (see nsi_widgets.list_layers(model))")
    return layers


def cmd_index(args) -> int:
    import nsi_widgets as nsi
    from .core import distributed
    from .core.storage import check_output_path
    from .index.results import index_path

    out = index_path(args.output)
    check_output_path(out, overwrite=args.force, what="index file")
    if args.checkpoint:
        check_output_path(Path(args.checkpoint), overwrite=True, what="checkpoint")
    device = args.device
    if distributed.started_by_launcher():
        device = distributed.init_from_environment(args.dist_timeout, device)
    model = _load_model(args.model)
    data = _load_data(args.data, args.image_size, args.skip_bad_images)
    layers = args.layers or _default_layers(model)
    idx = nsi.index_neurons(model, data, layers, top_n=args.top_n, batch_size=args.batch_size, device=device,
                            progress=not args.no_progress, indexes=tuple(args.indexes), gray=args.gray,
                            checkpoint=args.checkpoint, num_workers=args.num_workers,
                            preprocess=_preprocess(args.preprocess), skip_nonfinite=args.skip_nonfinite)
    if distributed.is_main():
        written = idx.save(out)
        print(idx.summary())
        print(f"wrote {written}")
    return 0


def _load_index(path):
    from .index.results import load_index

    return load_index(path)


def cmd_info(args) -> int:
    idx = _load_index(args.index)
    print(idx.summary())
    _print_most_selective(idx, args.top)
    return 0


def _print_most_selective(idx, top: int) -> None:
    import numpy as np

    for L in idx.values():
        for score in ("color_selectivity", "class_selectivity"):
            if score in L.scores and np.isfinite(L.scores[score]).any():
                values = np.where(np.isfinite(L.scores[score]), L.scores[score], -np.inf)
                best = np.argsort(-values, kind="stable")[:top]
                shown = ", ".join(f"{u} ({values[u]:.2f})" for u in best)
                print(f"  {L.name}: most {score.split('_')[0]}-selective units: {shown}")


def cmd_report(args) -> int:
    from .core.storage import check_output_path

    check_output_path(Path(args.output), overwrite=True, what="report page")
    idx = _load_index(args.index)
    store = None
    if args.annotations:
        from .annotations import AnnotationStore

        author = args.author
        if author is None:
            with AnnotationStore(args.annotations, index=idx, read_only=True) as probe:
                authors = probe.authors()
            if len(authors) > 1:
                raise CommandError(f"the store holds annotations by {', '.join(authors)}: choose one with --author")
            author = authors[0] if authors else None
        store = AnnotationStore(args.annotations, index=idx, read_only=True, author=author)
    from .widgets import export_html

    path = export_html(idx, args.output, annotations=store)
    print(f"wrote {path or args.output}")
    return 0


def cmd_demo(args) -> int:
    from .core.storage import check_output_path

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {str(out)!r} is a file; give a folder for the demo's index and report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CommandError(f"cannot create the folder {str(out)!r}: {err.strerror}") from None
    index_path = out / "shapes-index.npz"
    for path in (index_path, out / "report.html"):
        check_output_path(path, overwrite=True, what="demo output")
    cmd_index(argparse.Namespace(
        model="shapes", data="shapes", output=str(index_path), force=True, layers=None, top_n=args.top_n,
        batch_size=64, device=None, no_progress=args.no_progress, indexes=["color", "class"], gray="pca",
        checkpoint=None, num_workers=0, preprocess=None, image_size=None, skip_bad_images=False,
        skip_nonfinite=False, dist_timeout=None))
    _print_most_selective(_load_index(index_path), top=5)
    cmd_report(argparse.Namespace(index=str(index_path), output=str(out / "report.html"), annotations=None,
                                  author=None))
    print(f"\nOpen {out / 'report.html'} in a browser, or explore interactively: nsi-widgets lab")
    return 0


def cmd_lab(args) -> int:
    if shutil.which("jupyter") is None and not _has_module("jupyterlab"):
        raise CommandError("JupyterLab is not installed: pip install 'nsi-widgets[lab]' (or jupyterlab)")
    folder = Path(args.dir)
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"--dir {str(folder)!r} is a file; give a folder for the notebook copy")
    try:
        notebook = _quickstart_notebook(folder)
    except OSError as err:
        raise CommandError(f"cannot copy the quickstart notebook into {str(folder)!r}: "
                           f"{err.strerror or err}") from None
    command = [sys.executable, "-m", "jupyterlab", str(notebook.name)] + list(args.lab_args)
    print("running:", " ".join(command))
    return subprocess.call(command, cwd=notebook.parent)


def _quickstart_notebook(folder: Path) -> Path:
    """Copy the packaged quickstart notebook into ``folder`` (never overwriting the user's copy)."""
    from importlib import resources

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "quickstart.ipynb"
    if not target.exists():
        packaged = resources.files("nsi_widgets").joinpath("notebooks/quickstart.ipynb")
        checkout = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"  # editable install
        source = packaged if packaged.is_file() else checkout
        target.write_bytes(source.read_bytes())
    return target


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nsi-widgets", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="index a model's neurons over a dataset and save the index",
                       description="Index the neurons of MODEL over DATA (Rafegas et al. 2019) and save it.")
    p.add_argument("model", help="a zoo name (e.g. 'shapes') or 'module:factory' / 'file.py:factory'")
    p.add_argument("data", help="a zoo name or a folder of images (one subfolder per class)")
    p.add_argument("-o", "--output", required=True, help="index file to write (.npz is appended if missing)")
    p.add_argument("--layers", nargs="+", help="layer names (default: the model's conv layers)")
    p.add_argument("--top-n", type=_positive, default=100, help="top images per neuron (default 100)")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--device", default=None, help="e.g. cpu or cuda:0 (default: the model's)")
    p.add_argument("--indexes", nargs="*", default=["color", "class"],
                   help="indexes to compute (default: color class); also orientation symmetry shape")
    p.add_argument("--gray", choices=["pca", "luminance"], default="pca", help="grey version for the colour index")
    p.add_argument("--checkpoint", help="save the run's state here and resume from it on a rerun")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--preprocess", choices=["none", "imagenet"], default="none",
                   help="input normalisation: none (default) or imagenet mean/std")
    p.add_argument("--image-size", type=_positive, default=None, help="resize folder images to this square size")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out image files that cannot be read (they are listed) instead of stopping")
    p.add_argument("--skip-nonfinite", action="store_true",
                   help="leave out images with NaN or infinite pixels instead of stopping")
    p.add_argument("--dist-timeout", type=_seconds, default=None,
                   help="under torchrun: seconds a process waits for the others (default 300)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true", help="overwrite the output file")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("info", help="summarise an index: layers, neurons, most selective neurons")
    p.add_argument("index")
    p.add_argument("--top", type=_positive, default=5, help="how many top neurons to list per index")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("report", help="write a standalone HTML page of the Explorer (works offline)")
    p.add_argument("index")
    p.add_argument("-o", "--output", required=True, help="HTML file to write")
    p.add_argument("--annotations", help="an annotation store (.sqlite) to include")
    p.add_argument("--author", help="whose annotations to show (default: the store's only author)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="index the embedded default and write the index and a report")
    p.add_argument("--out", default="nsi-demo", help="output folder (default nsi-demo)")
    p.add_argument("--top-n", type=_positive, default=100)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("lab", help="open JupyterLab on the quickstart notebook")
    p.add_argument("--dir", default="nsi-notebooks", help="folder for the notebook copy (default nsi-notebooks)")
    p.add_argument("lab_args", nargs=argparse.REMAINDER, help="further arguments for jupyter lab")
    p.set_defaults(func=cmd_lab)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"nsi-widgets {args.command}: interrupted (with --checkpoint, rerun the command to resume)",
              file=sys.stderr)
        return 130
    except _user_errors() as err:
        if args.debug:
            raise
        print(f"nsi-widgets {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename!r}"
    text = " ".join(str(err).split()) if str(err) else type(err).__name__
    return text


if __name__ == "__main__":
    sys.exit(main())
