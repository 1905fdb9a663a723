"""The Episodes tab's tools for episodes from anywhere: import what other harnesses recorded (from the
operator's folders only), score an episode under model A, tag and annotate steps, run a rubric judge
and check it against people's labels, failure aggregates and the side-by-side diff."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.components.browser_panel import BrowserPanel, count_line, episode_filter, hit_rows, rows
from agent_studio.components.errors import refused_into
from agent_studio.components.services import Services
from studio.errors import StudioError
from studio.jobs import JobCancelled
from studio.session import StudioSession
from studio.viz.find_html import aggregates_html, agreement_html, diff_html, marks_html, verdicts_html
from studio.viz.html import message_html, plural

#: Episodes one rubric run from the browser judges at most (the page's first).
RUBRIC_LIMIT = 20


@dataclass
class FindPanel:
    import_format: gr.Dropdown
    import_path: gr.Textbox
    import_button: gr.Button
    score: gr.Button
    tag: gr.Textbox
    tag_button: gr.Button
    note: gr.Textbox
    note_button: gr.Button
    marks: gr.HTML
    rubric_name: gr.Textbox
    rubric_question: gr.Textbox
    rubric_labels: gr.Textbox
    rubric_scope: gr.Radio
    judge_button: gr.Button
    human_label: gr.Textbox
    label_button: gr.Button
    validate_button: gr.Button
    verdicts: gr.HTML
    aggregates_button: gr.Button
    aggregates: gr.HTML
    diff_other: gr.Textbox
    diff_button: gr.Button
    diff: gr.HTML
    predictor: gr.Dropdown
    worm_button: gr.Button
    worm: gr.Plot
    message: gr.HTML


def build() -> FindPanel:
    from studio.importers.registry import importer_names

    message = gr.HTML(elem_id="as-find-message")
    with gr.Accordion("Import episodes recorded elsewhere", open=False, elem_id="as-import"):
        with gr.Row():
            import_format = gr.Dropdown(
                importer_names(), value="chat", label="Format", scale=1, elem_id="as-import-format"
            )
            import_path = gr.Textbox(
                label="File or folder (under the studio's --import-dir)", scale=3, elem_id="as-import-path"
            )
            import_button = gr.Button("Import", variant="primary", scale=1, elem_id="as-import-go")
    with gr.Accordion("Look inside, tag and annotate the chosen episode", open=True, elem_id="as-inside"):
        with gr.Row():
            score = gr.Button("Score it under model A (token colours)", elem_id="as-score-a")
            tag = gr.Textbox(label="Tag (on the step above)", scale=1, elem_id="as-tag")
            tag_button = gr.Button("Tag step", scale=1, elem_id="as-tag-go")
            note = gr.Textbox(label="Note (on the step above)", scale=2, elem_id="as-note")
            note_button = gr.Button("Add note", scale=1, elem_id="as-note-go")
        marks = gr.HTML(elem_id="as-marks")
    with gr.Accordion("Rubric judge (model A reads whole episodes)", open=False, elem_id="as-rubric"):
        with gr.Row():
            rubric_name = gr.Textbox(label="Rubric name", value="gives-up", scale=1, elem_id="as-rubric-name")
            rubric_question = gr.Textbox(
                label="Question",
                value="Does the agent give up before the task is done?",
                scale=3,
                elem_id="as-rubric-question",
            )
            rubric_labels = gr.Textbox(
                label="Labels (comma-separated)", value="yes,no", scale=1, elem_id="as-rubric-labels"
            )
        with gr.Row():
            rubric_scope = gr.Radio(
                ["the chosen episode", f"this page (first {RUBRIC_LIMIT})"],
                value="the chosen episode",
                label="Judge",
                scale=2,
            )
            judge_button = gr.Button("Run the judge", variant="primary", scale=1, elem_id="as-judge-go")
            human_label = gr.Textbox(label="Your label of the chosen episode", scale=1, elem_id="as-human-label")
            label_button = gr.Button("Label by hand", scale=1, elem_id="as-label-go")
            validate_button = gr.Button("Judge vs people", scale=1, elem_id="as-validate")
        verdicts = gr.HTML(elem_id="as-verdicts")
    with gr.Accordion("Failure analysis and diff", open=False, elem_id="as-analysis"):
        with gr.Row():
            aggregates_button = gr.Button("Aggregate the filtered episodes", scale=1, elem_id="as-aggregate")
            diff_other = gr.Textbox(label="Diff the chosen episode against episode", scale=2, elem_id="as-diff-other")
            diff_button = gr.Button("Diff", scale=1, elem_id="as-diff-go")
        aggregates = gr.HTML(elem_id="as-aggregates")
        diff = gr.HTML(elem_id="as-diff")
    with gr.Accordion("Predicted against recorded actions (robot episodes)", open=False, elem_id="as-worm-box"):
        with gr.Row():
            # Only built-in baselines here: a policy's own code is named on the command line (`predict`), never by a client.
            predictor = gr.Dropdown(
                ["hold", "linear"], value="hold", label="Predictor", scale=1, elem_id="as-predictor"
            )
            worm_button = gr.Button("Worm plot of the chosen episode", scale=1, elem_id="as-worm-go")
        worm = gr.Plot(elem_id="as-worm")
    return FindPanel(
        import_format, import_path, import_button, score, tag, tag_button, note, note_button, marks,
        rubric_name, rubric_question, rubric_labels, rubric_scope, judge_button, human_label, label_button,
        validate_button, verdicts, aggregates_button, aggregates, diff_other, diff_button, diff, predictor,
        worm_button, worm, message,
    )  # fmt: skip


def _chosen(browser_id: str) -> str:
    episode_id = (browser_id or "").strip()
    if not episode_id:
        raise StudioError("Pick an episode first: click a row, or type its id.")
    return episode_id[:64]


def _step(value: Any) -> int | None:
    try:
        return None if value is None else max(0, int(value))
    except (TypeError, ValueError):
        raise StudioError("The step is a whole number.") from None


def _user(request: gr.Request | None) -> str:
    """Who acts: the logged-in user, else ``browser``."""
    name = getattr(request, "username", None) if request is not None else None
    return str(name)[:100] if name else "browser"


def wire(panel: FindPanel, browser: BrowserPanel, state: gr.State, services: Services) -> None:
    store = services.store
    private = dict(api_visibility="private", concurrency_limit=None)
    heavy = dict(api_visibility="private")

    def needs_store() -> Any:
        if store is None:
            raise StudioError("No database: start the studio with --db to keep and find episodes.")
        return store

    def refreshed(*filters: Any) -> dict[Any, Any]:
        return {
            browser.table: rows(store, *filters),
            browser.count: count_line(store, *filters),
            browser.hits: hit_rows(store, *filters),
        }

    def search(*filters: Any) -> dict[Any, Any]:  # a filter that makes no sense says so in the count line
        return {**refreshed(*filters), panel.message: ""}

    listing = [browser.table, browser.count, browser.hits, panel.message]
    browser.refresh.click(search, browser.filters, listing, **private)
    browser.words.submit(search, browser.filters, listing, **private)

    def pick_hit(event: gr.SelectData) -> tuple[str, Any]:
        row = event.row_value if event is not None else None
        if not row:
            return gr.skip(), gr.skip()
        return str(row[0]), (row[1] if row[1] not in ("", None) else 0)

    browser.hits.select(pick_hit, None, [browser.episode_id, browser.fork_at], **private)

    def marks(episode_id: str) -> str:
        if store is None or not (episode_id or "").strip():
            return ""
        try:
            return marks_html(
                store.search.tags_of(episode_id.strip()), store.search.notes_of(episode_id.strip()), episode_id.strip()
            )
        except StudioError:
            return ""

    browser.episode_id.change(marks, [browser.episode_id], [panel.marks], **private)

    @refused_into(panel.message)
    def do_import(fmt: str, path: str, *filters: Any, progress=gr.Progress()) -> dict[Any, Any]:
        from studio.importers.registry import read_episodes

        where = services.imports.check(path)
        kept = needs_store()
        with services.jobs.run("import", f"{fmt} from {where.name}") as job:

            def episodes() -> Any:  # cancelled from the Jobs tab: the transaction is rolled back, nothing kept
                for episode in read_episodes(fmt, where):
                    if job.cancelled:
                        raise JobCancelled("Cancelled from the Jobs tab: nothing was imported.")
                    yield episode

            def tick(done: int) -> None:
                progress(None, desc=f"{done} episodes")
                job.progress(done, None, f"{done} episodes read")

            counts = kept.episodes.save_stream(episodes(), progress=tick)
        note = (
            f"Imported {plural(counts['stored'], 'episode')} ({plural(counts['steps'], 'step')}) from {fmt}; "
            f"{counts['unchanged']} already stored unchanged."
        )
        return {**refreshed(*filters), panel.message: message_html(note, "success")}

    panel.import_button.click(do_import, [panel.import_format, panel.import_path, *browser.filters], listing, **heavy)

    @refused_into(panel.message)
    def score(session: StudioSession, episode_id: str, progress=gr.Progress()) -> dict[Any, Any]:
        from studio.evaluation.crossscore import check_scorable, cross_score

        kept = needs_store()
        episode = kept.episodes.get(_chosen(episode_id))
        check_scorable(episode)
        backend = session.models.get("A")
        if backend is None:
            raise StudioError("Load model A in the Models tab: it scores the episode's outputs.")
        with services.jobs.run("cross-score", f"episode {episode.id[:8]} under {backend.card.id}") as job:

            def tick(done: int, total: int) -> None:
                progress(done / total, desc=f"{done} of {total} steps")
                job.progress(done, total, f"{done} of {total} steps")

            scores = cross_score(episode, backend, should_stop=lambda: job.cancelled, progress=tick)
            if job.cancelled:
                raise JobCancelled("Cancelled from the Jobs tab: no scores were kept.")
        kept.cross_scores.save(scores)
        note = f"Scored {plural(len(scores), 'step')} under {backend.card.id}: open the episode to see its tokens coloured."
        return {panel.message: message_html(note, "success")}

    panel.score.click(score, [state, browser.episode_id], [panel.message], **heavy)

    @refused_into(panel.message)
    def add_tag(episode_id: str, step: Any, tag: str, request: gr.Request) -> dict[Any, Any]:
        chosen = _chosen(episode_id)
        added = needs_store().search.tag(chosen, tag, _user(request), _step(step))
        note = f"Tagged step {_step(step)} {tag.strip().lower()!s}." if added else "That step already has this tag."
        return {
            panel.message: message_html(note, "success" if added else "info"),
            panel.marks: marks(chosen),
            panel.tag: "",
        }

    panel.tag_button.click(
        add_tag, [browser.episode_id, browser.fork_at, panel.tag], [panel.message, panel.marks, panel.tag], **private
    )

    @refused_into(panel.message)
    def add_note(episode_id: str, step: Any, note: str, request: gr.Request) -> dict[Any, Any]:
        chosen = _chosen(episode_id)
        needs_store().search.note(chosen, note, _user(request), _step(step))
        return {panel.message: message_html("Note kept.", "success"), panel.marks: marks(chosen), panel.note: ""}

    panel.note_button.click(
        add_note, [browser.episode_id, browser.fork_at, panel.note], [panel.message, panel.marks, panel.note], **private
    )

    def rubric(name: str, question: str, labels: str) -> Any:
        from studio.evaluation.rubric import Rubric

        return Rubric((name or "").strip(), question or "", tuple(x for x in (labels or "").split(",") if x.strip()))

    @refused_into(panel.message)
    def judge(
        session: StudioSession,
        name: str,
        question: str,
        labels: str,
        scope: str,
        episode_id: str,
        *filters: Any,
        progress=gr.Progress(),
    ) -> dict[Any, Any]:
        from studio.evaluation.rubric import judge_episode

        kept = needs_store()
        asked = rubric(name, question, labels)
        backend = session.models.get("A")
        if backend is None:
            raise StudioError("Load model A in the Models tab: it is the judge.")
        if scope.startswith("the chosen"):
            ids = [_chosen(episode_id)]
        else:
            where = episode_filter(*filters)
            ids = [row.id for row in kept.search.page(where, limit=RUBRIC_LIMIT)]
        verdicts = []
        with services.jobs.run("rubric", f"{asked.name} on {plural(len(ids), 'episode')}") as job:
            for done, episode_id in enumerate(ids, 1):
                if job.cancelled:
                    break
                verdict = judge_episode(backend, asked, kept.episodes.get(episode_id))
                kept.rubrics.save(verdict)
                verdicts.append(verdict)
                progress(done / len(ids), desc=f"{done} of {len(ids)} episodes")
                job.progress(done, len(ids), f"{done} of {len(ids)} episodes")
        note = f"{backend.card.id} labelled {plural(len(verdicts), 'episode')} under {asked.name}; its citations open the steps."
        return {panel.message: message_html(note, "success"), panel.verdicts: verdicts_html(verdicts)}

    panel.judge_button.click(
        judge,
        [
            state,
            panel.rubric_name,
            panel.rubric_question,
            panel.rubric_labels,
            panel.rubric_scope,
            browser.episode_id,
            *browser.filters,
        ],
        [panel.message, panel.verdicts],
        **heavy,
    )

    @refused_into(panel.message)
    def label(
        name: str, question: str, labels: str, episode_id: str, value: str, request: gr.Request
    ) -> dict[Any, Any]:
        asked = rubric(name, question, labels)
        chosen = _chosen(episode_id)
        needs_store().rubrics.label_by_hand(chosen, asked.name, (value or "").strip(), _user(request), asked.labels)
        return {panel.message: message_html(f"Your label {value.strip()!s} is kept for {asked.name}.", "success")}

    rubric_inputs = [panel.rubric_name, panel.rubric_question, panel.rubric_labels]
    panel.label_button.click(label, [*rubric_inputs, browser.episode_id, panel.human_label], [panel.message], **private)

    @refused_into(panel.message)
    def validate(session: StudioSession, name: str, question: str, labels: str, request: gr.Request) -> dict[Any, Any]:
        from studio.evaluation.rubric import agreement

        asked = rubric(name, question, labels)
        backend = session.models.get("A")
        if backend is None:
            raise StudioError("Load model A in the Models tab: its labels are the ones validated.")
        kept = needs_store()
        person = _user(request)
        report = agreement(
            kept.rubrics.labels_by_episode(asked.name, backend.card.id),
            kept.rubrics.labels_by_episode(asked.name, f"human:{person}"),
            asked.labels,
        )
        return {panel.message: "", panel.verdicts: agreement_html(backend.card.id, person, report)}

    panel.validate_button.click(validate, [state, *rubric_inputs], [panel.message, panel.verdicts], **private)

    @refused_into(panel.message)
    def aggregate(*filters: Any) -> dict[Any, Any]:
        from agent_studio.storage.aggregates import aggregates

        kept = needs_store()
        return {panel.message: "", panel.aggregates: aggregates_html(aggregates(kept.db, episode_filter(*filters)))}

    panel.aggregates_button.click(aggregate, browser.filters, [panel.message, panel.aggregates], **heavy)

    @refused_into(panel.message)
    def diff(episode_id: str, other: str) -> dict[Any, Any]:
        from studio.evaluation.trajectory_diff import diff_episodes

        kept = needs_store()
        left = kept.episodes.get(_chosen(episode_id))
        right = kept.episodes.get(_chosen(other))
        return {panel.message: "", panel.diff: diff_html(diff_episodes(left, right))}

    panel.diff_button.click(diff, [browser.episode_id, panel.diff_other], [panel.message, panel.diff], **private)

    @refused_into(panel.message)
    def worm(episode_id: str, predictor: str) -> dict[Any, Any]:
        from studio.evaluation.predicted import BASELINES, predict_actions
        from studio.viz.worm import worm_figure

        if predictor not in BASELINES:
            raise StudioError(f"Pick a predictor: {', '.join(BASELINES)}.")
        episode = needs_store().episodes.get(_chosen(episode_id))
        prediction = predict_actions(episode, BASELINES[predictor])
        note = f"{predictor}: mean error {prediction.error.mean():.4g} over {plural(len(prediction.error), 'step')}."
        figure = worm_figure(prediction, title=episode.instruction, fps=(episode.env_options or {}).get("fps"))
        return {panel.message: message_html(note, "info"), panel.worm: figure}

    panel.worm_button.click(worm, [browser.episode_id, panel.predictor], [panel.message, panel.worm], **private)
