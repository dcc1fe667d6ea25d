"""Small file helpers: every file the project writes lands atomically (temp file, then rename).

Temp files and folders are siblings of their target named ``.{name}.{pid}.{random}.tmp``, so the
next write of the same target can tell which are left over from a process that is gone (killed,
out of power) and remove them: ``clean_temps``. A whole folder is replaced atomically by
``atomic_folder``: written beside the old one, then swapped in by renames.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# .{name}.{pid}.{random}.tmp (a temp file or folder being written) or .old (a folder being replaced)
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<token>[A-Za-z0-9_]+)\.(?P<kind>tmp|old)")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # ours: another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or a platform without signal 0: leave it alone
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def clean_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove what interrupted atomic writes left in ``folder`` (only those for ``name``, if given).

    Only entries of processes that no longer run are touched. A folder swap that was cut between
    its two renames (the old folder moved aside, the new one not yet in place) is finished: the new
    folder was complete before the old one moved, so it takes the final name. Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale: dict[tuple[str, str], dict[str, Path]] = {}
    for p in folder.iterdir():
        m = _TEMP.fullmatch(p.name)
        if m and (name is None or m["name"] == name) and not _alive(int(m["pid"])):
            stale.setdefault((m["name"], m["pid"] + "." + m["token"]), {})[m["kind"]] = p
    removed = []
    for (target_name, _), parts in stale.items():
        target = folder / target_name
        if "old" in parts and not target.exists() and "tmp" in parts:
            os.replace(parts.pop("tmp"), target)  # roll the swap forward
        for p in parts.values():
            _remove(p)
            removed.append(p)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on error delete it.

    A crash mid-write therefore never leaves a half-written file under the final name, and the
    temp files of a killed process are removed by the next write of the same path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb"):
    """An open file to write ``path`` atomically (flushed and fsynced before the rename).

    Writing through a Python file object makes a full disk an ``OSError`` (errno ENOSPC) that names
    the cause, whatever library fills the file (``torch.save(obj, f)`` included).
    """
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            try:
                yield f
                f.flush()
                os.fsync(f.fileno())
            except Exception as err:
                cause = _os_error_in(err)
                if cause is None or cause is err:
                    raise
                # torch.save hits ENOSPC in a write, then fails again closing its zip writer with a
                # RuntimeError ("unexpected pos") that hides the first: surface the OSError.
                raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from err


def _os_error_in(err: BaseException | None) -> OSError | None:
    """The first OSError in an exception's chain (itself, its __cause__ or __context__, ...), else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# --- whole folders ---------------------------------------------------------------------------------
def check_folder_target(path: str | os.PathLike) -> Path:
    """``path`` resolved, if ``atomic_folder`` can (re)place a folder there; else a clear error.

    Refused: an existing file (NotADirectoryError), and the current directory or one of its parents
    (replacing it would pull the folder out from under this process).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"{path} is an existing file, not a folder: give a folder path "
            "(it is created if missing) or move the file away."
        )
    resolved = path.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents or resolved.parent == resolved:
        raise ValueError(
            f"{path} is the current directory or one that contains it; a model folder is replaced "
            f"as a whole, so give a subfolder, e.g. {path / 'model'}."
        )
    return resolved


@contextmanager
def atomic_folder(path: str | os.PathLike, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it replaces ``path`` as a whole, on error it is deleted.

    Whatever the old folder held besides ``keep``-excluded names is carried over (hard links, so no
    bytes are copied): files the caller writes replace their old versions, the caller's own file
    names listed in ``keep`` are never carried over (a new model must not inherit an old tokenizer),
    everything else (a training checkpoint, a model card) stays. The swap is two renames; a kill
    between them is finished by the next ``clean_temps`` of the parent folder, so a reader finds
    either the whole old folder or the whole new one, never a mix.
    """
    path = check_folder_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_temps(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        mode = path.stat().st_mode & 0o7777 if path.is_dir() else 0o777 & ~_umask()
        if path.is_dir():
            for entry in path.iterdir():
                if entry.name not in keep and not (tmp / entry.name).exists():
                    _link_copy(entry, tmp / entry.name)
        os.chmod(tmp, mode)
        _fsync_dir(tmp)
        if path.exists():
            old = tmp.with_name(tmp.name[: -len(".tmp")] + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _link_copy(src: Path, dst: Path) -> None:
    """Carry ``src`` over to ``dst``: hard links where the file system allows, copies elsewhere."""
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src, dst) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported here (Windows): the renames are still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
