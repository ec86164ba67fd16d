"""Build hook: the wheel carries the dashboard's entry script as tlcore_dashboard/app.py, beside the pages/, ui/ and
.streamlit/ that pyproject.toml's `sources` put there. Only the standard wheel: an editable install runs the
checkout's app.py in place, so no copy of it lands in site-packages."""

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class DashboardScript(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        if version == "standard":
            build_data["force_include"]["app.py"] = "tlcore_dashboard/app.py"
