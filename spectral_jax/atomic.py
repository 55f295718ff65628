"""Write files so that readers never see half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
    # mkstemp makes the file private (0600); give it the mode a plain open()
    # would have.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except OSError as error:
    if error.errno is None or error.filename not in (None, str(tmp), tmp):
      raise
    # OSError(errno, ...) makes the subclass the errno calls for.
    raise OSError(error.errno, error.strerror, str(path)) from error
  finally:
    tmp.unlink(missing_ok=True)
