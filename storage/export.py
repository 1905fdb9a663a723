"""Exports in the shapes TRL trains on, and full episodes: a registry of formats.

Each format is a name, a function that yields its records, and a line of documentation
(:func:`register_export`; an installed package can add one through the ``agent_studio.exports``
entry point group). The CLI's ``--format``, the Overview's downloads and the registries reference page read
the registry. The built-in formats (one JSON object per line):

- ``dpo``: preference, explicit prompt, conversational. ``prompt`` is the chat up to the
  judged step (the prompt the model saw, when a model took the step); ``chosen`` and
  ``rejected`` are the assistant turns (for trajectory pairs, the rest of each trajectory
  as alternating assistant and observation turns).
- ``reward``: preference, implicit prompt: ``chosen`` and ``rejected`` are whole conversations.
- ``kto``: unpaired preference: ``prompt``, ``completion``, ``label`` (bool). From judged
  pairs (chosen side True, other side False; both-bad gives two False rows) and from step
  labels (good/correct True; bad/redundant/erroneous False; neutral left out).
- ``prm``: stepwise supervision (TRL's standard format): ``prompt`` (task and first
  observation), ``completions`` (each step: the observation it saw, then its output) and
  ``labels`` (bool per step, the annotators' majority; neutral counts as not an error),
  for the labelled steps from the start of each episode up to the first unlabelled one.
- ``episodes``: every stored episode in the core's trace format.

The pieces: ``storage/export_data.py`` (queries, caches, whose judgements count, :class:`ExportRow`),
``storage/export_rows.py`` (the built-in formats' rows), ``studio/agents/conversation.py`` (the chat
around a step); this module is the registry and the writing.

Rows also say where they came from (``pair_id``; ``source`` for kto; ``episode_id`` for
prm) and, for dpo and reward, what the annotators wrote (``rationales``, verbatim): TRL
ignores columns it does not use.

Pairs are judged by the majority of their annotators; ties, both-bad judgements and pairs
without a majority are left out of ``dpo`` and ``reward`` and counted in the summary.
Where the judged observation has a frame, rows get an ``images`` column: PNG files next to
the output (``<name>_images/``), referenced by relative path (as TRL's vision trainers expect
one image per row: the observation's frame).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_studio.storage.export_data import (  # noqa: F401 - the export API's names, importable from here
    IMAGE_MODES,
    PROMPT_MODES,
    AnnotatorSelection,
    ExportRow,
    ExportSummary,
    ImageWriter,
    dumps,
)
from agent_studio.storage.export_rows import episode_records, kto_records, pairwise_rows, prm_records, sft_records
from agent_studio.storage.store import Store
from studio.errors import StudioError
from studio.plugins import first_doc_line, load_entry_points

RowSource = Callable[[Store, ExportSummary, ImageWriter], Iterable[ExportRow | dict[str, Any]]]


@dataclass(frozen=True)
class ExportFormat:
    """A registered export format: its name, what builds its rows, and what it is for."""

    name: str
    rows: RowSource
    """``rows(store, summary, images)``: the records (dicts or :class:`ExportRow`); counts what it
    leaves out in ``summary.left_out`` and writes frames with ``images(png)``."""
    summary: str
    """One line: the record shape and what trains on it (CLI help, the Overview, the docs)."""


#: Formats by name, in the order they are offered; filled at import and by :func:`register_export`.
EXPORT_FORMATS: dict[str, ExportFormat] = {}


#: Entry point group other packages register formats under (``name = "pkg.module:rows"``).
ENTRY_POINT_GROUP = "agent_studio.exports"


_plugins_loaded: list[bool] = []


def register_export(name: str, rows: RowSource, summary: str, replace: bool = False) -> ExportFormat:
    """Offer ``name`` in ``agent-studio export --format``, the Overview's downloads and the API."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"Not a usable format name: {name!r} (letters, digits, - and _).")
    if name in EXPORT_FORMATS and not replace and EXPORT_FORMATS[name].rows is not rows:
        raise ValueError(f"An export format {name!r} is already registered (pass replace=True to replace it).")
    EXPORT_FORMATS[name] = ExportFormat(name, rows, summary)
    return EXPORT_FORMATS[name]


def export_formats() -> list[ExportFormat]:
    """Every registered format (built-ins first, then installed packages' entry points)."""
    if not _plugins_loaded:
        _plugins_loaded.append(True)
        load_entry_points(ENTRY_POINT_GROUP, _register_plugin)
    return list(EXPORT_FORMATS.values())


def _register_plugin(point: Any, target: Any) -> None:
    """An entry point names a row function (``name = "pkg.module:rows"``) or a whole :class:`ExportFormat`."""
    if isinstance(target, ExportFormat):
        EXPORT_FORMATS.setdefault(target.name, target)
    elif point.name not in EXPORT_FORMATS:
        register_export(point.name, target, first_doc_line(target, point.name))


def format_names() -> list[str]:
    return [fmt.name for fmt in export_formats()]


def export_rows(store: Store, format: str, summary: ExportSummary, images: ImageWriter) -> Iterator[ExportRow]:
    """The rows of ``format``, each as an :class:`ExportRow` (its line and its record agree)."""
    registered = {fmt.name: fmt for fmt in export_formats()}.get(format)
    if registered is None:
        raise StudioError(f"Unknown export format {str(format)[:40]!r}: use one of {', '.join(format_names())}.")
    for row in registered.rows(store, summary, images):
        yield row if isinstance(row, ExportRow) else ExportRow.of(row)


#: The formats made of judged pairs, which a campaign's export can be limited to.
CAMPAIGN_FORMATS = ("dpo", "reward", "kto")


def export(
    store: Store,
    format: str,
    out: str | Path,
    hf_dataset: str | Path | None = None,
    images: str = "none",
    prompt: str = "compact",
    annotators: str = "default",
    campaign: str | None = None,
) -> ExportSummary:
    """Write ``format`` records to the JSONL file ``out`` (and a ``datasets`` folder when asked).

    ``images``: ``none`` (text models: no ``images`` column, which TRL's trainers would take for a
    vision dataset) or ``paths`` (PNG files, absolute paths). ``prompt``: ``compact`` (no few-shot
    example: rows fit TRL's default lengths) or ``full`` (as the model saw them). ``annotators``:
    whose judgements and labels count (:class:`AnnotatorSelection`; written in the summary). ``campaign``:
    only that campaign's pairs (formats of judged pairs: dpo, reward, kto). Wherever an adjudicator
    decided a pair, its row follows the decision (``summary.adjudicated`` counts them)."""
    if format not in format_names():
        raise StudioError(f"Unknown export format {str(format)[:40]!r}: use one of {', '.join(format_names())}.")
    path = Path(out).expanduser()
    if path.is_dir():
        raise StudioError(
            f"The export target {path} is a folder; give a file name such as {path / (format + '.jsonl')}."
        )
    datasets = _datasets_module() if hf_dataset else None
    selection = AnnotatorSelection(annotators)
    summary = ExportSummary(format=format, out=str(path), annotators=selection.describe(), selection=selection)
    if campaign:
        if format not in CAMPAIGN_FORMATS:
            raise StudioError(f"--campaign exports judged pairs: use --format {', '.join(CAMPAIGN_FORMATS)}.")
        summary.campaign, summary.pairs = campaign, frozenset(store.campaigns.pair_ids(campaign))
    writer = ImageWriter(path, images=images, prompt=prompt)
    rows: list[dict[str, Any]] | None = [] if datasets else None
    temporary = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb", buffering=1 << 20) as handle:
            for row in export_rows(store, format, summary, writer):
                handle.write(row.line() + b"\n")
                summary.records += 1
                if rows is not None:
                    rows.append(row.record())
        temporary.replace(path)  # a failed export never leaves a half-written file under the real name
    except OSError as exc:
        _remove_quietly(temporary)
        raise StudioError(f"Cannot write {path}: {exc.strerror or exc}.") from None
    except BaseException:
        _remove_quietly(temporary)
        raise
    if datasets is not None and rows is not None:
        summary.hf_dataset = str(_save_hf_dataset(datasets, rows, Path(hf_dataset).expanduser(), writer.folder))
    return summary


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _datasets_module() -> Any:
    try:
        import datasets
    except ImportError:
        raise StudioError("--hf-dataset needs the `datasets` library: pip install datasets") from None
    return datasets


def _save_hf_dataset(datasets: Any, rows: list[dict[str, Any]], folder: Path, image_folder: Path) -> Path:
    """The same records as a Hugging Face ``datasets`` folder (``save_to_disk``), images embedded."""
    if any("images" in r for r in rows):
        for row in rows:
            row["images"] = [
                {"bytes": (image_folder / Path(p).name).read_bytes(), "path": None} for p in row.get("images", [])
            ]
    datasets.disable_progress_bars()
    try:
        dataset = datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict({})
        if "images" in dataset.column_names:
            dataset = dataset.cast_column("images", datasets.List(datasets.Image()))
        dataset.save_to_disk(str(folder))
    except Exception as exc:  # noqa: BLE001 - pyarrow and datasets raise many kinds; the JSONL is written
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudioError(f"Wrote the JSONL, but could not build the datasets folder {folder}: {first}") from None
    return folder


register_export(
    "dpo",
    lambda store, summary, images: pairwise_rows(store, summary, images, implicit_prompt=False),
    "preference, explicit prompt (prompt, chosen, rejected), conversational: TRL's DPOTrainer",
)
register_export(
    "reward",
    lambda store, summary, images: pairwise_rows(store, summary, images, implicit_prompt=True),
    "preference, implicit prompt (chosen, rejected whole conversations): TRL's RewardTrainer",
)
register_export(
    "prm",
    lambda store, summary, images: prm_records(store, summary, images),
    "stepwise supervision (prompt, completions, labels per step): TRL's PRMTrainer (TRL 1.9)",
)
register_export(
    "kto",
    lambda store, summary, images: kto_records(store, summary, images),
    "unpaired preference (prompt, completion, label) from judged pairs and step labels: TRL's KTOTrainer",
)
register_export(
    "sft",
    lambda store, summary, images: sft_records(store, summary, images),
    "conversations (messages) of the successful episodes: TRL's SFTTrainer",
)
register_export(
    "episodes",
    lambda store, summary, images: episode_records(store, summary),
    "every stored episode in the trace format (agent-studio import reads it back)",
)
