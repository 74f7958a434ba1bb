"""An in-memory Beam file system (``memtest://``) for offline tests of the non-local
branches (``gs://`` on Dataflow): Beam 2.77 registers none of its own offline.

Beam finds file systems by subclass, so importing this module registers the scheme in
this process. It is a storage double (a dict of bytes), not the code under test.
"""

from __future__ import annotations

import io

from apache_beam.io.filesystem import FileMetadata, FileSystem

SCHEME = "memtest"


def _register() -> type:
    """The one ``memtest`` file system class (this file may be imported under two module
    names, e.g. by the doctest collector and by :func:`load`)."""
    for cls in FileSystem.get_all_subclasses():
        if cls.scheme() == SCHEME:
            return cls
    return _define()


def _define() -> type:
    files: dict[str, bytes] = {}

    class _Writer(io.BytesIO):
        def __init__(self, path: str) -> None:
            super().__init__()
            self._path = path

        def close(self) -> None:
            files[self._path] = self.getvalue()
            super().close()

    class MemTestFileSystem(_MemBase):
        FILES = files
        Writer = _Writer

    return MemTestFileSystem


class _MemBase(FileSystem):
    """Flat object store semantics, like GCS (no directories)."""

    FILES: dict[str, bytes] = {}
    Writer: type = io.BytesIO

    @classmethod
    def scheme(cls) -> str | None:
        # Never None for the base: Beam matches local paths by scheme None, and a
        # second None would make every local path ambiguous ("more than one filesystem").
        return SCHEME if cls is not _MemBase else f"{SCHEME}-base"

    def join(self, basepath: str, *paths: str) -> str:
        out = basepath
        for p in paths:
            out = out.rstrip("/") + "/" + p.lstrip("/")
        return out

    def split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path) -> None:
        pass

    def has_dirs(self) -> bool:
        return False

    def _list(self, dir_or_prefix):
        for path, data in sorted(self.FILES.items()):
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(data))

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        return self.Writer(path)

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        if path not in self.FILES:
            raise FileNotFoundError(path)
        return io.BytesIO(self.FILES[path])

    def copy(self, source_file_names, destination_file_names) -> None:
        for s, d in zip(source_file_names, destination_file_names, strict=True):
            self.FILES[d] = self.FILES[s]

    def rename(self, source_file_names, destination_file_names) -> None:
        for s, d in zip(source_file_names, destination_file_names, strict=True):
            self.FILES[d] = self.FILES.pop(s)

    def exists(self, path: str) -> bool:
        return path in self.FILES

    def size(self, path: str) -> int:
        return len(self.FILES[path])

    def last_updated(self, path) -> float:
        return 0.0

    def checksum(self, path) -> str:
        return str(hash(self.FILES[path]))

    def metadata(self, path):
        return FileMetadata(path, len(self.FILES[path]))

    def delete(self, paths) -> None:
        for p in paths:
            self.FILES.pop(p, None)


def upload_tree(local_dir: str, url: str) -> None:
    """Copy every file under ``local_dir`` to ``url`` (as a flat object store)."""
    import os

    for root, _dirs, files in os.walk(local_dir):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, local_dir).replace(os.sep, "/")
            with open(path, "rb") as f:
                FILES[f"{url.rstrip('/')}/{rel}"] = f.read()


MemTestFileSystem = _register()
FILES: dict[str, bytes] = MemTestFileSystem.FILES
