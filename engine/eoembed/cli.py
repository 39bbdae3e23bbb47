"""The ``eoembed`` command line: list and describe models, embed vector files, run the demo.

Bad input ends with exit code 2 and one sentence on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import EoembedError, SpecError

EXIT_BAD_INPUT = 2


def _temporal(args: argparse.Namespace):
    from .specs import TemporalSpec

    if args.year is not None and (args.start or args.end):
        raise SpecError("give either --year or --start/--end, not both")
    if args.year is not None:
        return TemporalSpec.year(args.year)
    if args.start or args.end:
        if not (args.start and args.end):
            raise SpecError("--start and --end go together (end is exclusive), e.g. --start 2022-06-01 --end 2022-09-01")
        return TemporalSpec.range(args.start, args.end)
    return None


def _source(args: argparse.Namespace, models: list[str] = ()) -> tuple[Any, dict[str, Any]]:
    if args.source == "local":
        if not args.imagery and models and all(_is_product(m) for m in models):
            return "local", {}  # products read their own data
        if not args.imagery:
            raise SpecError("--imagery PATH is needed with the local source (GeoTIFF/VRT files or folders)")
        return "local", {"paths": args.imagery}
    opts: dict[str, Any] = {}
    if args.source == "stac" and args.stac_url:
        opts["url"] = args.stac_url
    if args.source == "gee" and args.ee_project:
        opts["project"] = args.ee_project
    return args.source, opts


def _is_product(model: str) -> bool:
    from .api import describe_model

    return describe_model(model).precomputed


def cmd_models(args: argparse.Namespace) -> int:
    from .api import describe_model, list_models

    if args.json:
        print(json.dumps({m: describe_model(m).to_dict() for m in list_models()}, indent=2, default=str))
        return 0
    for m in list_models():
        card = describe_model(m)
        notes = [f"aliases: {', '.join(card.aliases)}"] if card.aliases else []
        if card.precomputed:
            notes.append("precomputed product, no weights")
        if card.noncommercial:
            notes.append(f"NON-COMMERCIAL licence ({card.license})")
        extra = f" [{'; '.join(notes)}]" if notes else ""
        print(f"{m:28s} {card.family:10s} dim={card.dim:<5d} {'/'.join(card.outputs):12s} "
              f"{card.summary}{extra}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from .api import describe_model

    card = describe_model(args.model).to_dict()
    if args.json:
        print(json.dumps(card, indent=2, default=str))
        return 0
    width = max(len(k) for k in card)
    for k, v in card.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, list):
            v = ", ".join(map(str, v))
        print(f"{k:>{width}}: {v}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import get_embeddings_batch
    from .embedders.registry import get_embedder
    from .export import safe_name, write_geoparquet, write_geotiff
    from .export.outdir import output_folder
    from .features import read_places, require_unique_ids
    from .preflight import check_model_loads
    from .specs import OutputSpec

    places = read_places(args.input, id_field=args.id_field, buffer_m=args.buffer)
    require_unique_ids(places)
    temporal = _temporal(args)
    source, options = _source(args, [args.model])
    check_model_loads(args.model, get_embedder(args.model, device=args.device, weights=args.weights))
    output = OutputSpec.grid() if args.output == "grid" else OutputSpec.pooled(args.pooling)
    vectors, done = [], []
    step = max(1, args.chunk_size)
    with output_folder(args.out) as out, \
            tqdm(total=len(places), unit="place", disable=args.quiet or not sys.stderr.isatty()) as bar:
        for i in range(0, len(places), step):
            chunk = places[i : i + step]
            res = get_embeddings_batch(
                args.model, [p.spatial for p in chunk], temporal, output=output, source=source,
                source_options=options, device=args.device, weights=args.weights,
                model_config=_model_options(args.model_option, [args.model]).get(args.model.strip().lower()),
            )
            for p, e in zip(chunk, res):
                if output.mode == "grid":
                    write_geotiff(e, out / f"{safe_name(p.id)}.tif")
                else:
                    vectors.append(e.to_numpy())
                done.append((p, e.meta))
            bar.update(len(chunk))
        if output.mode == "pooled":
            import numpy as np

            meta = {"model": args.model, "window": done[0][1].get("window"), "meta": done[0][1]}
            path = write_geoparquet(
                out / f"{safe_name(args.model)}_pooled.parquet", [p.id for p, _ in done],
                [p.geometry for p, _ in done], np.stack(vectors), places[0].crs, model=args.model, meta=meta,
            )
    if output.mode == "pooled":
        print(f"wrote {len(done)} embeddings of {vectors[0].shape[0]} dims to {path}")
    else:
        print(f"wrote {len(done)} grid GeoTIFFs to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), model=args.model)
    return 0


def _add_place_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", "-i", required=True, help="vector file of places (GeoJSON, GeoPackage, Shapefile; any CRS)")
    p.add_argument("--id-field", help="attribute holding each feature's id (default: row number)")
    p.add_argument("--buffer", type=float, default=320.0, help="half-side in metres of the square around points (default 320)")
    p.add_argument("--source", choices=("local", "stac", "gee"), default="local", help="imagery source (default local)")
    p.add_argument("--imagery", nargs="+", help="local imagery: GeoTIFF/COG/VRT files or folders")
    p.add_argument("--stac-url", help="STAC API: 'earth-search', 'planetary-computer' or a URL")
    p.add_argument("--ee-project", help="Google Cloud project for Earth Engine (default: $EE_PROJECT)")
    p.add_argument("--year", type=int, help="calendar year to composite")
    p.add_argument("--start", help="window start, ISO date (included)")
    p.add_argument("--end", help="window end, ISO date (excluded)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    p.add_argument("--weights", help="checkpoint override: hf:<repo>[@rev] or a local path")
    p.add_argument("--model-option", action="append", default=[], metavar="[MODEL:]KEY=VALUE",
                   help="a model option, e.g. alphaearth:layout=bucket or tessera:store=URL (repeatable)")


def _model_options(items: list[str], models: list[str]) -> dict[str, dict[str, Any]]:
    """``[MODEL:]KEY=VALUE`` options per model id (without MODEL: for every model given)."""
    out: dict[str, dict[str, Any]] = {m.strip().lower(): {} for m in models}
    for item in items:
        head, eq, value = item.partition("=")
        model, colon, key = head.rpartition(":")
        if not eq or not key.strip():
            raise SpecError(f"--model-option {item!r} must look like KEY=VALUE or MODEL:KEY=VALUE")
        targets = [model.strip().lower()] if colon else list(out)
        for t in targets:
            if t not in out:
                raise SpecError(f"--model-option {item!r} names model {model!r}, which is not among {', '.join(out)}")
            out[t][key.strip()] = _option_value(value.strip())
    return out


def _option_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def cmd_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import export_batch
    from .export.outdir import output_folder

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise SpecError("--models needs at least one model id, e.g. --models rcf,galileo-nano")
    if args.weights and len(models) > 1:
        raise SpecError("--weights applies to one model; give a single --models id with it")
    for name in ("chunk_size", "workers"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SpecError(f"--{name.replace('_', '-')} must be at least 1")
    source, options = _source(args, models)
    executor, scheduler = ("dask", args.dask) if args.dask else ("thread", None)
    show = not args.quiet and sys.stderr.isatty()
    with tqdm(total=0, unit="item", disable=not show, dynamic_ncols=True) as bar:

        def progress(done: int, total: int, info: dict[str, Any]) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)
            bar.set_postfix(ok=info.get("ok"), failed=info.get("failed"), skipped=info.get("skipped"), refresh=False)

        with output_folder(args.out) as out:
            summary = export_batch(
                args.input, _temporal(args), models, out, outputs=args.output, source=source,
                source_options=options, chunk_size=args.chunk_size, workers=args.workers, executor=executor,
                scheduler=scheduler, retries=args.retries, continue_on_error=not args.no_continue_on_error,
                progress=progress, device=args.device, weights=args.weights, id_field=args.id_field,
                buffer_m=args.buffer, model_config=_model_options(args.model_option, models),
            )
    print(summary)
    for f in summary.failures[:5]:
        print(f"  failed: {f['id']} × {f['model']} at {f['stage']}: {f['error']}", file=sys.stderr)
    if summary.failed:
        print(f"eoembed: {summary.failed} items failed (see {Path(args.out) / 'manifest.jsonl'}); "
              "rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def _add_export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="embed many places with several models: resumable batch export")
    p.add_argument("--models", "-m", default="rcf", help="comma-separated model ids (default rcf)")
    _add_place_options(p)
    p.add_argument("--output", choices=("pooled", "grid", "both"), default="pooled",
                   help="pooled vectors (GeoParquet + NPZ), grids (GeoTIFF + NetCDF) or both")
    p.add_argument("--out", "-o", required=True, help="output folder (rerun with the same folder to resume)")
    p.add_argument("--chunk-size", type=int, default=256, help="places per chunk; bounds memory (default 256)")
    p.add_argument("--workers", type=int, default=None,
                   help="places fetched at once (default: chosen for the source, few local, many remote)")
    p.add_argument("--dask", metavar="SCHEDULER", help="run on a Dask cluster: a scheduler address, or local:N")
    p.add_argument("--retries", type=int, default=2, help="retries per item at fetch, inference and write (default 2)")
    p.add_argument("--no-continue-on-error", action="store_true", help="stop at the first item that fails")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eoembed", description="Embeddings from remote-sensing foundation models.")
    parser.add_argument("--version", action="version", version=f"eoembed {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the models")
    p.add_argument("--json", action="store_true", help="full model cards as JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("describe", help="what a model needs and gives (loads no weights)")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("embed", help="embed every feature of a vector file")
    p.add_argument("--model", "-m", default="rcf", help="model id (default rcf; see `eoembed models`)")
    _add_place_options(p)
    p.add_argument("--output", choices=("pooled", "grid"), default="pooled", help="one vector per place, or a grid GeoTIFF")
    p.add_argument("--pooling", choices=("mean", "max"), default="mean")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--chunk-size", type=int, default=64, help="places fetched and embedded together (default 64)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("demo", help="embed the bundled real Sentinel-2 demo patches offline")
    p.add_argument("--out", "-o", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--model", default="rcf", help="model id (default rcf, needs no download)")
    p.set_defaults(func=cmd_demo)
    _add_export_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eoembed`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        # rasterio can report GDAL's note about another thread's in-memory mask dataset as a
        # NotGeoreferencedWarning (results are unaffected); it is not the user's business
        from rasterio.errors import NotGeoreferencedWarning

        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except EoembedError as exc:
        print(f"eoembed: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("eoembed: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug or os.environ.get("EOEMBED_DEBUG"):
            raise
        print(f"eoembed: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
