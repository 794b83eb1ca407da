"""The importers of a directory (``CONVEYOR_IMPORTERS_DIR``): one declaration file each.

Files are read again when they change (size or mtime), so adding or editing an importer
needs no restart. A file that is not a valid declaration is left out, logged and reported by
``conveyor importers list``; nobody can run it. An importer the caller may not run answers
exactly like one that does not exist (404), so its existence is not revealed.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from core.api_keys import Principal
from core.errors import NotFound
from core.imports.declaration import SUFFIXES, InvalidDeclaration, read_declaration
from core.imports.importer import Importer

log = structlog.get_logger(__name__)


class ImporterNotFound(NotFound):
    """No such importer (or you may not run it)."""

    code = "importer_not_found"


@dataclass(frozen=True)
class Entry:
    path: Path
    stamp: tuple[int, int]  # (mtime_ns, size)
    importer: Importer | None
    error: str | None


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _read(path: Path, stamp: tuple[int, int]) -> Entry:
    try:
        return Entry(path, stamp, read_declaration(path), None)
    except InvalidDeclaration as error:
        log.error("importer.invalid_declaration", path=str(path), error=error.message)
        return Entry(path, stamp, None, error.message)


class ImporterRegistry:
    """Declarations in ``directory``, re-read when their file changes. Thread-safe."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._entries: dict[Path, Entry] = {}
        self._lock = threading.Lock()

    def _files(self) -> list[Path]:
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as error:
            log.error("importer.directory_unreadable", path=str(self.directory), error=str(error))
            return []
        return [self.directory / n for n in names if n.endswith(SUFFIXES) and n[0] != "."]

    def entries(self) -> list[Entry]:
        """Every declaration file, valid or not, in name order."""
        with self._lock:
            current: dict[Path, Entry] = {}
            for path in self._files():
                stamp = _stamp(path)
                if stamp is None:
                    continue
                cached = self._entries.get(path)
                current[path] = cached if cached and cached.stamp == stamp else _read(path, stamp)
            self._entries = current
            entries = list(current.values())
        return _without_doubles(entries)

    def importers(self) -> dict[str, Importer]:
        return {e.importer.name: e.importer for e in self.entries() if e.importer is not None}

    def get(self, name: str) -> Importer:
        """The importer called ``name``, whoever asks (the worker, the CLI)."""
        importer = self.importers().get(name)
        if importer is None:
            raise ImporterNotFound(f"No importer {name!r}.", where={"field": "importer"})
        return importer

    def get_for(self, name: str, principal: Principal) -> Importer:
        """The importer called ``name`` if ``principal`` may run it; else ImporterNotFound,
        exactly as if it did not exist."""
        importer = self.importers().get(name)
        if importer is None or not importer.may_run(principal):
            raise ImporterNotFound(f"No importer {name!r}.", where={"field": "importer"})
        return importer

    def visible_to(self, principal: Principal) -> list[Importer]:
        return [i for i in self.importers().values() if i.may_run(principal)]


def _without_doubles(entries: list[Entry]) -> list[Entry]:
    """Two files with one stem (products.yaml and products.json) declare nothing."""
    stems: dict[str, int] = {}
    for entry in entries:
        stems[entry.path.stem] = stems.get(entry.path.stem, 0) + 1
    return [
        Entry(e.path, e.stamp, None, f"{e.path}: importer {e.path.stem!r} is declared twice")
        if stems[e.path.stem] > 1
        else e
        for e in entries
    ]
