"""``lrf registry list|show|promote|rollback``: the model registry on S3 from the command line.

Wiring only: :func:`add_registry_parser` adds the ``registry`` command to the ``lrf`` parser
and :func:`cmd_registry` runs it; the work is done by :mod:`tasks.registry`. Errors are
:class:`~lrf_core.errors.LRFError` subclasses, which ``lrf`` prints as one line.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

REGISTRY_DESCRIPTION = """\
Browse the model registry on S3 and move its aliases. A published version is immutable: its
files and manifest.json live under s3://BUCKET/PREFIX/models/NAME/versions/VERSION/. An
alias (e.g. production) points at one version with status `passed`; every move is kept in
its history, and rollback walks that history back.

Location: --bucket/--prefix/--endpoint-url, else $LRF_REGISTRY_BUCKET, $LRF_REGISTRY_PREFIX
(default lrflow) and $AWS_ENDPOINT_URL. For a local registry: eval "$(infra/local/s3.sh start)".
"""

REGISTRY_EPILOG = """\
examples:
  lrf registry list                                   models, their versions and aliases
  lrf registry list digits-cnn                        versions: status, created, files, aliases
  lrf registry show digits-cnn 3f2a9c1b0d4e --json    manifest: files, sha256, gate, lineage
  lrf registry show digits-cnn @production            the version an alias points at
  lrf registry promote digits-cnn 3f2a9c1b0d4e --alias production
  lrf registry rollback digits-cnn --alias production

flows read models as registry:NAME@ALIAS or registry:NAME/VERSION.
"""


def add_registry_parser(subparsers: Any, formatter_class: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    """Add ``registry`` and its actions to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    registry = subparsers.add_parser(
        "registry", help="list, show, promote and roll back published models (S3 registry)",
        description=REGISTRY_DESCRIPTION, epilog=REGISTRY_EPILOG, formatter_class=formatter_class,
    )
    common = _common_options()
    actions = registry.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[common], formatter_class=formatter_class,
                                 help="list models, or the versions of one model",
                                 description="Without NAME: every model with a published version, its version "
                                 "count and aliases. With NAME: its versions, oldest first.")
    listing.add_argument("name", nargs="?", help="model name")
    show = actions.add_parser("show", parents=[common], formatter_class=formatter_class,
                              help="show a version's manifest and the aliases pointing at it",
                              description="The manifest of a version: status, gate summary, lineage, and "
                              "every file with its size and sha256.")
    show.add_argument("name", help="model name")
    show.add_argument("version", help="version id, or @ALIAS for the version an alias points at")
    promote = actions.add_parser("promote", parents=[common], formatter_class=formatter_class,
                                 help="point an alias at a version that passed the gate",
                                 description="Point ALIAS at VERSION (status must be `passed`). The alias is "
                                 "changed by a conditional write: if someone moved it meanwhile, nothing is "
                                 "written and the command fails; re-run it.")
    promote.add_argument("name", help="model name")
    promote.add_argument("version", help="version id (see `lrf registry list NAME`)")
    promote.add_argument("--alias", required=True, help="alias to move, e.g. production or staging")
    rollback = actions.add_parser("rollback", parents=[common], formatter_class=formatter_class,
                                  help="move an alias back to the version it pointed at before",
                                  description="Move ALIAS back one step in its history (repeat to go further).")
    rollback.add_argument("name", help="model name")
    rollback.add_argument("--alias", required=True, help="alias to roll back, e.g. production")
    return registry


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bucket", help="registry bucket (default $LRF_REGISTRY_BUCKET)")
    common.add_argument("--prefix", help="key prefix in the bucket (default $LRF_REGISTRY_PREFIX or lrflow)")
    common.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint (default $AWS_ENDPOINT_URL, else AWS)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    return common


def cmd_registry(args: argparse.Namespace) -> int:
    """Run ``lrf registry ACTION``; returns the exit status (errors raise ``LRFError``)."""
    from tasks import registry, s3io

    config = registry.RegistryConfig.from_env(_env_with_overrides(args))
    client = s3io.s3_client(config.endpoint_url)
    result = _ACTIONS[args.registry_command](args, config, client)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _RENDER[args.registry_command](result)
    return 0


def _env_with_overrides(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    for option, variable in (("bucket", "LRF_REGISTRY_BUCKET"), ("prefix", "LRF_REGISTRY_PREFIX"),
                             ("endpoint_url", "AWS_ENDPOINT_URL")):
        if getattr(args, option) is not None:
            env[variable] = getattr(args, option)
    return env


# -- actions: each returns the JSON-ready result ------------------------------------------------


def _list(args, config, client) -> dict[str, Any]:
    from tasks import registry

    where = {"registry": config.uri}
    if args.name is None:
        models = registry.list_models(client, config.bucket, config.prefix)
        return {**where, "models": [m.as_dict() for m in models]}
    records = registry.list_versions(client, config.bucket, config.prefix, args.name)
    aliases = registry.read_aliases(client, config.bucket, config.prefix, args.name)
    return {**where, "name": args.name, "versions": [
        {**r.as_dict(), "aliases": sorted(a for a, doc in aliases.items() if doc.version == r.version)}
        for r in records]}


def _show(args, config, client) -> dict[str, Any]:
    from tasks import registry

    version = args.version
    if version.startswith("@"):
        version = registry.resolve(client, config.bucket, config.prefix, args.name, version[1:])
    return registry.show_version(client, config.bucket, config.prefix, args.name, version).as_dict()


def _promote(args, config, client) -> dict[str, Any]:
    from tasks import registry

    before = registry.find_alias(client, config.bucket, config.prefix, args.name, args.alias)
    moved = registry.promote(client, config.bucket, config.prefix, args.name, args.alias, args.version)
    return _moved(args.name, moved, before)


def _rollback(args, config, client) -> dict[str, Any]:
    from tasks import registry

    before = registry.read_alias(client, config.bucket, config.prefix, args.name, args.alias)
    moved = registry.rollback(client, config.bucket, config.prefix, args.name, args.alias)
    return _moved(args.name, moved, before)


def _moved(name: str, moved, before) -> dict[str, Any]:
    return {"name": name, "previous": before.version if before else None, **moved.model_dump(mode="json")}


_ACTIONS = {"list": _list, "show": _show, "promote": _promote, "rollback": _rollback}


# -- human output --------------------------------------------------------------------------------


def _console():
    from rich.console import Console

    return Console(width=max(100, Console().width))


def _table(title: str, columns: list[tuple[str, str]]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column, justify in columns:
        table.add_column(column, justify=justify)
    return table


def _render_list(result: dict[str, Any]) -> None:
    if "models" in result:
        table = _table(f"models in {result['registry']}", [("model", "left"), ("versions", "right"),
                                                            ("latest", "left"), ("aliases", "left")])
        for m in result["models"]:
            aliases = ", ".join(f"{a} → {v}" for a, v in m["aliases"].items())
            table.add_row(m["name"], str(len(m["versions"])), m["versions"][-1] if m["versions"] else "", aliases)
        empty = "no published models yet"
    else:
        table = _table(f"versions of {result['name']} ({result['registry']})",
                       [("version", "left"), ("status", "left"), ("created (UTC)", "left"), ("files", "right"),
                        ("size", "right"), ("aliases", "left")])
        for v in result["versions"]:
            status = v["status"] if v["status"] == "passed" else f"[red]{v['status']}[/red]"
            table.add_row(v["version"], status, v["created_at"], str(v["files"]), _size(v["size"]),
                          ", ".join(v["aliases"]))
        empty = f"model `{result['name']}` has no published versions"
    _console().print(table if table.row_count else empty)


def _render_show(result: dict[str, Any]) -> None:
    manifest = result["manifest"]
    facts = _table(f"{result['name']} {result['version']}", [("", "left"), ("", "left")])
    facts.show_header = False
    for label, value in (("status", manifest["status"]), ("created (UTC)", manifest["created_at"]),
                         ("location", result["uri"]), ("aliases", ", ".join(result["aliases"]) or "none"),
                         ("gate", _compact(manifest["gate"])), ("lineage", _compact(manifest["lineage"]))):
        facts.add_row(label, value)
    files = _table("files", [("key", "left"), ("size", "right"), ("sha256", "left")])
    for key, entry in manifest["files"].items():
        files.add_row(key, _size(entry["size"]), entry["sha256"])
    console = _console()
    console.print(facts)
    console.print(files)


def _render_moved(result: dict[str, Any]) -> None:
    was = f" (was {result['previous']})" if result["previous"] else " (new alias)"
    if result["previous"] == result["version"]:
        was = " (unchanged)"
    _console().print(f"{result['name']}: [bold]{result['alias']}[/bold] → {result['version']}{was}")


def _compact(value: Any, limit: int = 300) -> str:
    from rich.markup import escape

    # JSON brackets must not be read as rich markup.
    text = json.dumps(value, sort_keys=True)
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


_RENDER = {"list": _render_list, "show": _render_show, "promote": _render_moved, "rollback": _render_moved}
