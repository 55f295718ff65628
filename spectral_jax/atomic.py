"""Write files and folders so that readers never see half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def _give_plain_mode(path: Path, mode: int) -> None:
  """mkstemp and mkdtemp make private files (0600) and folders (0700), as
  does safetensors: give ``path`` the mode (0o666 a file, 0o777 a folder) a
  plain open or mkdir would have under the umask."""
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
  """Yields a temporary path beside ``path``; renames it onto ``path`` only if
  the block finishes, and removes it if the block raises.

  The temporary name keeps the suffix of ``path`` so that writers which pick
  a format from the extension (imageio, cv2.imwrite, np.savez) still work.

  Raises:
    OSError: the block's, or the rename's; one that names no file (a full
      disk: ``write()`` does not say where) or only the temporary one is
      raised again naming ``path``.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                             dir=path.parent)
  os.close(fd)
  tmp = Path(tmp)
  try:
    yield tmp
    _give_plain_mode(tmp, 0o666)
    os.replace(tmp, path)
  except OSError as error:
    if error.errno is None or error.filename not in (None, str(tmp), tmp):
      raise
    # OSError(errno, ...) makes the subclass the errno calls for.
    raise OSError(error.errno, error.strerror, str(path)) from error
  finally:
    tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike):
  """Yields a new empty folder beside ``path``; renames it onto ``path``
  (replacing a folder there) only if the block finishes, and removes it if
  the block raises. A folder that was there stays whole until the new one
  takes its place, and comes back if the rename fails."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
  try:
    yield tmp
    _give_plain_mode(tmp, 0o777)
    for file in tmp.iterdir():
      _give_plain_mode(file, 0o666)
    if path.exists():
      # A folder cannot be renamed onto a non-empty one: move the old one
      # aside first, and back if the new one cannot take its place.
      old = tmp.with_suffix(".old")
      os.rename(path, old)
      try:
        os.rename(tmp, path)
      except OSError:
        os.rename(old, path)
        raise
      shutil.rmtree(old)
    else:
      os.rename(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
