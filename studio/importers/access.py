"""Where a browser may import from: only under folders the operator listed (``serve --import-dir DIR``),
never from Gradio's upload folder. A path typed in the browser is resolved (``..`` and links followed)
before it is checked, so it cannot step out of an allowed folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio.errors import StudioError
from studio.models.access import operator_folders, upload_folder
from studio.validation import check_text


@dataclass(frozen=True)
class ImportFolders:
    """The operator's folders the web may import from (none: importing from the browser is off)."""

    folders: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "folders", operator_folders(self.folders, "--import-dir"))

    def check(self, typed: str) -> Path:
        """The path a browser typed, resolved, if it lies under an allowed folder; one line otherwise."""
        text = check_text(typed, "A path", 4096).strip()
        if not self.folders:
            raise StudioError(
                "Importing from the browser is off: start the studio with --import-dir DIR to allow files under DIR."
            )
        if not text:
            raise StudioError("Type the path of a file or folder to import.")
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = self.folders[0] / path
        resolved = path.resolve()
        if resolved == upload_folder() or resolved.is_relative_to(upload_folder()):
            raise StudioError("Files uploaded to the studio cannot be imported.")
        if not any(resolved == folder or resolved.is_relative_to(folder) for folder in self.folders):
            allowed = ", ".join(str(f) for f in self.folders)
            raise StudioError(f"{text[:80]!r} is not under a folder the studio imports from ({allowed}).")
        return resolved
