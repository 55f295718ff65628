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
  finally:
    tmp.unlink(missing_ok=True)
