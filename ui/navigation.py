"""The dashboard's sidebar navigation. app.py lists its pages and registers them with
`st.navigation(position="hidden")` and draws the links itself (`client.showSidebarNavigation = false`), so the sidebar
is the same whatever the first request was: `/`, a page, or a share link such as `/History?run=<id>`."""

from __future__ import annotations

import streamlit as st

# Streamlit's built-in Material Symbols (they ship with Streamlit), never emoji: a system without an emoji font, such
# as a headless Chromium on Debian, draws emoji as empty boxes.
ICONS = {"app": ":material/science:", "Home": ":material/home:", "Compare": ":material/balance:",
         "Sweep": ":material/trending_up:", "Recommend": ":material/explore:", "History": ":material/history:",
         "Anatomy": ":material/layers:", "Backbones": ":material/view_module:",
         "Data": ":material/fact_check:"}


def icon_of(script: str) -> str | None:
    """The icon of a page file, by its title: 'pages/5_Anatomy.py' -> Anatomy's."""
    return ICONS.get(script.rsplit("/", 1)[-1].removesuffix(".py").split("_", 1)[-1])


def page_objects(home, page_files: list[tuple[str, str, str, str]]) -> dict[str, st.Page]:
    """Home (a function in app.py) and every page file (script, title, icon, url path), by title."""
    pages = {"Home": st.Page(home, title="Home", icon=ICONS["Home"], default=True)}
    for script, title, icon, url in page_files:
        pages[title] = st.Page(script, title=title, icon=icon, url_path=url)
    return pages


def sidebar_links(pages: dict[str, st.Page]) -> None:
    with st.sidebar:
        for page in pages.values():
            st.page_link(page, label=page.title, icon=page.icon)
        st.divider()


def through_app() -> None:
    """Call first in every page. On a fresh server whose first request is a deep link (`/History?run=<id>`),
    Streamlit's legacy multipage mode runs the page file by itself, without app.py: no navigation, and the automatic
    one lists file names. Leaving that mode (what `st.navigation` does when app.py runs) and rerunning sends the same
    request, page and query, through app.py."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
