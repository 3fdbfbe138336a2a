"""Where a study's data lives: the instance folder (Flask's term) with the secret key, the
SQLite database and the served image copies, found the same way by every command and the app.

The instance folder is, first match wins:

1. ``HPRUNE_INSTANCE`` (``hprune study --instance``);
2. in a source checkout (``pyproject.toml`` of hprune beside the packages, as with an editable
   install or ``PYTHONPATH``): ``<checkout>/instance``, for development;
3. otherwise the user's data folder, ``platformdirs.user_data_path("hprune") / "instance"``:
   ``~/.local/share/hprune/instance`` on Linux (``$XDG_DATA_HOME/hprune/instance`` when that
   is set), ``~/Library/Application Support/hprune/instance`` on macOS,
   ``%LOCALAPPDATA%\\hprune\\instance`` on Windows.

Never inside the installed packages: a virtualenv rebuilt for an upgrade would take the
study's answers with it, and a shared site-packages may not be writable. Versions before
this one kept it in ``<site-packages>/instance``; finding data there and none at the new
place is an error that says how to move it. ``DATABASE_URL`` overrides the database alone,
``HPRUNE_MEDIA_DIR`` the image copies alone.
"""

from __future__ import annotations

import os
import site
import sysconfig
import tomllib
from pathlib import Path

import platformdirs

from hprune.errors import UserError

PACKAGES_ROOT = Path(__file__).resolve().parents[1]  # the checkout, or site-packages
SECRET_KEY_FILE = "secret_key"
DATABASE_FILE = "study.sqlite3"


def is_source_checkout(root: Path = PACKAGES_ROOT) -> bool:
    """Whether the packages are run from hprune's source tree rather than installed."""
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return project.get("project", {}).get("name") == "hprune"


def user_instance_folder() -> Path:
    """The default instance folder of an installed hprune: in the user's data folder."""
    return platformdirs.user_data_path("hprune") / "instance"


def instance_folder(root: Path = PACKAGES_ROOT) -> Path:
    """The instance folder (module docstring), absolute; nothing is created."""
    if os.environ.get("HPRUNE_INSTANCE"):
        return Path(os.environ["HPRUNE_INSTANCE"]).resolve()
    if is_source_checkout(root):
        return root / "instance"
    folder = user_instance_folder()
    old = root / "instance"
    if not folder.exists() and old.is_dir():
        raise UserError(
            f"the study data is still in the old default folder {old}, inside the installed "
            f"packages: move it with  mkdir -p '{folder.parent}' && mv '{old}' '{folder}'"
        )
    return folder


def demo_instance_folder(root: Path | None = None) -> Path | None:
    """Where ``make demo`` keeps its study in a source checkout, if it has set one up."""
    root = root or PACKAGES_ROOT
    folder = root / "instance" / "demo"
    return folder if is_source_checkout(root) and (folder / DATABASE_FILE).is_file() else None


def database_url(instance: Path) -> str:
    """``DATABASE_URL``, else the SQLite file in the instance folder."""
    return os.environ.get("DATABASE_URL") or f"sqlite:///{instance / DATABASE_FILE}"


def media_folder(instance: Path) -> Path:
    """Where the served image copies live: ``HPRUNE_MEDIA_DIR``, else ``<instance>/media``."""
    return Path(os.environ.get("HPRUNE_MEDIA_DIR") or instance / "media")


def secret_key(instance: Path) -> str | None:
    """``SECRET_KEY``, else the key ``hprune study init`` wrote to the instance folder."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = instance / SECRET_KEY_FILE
    return path.read_text().strip() if path.is_file() else None


def install_folders(root: Path = PACKAGES_ROOT) -> list[Path]:
    """The folders that installed packages live in (site-packages and the like)."""
    paths = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    paths.update(site.getsitepackages())
    paths.add(site.getusersitepackages())
    if not is_source_checkout(root):
        paths.add(str(root))
    return sorted({Path(p).resolve() for p in paths if p})


def refuse_inside_install(path: Path, what: str, root: Path = PACKAGES_ROOT) -> None:
    """A one-line :class:`UserError` if ``path`` lies inside the installed packages, where an
    upgrade or a rebuilt virtualenv would delete it."""
    path = path.resolve()
    for folder in install_folders(root):
        if path == folder or folder in path.parents:
            raise UserError(
                f"refusing to keep the {what} inside the installed packages ({path} is in "
                f"{folder}): choose a folder of your own with --instance or HPRUNE_INSTANCE"
            )
