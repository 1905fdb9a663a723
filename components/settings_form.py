"""The settings widgets, made from the schema (:mod:`studio.settings`), and read back by name.

A form maps field names to widgets; handlers get the widgets' values in the form's own order
and turn them into :class:`~studio.settings.EpisodeSettings` with :meth:`SettingsForm.settings`
(every value checked by its Setting) — nobody indexes a list of widgets by position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from studio.settings import EpisodeSettings, Setting, default_of, schema, settings_from


@dataclass
class SettingsForm:
    """Widgets by setting name (in schema order) for one settings class."""

    cls: type = EpisodeSettings
    widgets: dict[str, gr.components.Component] = field(default_factory=dict)

    def __getitem__(self, name: str) -> gr.components.Component:
        return self.widgets[name]

    @property
    def components(self) -> list[gr.components.Component]:
        """The widgets, in the order handlers receive their values."""
        return list(self.widgets.values())

    def named(self, *values: Any) -> dict[str, Any]:
        """Widget values (in :attr:`components` order) by setting name."""
        return dict(zip(self.widgets, values, strict=True))

    def settings(self, *values: Any) -> EpisodeSettings:
        """The settings the widgets show: every value checked (one line for a bad one)."""
        return settings_from(self.named(*values), self.cls)

    def build(self, group: str, per_row: int = 2) -> None:
        """The generated widgets of ``group`` (in rows of ``per_row``), where this is called in the layout."""
        generated = [
            (spec, setting)
            for spec, setting in schema(self.cls)
            if setting.group == group and not setting.custom and spec.name not in self.widgets
        ]
        for start in range(0, len(generated), per_row):
            with gr.Row():
                for spec, setting in generated[start : start + per_row]:
                    self.widgets[spec.name] = widget_for(spec.name, setting, default_of(spec))

    def build_one(self, name: str, **layout: Any) -> gr.components.Component:
        """One generated widget, placed by the panel (``scale``, ``min_width``...)."""
        spec, setting = next((spec, setting) for spec, setting in schema(self.cls) if spec.name == name)
        self.widgets[name] = widget_for(name, setting, default_of(spec), **layout)
        return self.widgets[name]

    def add(self, name: str, widget: gr.components.Component) -> gr.components.Component:
        """A widget a panel draws itself (a ``custom`` setting)."""
        self.widgets[name] = widget
        return widget

    def ordered(self) -> SettingsForm:
        """The same widgets in schema order (panels may draw them in any order)."""
        order = [spec.name for spec, _setting in schema(self.cls)]
        missing = [name for name in order if name not in self.widgets]
        if missing:
            raise ValueError(f"the form has no widget for {', '.join(missing)}")
        self.widgets = {name: self.widgets[name] for name in order}
        return self


def widget_value(setting: Setting, value: Any) -> Any:
    """A setting's value as its widget shows it (None as 0 where 0 stands for it)."""
    return 0 if value is None and setting.zero_means else value


def widget_for(name: str, setting: Setting, default: Any, **layout: Any) -> gr.components.Component:
    """The widget a setting asks for, with its label, range and help."""
    common = dict(label=setting.label, elem_id="as-" + name.replace("_", "-"), **layout)
    value = widget_value(setting, default)
    if setting.widget == "checkbox":
        return gr.Checkbox(value=value, **common)
    if setting.widget == "radio":
        return gr.Radio(list(setting.choices or ()), value=value, min_width=170, **common)
    if setting.widget == "dropdown":
        return gr.Dropdown(
            list(setting.choices or ()), value=value, allow_custom_value=setting.choices is None, **common
        )
    if setting.widget == "slider":
        high = setting.widget_maximum if setting.widget_maximum is not None else setting.maximum
        low = next(v for v in (setting.widget_minimum, setting.minimum, 0) if v is not None)
        return gr.Slider(low, high, value=value, step=setting.step or 1, **common)
    if setting.widget in ("text", "json"):
        return gr.Textbox(value=value if isinstance(value, str) else "{}", lines=1, **common)
    return gr.Number(value=value, precision=None if setting.real else 0, minimum=setting.minimum, **common)
